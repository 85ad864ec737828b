"""TrainingJob against the API: pods, retries, permanent errors, deadline, restart, invalid input."""

from __future__ import annotations

import json
from typing import Any

from ascend_mlops.api import constants, contract
from tests.integration.conftest import Backend, Cluster, Operator, eventually, running, terminated

KIND = constants.TRAINING_JOB


def job(name: str = "flowers", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "algorithm": {"name": "resnet_v1_50", "hyperparameters": {"epochs": 2}},
        "dataset": {"uri": "pvc://data/datasets/flowers"},
        "output": {"uri": "pvc://data/runs/flowers"},
    }
    body.update(spec)
    return {"apiVersion": constants.API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}


SUMMARY = {
    contract.SUMMARY_VERSION: "V001",
    contract.SUMMARY_ARTIFACTS: {
        "frozenGraph": "V001/frozen_graph",
        "savedModel": "V001/saved_model",
        "labels": "V001/labels.txt",
        "metrics": "V001/metrics.json",
        "modelPackage": "V001/model",
    },
    contract.SUMMARY_METRICS: {"accuracy": 0.91, "loss": 0.3, "epochs": 2},
}


async def pod_names(cluster: Cluster, owner: str = "flowers") -> list[str]:
    pods = await cluster.pods(**{constants.LABEL_OWNER_NAME: owner, constants.LABEL_OWNER_KIND: KIND})
    return sorted(p["metadata"]["name"] for p in pods)


async def wait_pod(cluster: Cluster, name: str) -> dict[str, Any]:
    return await eventually(lambda: cluster.pod(name), what=f"pod {name}")


