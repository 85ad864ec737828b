"""A pod that cannot start is never silent: past ASCEND_MLOPS_POD_START_TIMEOUT its resource names it, for how
long and the kubelet's reason (from the pod's status, else its Warning Events), and posts a Warning Event.

The tests play the kubelet: a pod bound to a node (PodScheduled=True) that stays Pending, and, where a real
kubelet would, a Warning Event about it. No watch event comes after that: the operator's requeue at the
deadline is what makes the condition appear.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ascend_mlops import status as st
from ascend_mlops.api import constants
from ascend_mlops.api.constants import Reason
from ascend_mlops.settings import ENV_POD_START_TIMEOUT
from tests.integration.conftest import (
    Backend,
    Cluster,
    Operator,
    eventually,
    operator_running,
    running,
)
from tests.integration.test_inference import converted, server_pod, service, set_deployment_status
from tests.integration.test_training import job, wait_pod

TIMEOUT = 3  # seconds, instead of the default 5 minutes
MOUNT_ERROR = (
    'MountVolume.SetUp failed for volume "dataset-storage" : hostPath type check failed: /data/flowers is not a directory'
)


@pytest.fixture
async def operator_quick_to_tell(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Operator]:
    monkeypatch.setenv(ENV_POD_START_TIMEOUT, str(TIMEOUT))
    async with operator_running(backend, strict_stop=True) as op:
        yield op


async def scheduled_but_waiting(cluster: Cluster, name: str, container: str, waiting: dict[str, str]) -> None:
    """What the scheduler and a kubelet that cannot start the pod report: bound to a node, still Pending."""
    await cluster.set_pod_status(name, {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": st.timestamp(st.now())}],
        "containerStatuses": [{"name": container, "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"waiting": waiting}}],
    })


async def kubelet_warning(cluster: Cluster, pod: dict[str, Any], reason: str, message: str) -> None:
    """A Warning Event as a kubelet posts it about a pod (core/v1, legacy fields)."""
    meta, now = pod["metadata"], st.timestamp(st.now())
    await cluster.client.create("v1", "events", cluster.namespace, {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{time.monotonic_ns():x}", "namespace": cluster.namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": cluster.namespace,
                           "uid": meta["uid"]},
        "reason": reason, "message": message, "type": "Warning",
        "source": {"component": "kubelet", "host": "node-1"}, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "kubelet", "reportingInstance": "node-1",
    })


async def warning_about(cluster: Cluster, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in await cluster.events_for(name)
            if e["type"] == "Warning" and e["reason"] == reason and e["involvedObject"]["kind"] != "Pod"]


async def test_a_job_pod_stuck_on_a_volume_names_the_kubelets_event(cluster: Cluster, operator_quick_to_tell: Operator) -> None:
    kind = constants.TRAINING_JOB
    await cluster.create(job())
    pod = await wait_pod(cluster, "flowers-worker-0")
    # A real kubelet: the container only "ContainerCreating" in the status, the reason in an Event.
    await scheduled_but_waiting(cluster, "flowers-worker-0", "trainer", {"reason": "ContainerCreating"})
    await kubelet_warning(cluster, pod, "FailedMount", MOUNT_ERROR)
    started = time.monotonic()
    before = await cluster.wait_condition(kind, "flowers", "Succeeded", "Unknown", Reason.PENDING)
    assert "waiting for 1 pod(s)" in before["message"]

    stuck = await cluster.wait_condition(kind, "flowers", "Succeeded", "Unknown", Reason.POD_START_TIMEOUT, timeout=TIMEOUT + 12)
    waited = time.monotonic() - started
    assert stuck["message"].startswith("pod flowers-worker-0 has not started ")
    assert f"after it was scheduled: FailedMount: {MOUNT_ERROR}" in stuck["message"]
    assert waited >= TIMEOUT - 1.5, f"reported after {waited:.1f}s, before the {TIMEOUT}s timeout"
    running_cond = await cluster.condition(kind, "flowers", "Running")
    assert running_cond is not None and (running_cond["status"], running_cond["reason"]) == ("False", Reason.POD_START_TIMEOUT)
    reconciling = await cluster.condition(kind, "flowers", "Reconciling")
    assert reconciling is not None and reconciling["reason"] == Reason.POD_START_TIMEOUT
    warnings = await eventually(lambda: warning_about(cluster, "flowers", Reason.POD_START_TIMEOUT),
                                 what="a Warning Event on the TrainingJob")
    assert len(warnings) == 1, [w["message"] for w in warnings]
    [warning] = warnings
    assert "pod flowers-worker-0 has not started" in warning["message"] and "FailedMount" in warning["message"]

    # The volume mounts after all: the job runs, and the reason goes.
    await cluster.set_pod_status("flowers-worker-0", running())
    await cluster.wait_condition(kind, "flowers", "Running", "True", Reason.RUNNING)


async def test_a_server_pod_without_its_image_turns_ready_false_with_the_pods_reason(
    cluster: Cluster, operator_quick_to_tell: Operator,
) -> None:
    kind, pod_name = constants.INFERENCE_SERVICE, "flowers-predictor-abc12"
    await converted(cluster)
    await cluster.create(service())
    await eventually(lambda: cluster.client.get("apps/v1", "deployments", cluster.namespace, "flowers-predictor"),
                     what="deployment")
    await set_deployment_status(cluster, ready=0)
    await server_pod(cluster, pod_name, {"ready": False, "restartCount": 0}, phase="Pending")
    never = 'Container image "localhost/ascend-mlops/server:0.1.0" is not present with pull policy of Never'
    # Here the reason is in the pod's status: what it is called at once, then that it has not started.
    await scheduled_but_waiting(cluster, pod_name, "server", {"reason": "ErrImageNeverPull", "message": never})
    await cluster.wait_condition(kind, "flowers", "Ready", "False", Reason.IMAGE_PULL_FAILED)
    stuck = await cluster.wait_condition(kind, "flowers", "Ready", "False", Reason.POD_START_TIMEOUT, timeout=TIMEOUT + 12)
    assert stuck["message"].startswith(f"pod {pod_name} has not started ")
    assert stuck["message"].endswith(f"after it was scheduled: ErrImageNeverPull: {never}")
    predictor = await cluster.condition(kind, "flowers", "PredictorReady")
    assert predictor is not None and predictor["reason"] == Reason.POD_START_TIMEOUT
    warnings = await eventually(lambda: warning_about(cluster, "flowers", Reason.POD_START_TIMEOUT),
                                 what="a Warning Event on the InferenceService")
    assert len(warnings) == 1, [w["message"] for w in warnings]
    [warning] = warnings
    assert warning["message"].startswith(f"Ready=False: pod {pod_name} has not started")