async def test_pod_spec_status_and_success(cluster: Cluster, operator: Operator) -> None:
    created = await cluster.create(job(seed=1))
    pod = await wait_pod(cluster, "flowers-worker-0")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["ascend-mlops"]
    assert container["args"] == contract.train_args(
        algorithm="resnet_v1_50",
        data=f"{contract.MOUNT_DATASET}/datasets/flowers",
        output=f"{contract.MOUNT_OUTPUT}/runs/flowers",
        train_ratio=0.8,  # the CRD's default, applied by the API server
        hyperparameters={"epochs": 2},
        seed=1,
    )
    [owner_ref] = pod["metadata"]["ownerReferences"]
    assert owner_ref["uid"] == created["metadata"]["uid"] and owner_ref["controller"] is True
    assert pod["spec"]["restartPolicy"] == "Never"

    pending = await cluster.wait_condition(KIND, "flowers", "Succeeded", "Unknown", "Pending")
    assert "waiting for 1 pod(s)" in pending["message"]

    await cluster.set_pod_status("flowers-worker-0", running())
    await cluster.wait_condition(KIND, "flowers", "Running", "True", "Running")
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None
    assert obj["status"]["phase"] == "Running"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert {"Reconciling", "Stalled"} <= {c["type"] for c in obj["status"]["conditions"]}

    await cluster.set_pod_status("flowers-worker-0", terminated(0, json.dumps(SUMMARY)))
    done = await cluster.wait_condition(KIND, "flowers", "Succeeded", "True", "Succeeded")
    assert "V001" in done["message"] and "0.91" in done["message"]
    status = (await cluster.get_cr(KIND, "flowers"))["status"]  # type: ignore[index]
    assert status["phase"] == "Succeeded"
    assert status["outputVersion"] == "V001"
    assert status["artifacts"] == {
        "frozenGraph": "pvc://data/runs/flowers/V001/frozen_graph",
        "savedModel": "pvc://data/runs/flowers/V001/saved_model",
        "labels": "pvc://data/runs/flowers/V001/labels.txt",
        "metrics": "pvc://data/runs/flowers/V001/metrics.json",
        "modelPackage": "pvc://data/runs/flowers/V001/model",
    }
    assert status["metrics"] == {"accuracy": 0.91, "loss": 0.3, "epochs": 2}
    assert status["completionTime"] and status["startTime"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    reconciling = next(c for c in status["conditions"] if c["type"] == "Reconciling")
    assert stalled["status"] == reconciling["status"] == "False"
    # A Normal event for the transition, posted on the TrainingJob.
    events = await eventually(lambda: cluster.events_for("flowers"), what="events")
    assert any(e["reason"] == "Succeeded" and e["type"] == "Normal" for e in events) or await eventually(
        lambda: _has_event(cluster, "flowers", "Succeeded"), what="Succeeded event"
    )
    # The succeeded pod stays (cleanPodPolicy Running deletes only running ones).
    assert await pod_names(cluster) == ["flowers-worker-0"]


async def _has_event(cluster: Cluster, name: str, reason: str) -> bool:
    return any(e["reason"] == reason for e in await cluster.events_for(name))


async def test_failed_pod_is_retried_up_to_backoff_limit(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job(backoffLimit=1))
    await wait_pod(cluster, "flowers-worker-0")
    await cluster.set_pod_status("flowers-worker-0", terminated(137, "", reason="OOMKilled"))
    restarting = await cluster.wait_condition(KIND, "flowers", "Restarting", "True", "PodRestarted")
    assert "exit code 137" in restarting["message"] and "attempt 2 of 2" in restarting["message"]
    retry = await wait_pod(cluster, "flowers-worker-0-retry-1")
    assert retry["metadata"]["labels"][constants.LABEL_ATTEMPT] == "1"
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None and obj["status"]["attempts"] == 2
    assert obj["status"]["lastFailure"]["exitCode"] == 137 and obj["status"]["lastFailure"]["retryable"] is True

    await cluster.set_pod_status("flowers-worker-0-retry-1", terminated(1, json.dumps({"error": "NaN loss at step 40"})))
    failed = await cluster.wait_condition(KIND, "flowers", "Succeeded", "False", "BackoffLimitExceeded")
    assert "2 attempt(s) failed" in failed["message"] and "NaN loss at step 40" in failed["message"]
    assert "spec.backoffLimit=1" in failed["message"]
    status = (await cluster.get_cr(KIND, "flowers"))["status"]  # type: ignore[index]
    assert status["phase"] == "Failed"
    assert next(c for c in status["conditions"] if c["type"] == "Stalled")["status"] == "True"
    # No third attempt.
    assert await pod_names(cluster) == ["flowers-worker-0", "flowers-worker-0-retry-1"]
    assert await eventually(lambda: _has_event(cluster, "flowers", "BackoffLimitExceeded"), what="warning event")


async def test_permanent_exit_code_is_not_retried(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job(backoffLimit=3))
    await wait_pod(cluster, "flowers-worker-0")
    summary = {"error": "class 'tulips' has no images", "exitCode": contract.EXIT_INVALID_DATASET}
    await cluster.set_pod_status("flowers-worker-0", terminated(contract.EXIT_INVALID_DATASET, json.dumps(summary)))
    failed = await cluster.wait_condition(KIND, "flowers", "Succeeded", "False", "PermanentError")
    assert "exit code 3 (invalid dataset)" in failed["message"]
    assert "class 'tulips' has no images" in failed["message"]
    status = (await cluster.get_cr(KIND, "flowers"))["status"]  # type: ignore[index]
    assert status["attempts"] == 1 and status["lastFailure"]["retryable"] is False
    assert await pod_names(cluster) == ["flowers-worker-0"]


async def test_active_deadline(backend: Backend, cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job(activeDeadlineSeconds=1))
    # The pod stays Pending (no kubelet here) until the deadline passes.
    failed = await cluster.wait_condition(KIND, "flowers", "Succeeded", "False", "DeadlineExceeded", timeout=15)
    assert "spec.activeDeadlineSeconds=1s" in failed["message"]
    status = (await cluster.get_cr(KIND, "flowers"))["status"]  # type: ignore[index]
    assert status["phase"] == "Failed" and status["attempts"] == 1 and status["startTime"]
    if backend.sandbox is not None:
        # The pod existed (the sandbox's API keeps the history of deleted objects; a real one does not).
        assert any(name == "flowers-worker-0" for _, _, name in backend.sandbox.handler.objects)
    await eventually(lambda: _no_pods(cluster), what="pods deleted")


async def _no_pods(cluster: Cluster) -> bool:
    return not await pod_names(cluster)


async def test_restart_converges_without_duplicates(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job(workers=2))
    await eventually(lambda: _pods_are(cluster, ["flowers-worker-0", "flowers-worker-1"]), what="two workers")
    services = await cluster.client.list("v1", "services", cluster.namespace, {constants.LABEL_OWNER_NAME: "flowers"})
    assert sorted(s["metadata"]["name"] for s in services) == ["flowers-worker-0", "flowers-worker-1"]
    pod = await cluster.pod("flowers-worker-1")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}  # type: ignore[index]
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}
    before = {n: (await cluster.pod(n))["metadata"]["uid"] for n in ("flowers-worker-0", "flowers-worker-1")}  # type: ignore[index]

    await operator.stop()
    # While the operator is away, the chief finishes.
    await cluster.set_pod_status("flowers-worker-1", running())
    await cluster.set_pod_status("flowers-worker-0", terminated(0, json.dumps(SUMMARY)))
    await operator.start()

    await cluster.wait_condition(KIND, "flowers", "Succeeded", "True", "Succeeded")
    # Same pods, nothing recreated; the still-running worker was cleaned up (cleanPodPolicy Running).
    await eventually(lambda: _pods_are(cluster, ["flowers-worker-0"]), what="worker 1 cleaned up")
    assert (await cluster.pod("flowers-worker-0"))["metadata"]["uid"] == before["flowers-worker-0"]  # type: ignore[index]
    await eventually(lambda: _no_services(cluster), what="worker services deleted")
    await operator.restart()
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None and obj["status"]["attempts"] == 1
    assert await pod_names(cluster) == ["flowers-worker-0"]


async def _no_services(cluster: Cluster) -> bool:
    return not await cluster.client.list("v1", "services", cluster.namespace, {constants.LABEL_OWNER_NAME: "flowers"})


async def _pods_are(cluster: Cluster, names: list[str]) -> bool:
    return await pod_names(cluster) == names


async def test_invalid_spec_is_a_condition_and_a_fix_is_picked_up(cluster: Cluster, operator: Operator) -> None:
    # The schema allows any URI scheme; the operator knows which it supports.
    await cluster.create(job(dataset={"uri": "gs://bucket/flowers"}))
    invalid = await cluster.wait_condition(KIND, "flowers", "Valid", "False", "InvalidSpec")
    assert invalid["message"].startswith("spec.dataset.uri: unsupported scheme 'gs'")
    assert "s3://<bucket>/<prefix> or obs://<bucket>/<prefix>" in invalid["message"]
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None and obj["status"]["phase"] == "Invalid"
    assert await pod_names(cluster) == []
    await cluster.patch_cr(KIND, "flowers", {"spec": {"dataset": {"uri": "file:///srv/flowers"}}})
    pod = await wait_pod(cluster, "flowers-worker-0")
    assert {"path": "/srv/flowers", "type": "Directory"} in [v.get("hostPath") for v in pod["spec"]["volumes"]]
    valid = await cluster.wait_condition(KIND, "flowers", "Valid", "True")
    assert valid["observedGeneration"] == 2


async def test_ttl_after_finished_deletes_the_job(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job(ttlSecondsAfterFinished=0, cleanPodPolicy="All"))
    await wait_pod(cluster, "flowers-worker-0")
    await cluster.set_pod_status("flowers-worker-0", terminated(0, json.dumps(SUMMARY)))

    async def gone() -> bool:
        return await cluster.get_cr(KIND, "flowers") is None

    await eventually(gone, what="TrainingJob deleted after its TTL")
    # cleanPodPolicy All removes even the succeeded pod (the API also collects it by owner reference).
    await eventually(lambda: _no_pods(cluster), what="pods deleted")


async def test_a_foreign_object_holding_a_childs_name_stalls_the_job_with_the_fix(
    cluster: Cluster, operator: Operator
) -> None:
    # Someone else's pod already has the worker's deterministic name: the operator must
    # neither adopt nor delete it, and must say what is in the way.
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flowers-worker-0"},
        "spec": {"containers": [{"name": "other", "image": "busybox"}]},
    }
    await cluster.create(foreign)
    await cluster.create(job())
    stalled = await cluster.wait_condition(KIND, "flowers", "Stalled", "True", constants.Reason.RECONCILE_ERROR)
    assert "flowers-worker-0 already exists and does not belong to TrainingJob flowers" in stalled["message"]
    assert "delete or rename it" in stalled["message"]
    pod = await cluster.pod("flowers-worker-0")
    assert pod is not None and not pod["metadata"].get("ownerReferences")
    assert (await cluster.get_cr(KIND, "flowers"))["status"]["phase"] == constants.Phase.PENDING  # type: ignore[index]
