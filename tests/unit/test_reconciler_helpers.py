"""Pure pieces of the reconcilers: reading pods, failure details, events, metrics, owner lookup."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ascend_mlops import events, metrics
from ascend_mlops import status as st
from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import Autoscaling, parse_inference_service, parse_storage_uri
from ascend_mlops.builders.common import Owner
from ascend_mlops.main import owner_key
from ascend_mlops.operator_cli import resolve_namespaces
from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers import references
from ascend_mlops.reconcilers.inference import pod_problem
from ascend_mlops.reconcilers.jobs import describe_exit, failure_details
from ascend_mlops.reconcilers.serving import autoscaler_state, exposure_errors
from ascend_mlops.reconcilers.training import artifacts_from_summary, metrics_from_summary
from ascend_mlops.settings import Settings


def pod(phase: str, container: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "labels": {constants.LABEL_REPLICA_INDEX: "1", constants.LABEL_ATTEMPT: "2"},
            **meta,
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "c", **(container or {})}]},
    }


def test_pod_state_reads_labels_and_termination() -> None:
    state = P.pod_state(
        pod("Failed", {"state": {"terminated": {"exitCode": 3, "reason": "Error", "message": '{"error":"empty"}'}}}),
        "c",
    )
    assert (state.index, state.attempt, state.phase, state.active) == (1, 2, "Failed", False)
    assert state.terminated == P.Terminated(3, "Error", '{"error":"empty"}')
    code, error, summary = failure_details(state)
    assert (code, error, summary) == (3, "empty", {"error": "empty"})


def test_failure_details_fall_back_to_log_tail_and_pod_reason() -> None:
    log_tail = P.pod_state(pod("Failed", {"state": {"terminated": {"exitCode": 1, "message": "Traceback\nValueError: x"}}}))
    assert failure_details(log_tail)[:2] == (1, "Traceback\nValueError: x")
    evicted = P.pod_state({"metadata": {"name": "e"}, "status": {"phase": "Failed", "reason": "Evicted", "message": "low memory"}})
    assert failure_details(evicted)[:2] == (None, "low memory")


def test_pending_explanations() -> None:
    unschedulable = P.pod_state(
        {
            "metadata": {"name": "u"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: Insufficient huawei.com/Ascend310"}
                ],
            },
        }
    )
    assert "Insufficient huawei.com/Ascend310" in P.pending_explanation(unschedulable)
    image = P.pod_state(pod("Pending", {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}))
    assert P.pending_explanation(image) == "pod p cannot pull its image (ImagePullBackOff): not found"
    assert P.pending_explanation(P.pod_state(pod("Pending"))) == ""


def test_server_pod_problems() -> None:
    crash = pod(
        "Running",
        {
            "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": contract.EXIT_INVALID_MODEL, "message": json.dumps({"error": "bad om"})}},
        },
    )
    reason, message = pod_problem(P.pod_state(crash)) or ("", "")
    assert reason == constants.Reason.MODEL_LOAD_FAILED and "bad om" in message and "2 restart(s)" in message
    healthy = pod("Running", {"ready": True, "state": {"running": {}}})
    assert pod_problem(P.pod_state(healthy)) is None
    pull = pod("Pending", {"state": {"waiting": {"reason": "ErrImagePull"}}})
    assert (pod_problem(P.pod_state(pull)) or ("",))[0] == constants.Reason.IMAGE_PULL_FAILED


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exit code 3 (invalid dataset)"
    assert describe_exit(137) == "exit code 137 (killed (out of memory or evicted))"
    assert describe_exit(42) == "exit code 42"
    assert describe_exit(75) == "exit code 75 (object storage unreachable)"


def test_summary_to_status() -> None:
    root = parse_storage_uri("file:///srv/runs", "f")
    summary = {"artifacts": {"frozenGraph": "V002/frozen_graph", "labels": "../escape.txt", "other": "x"}, "metrics": {"accuracy": 0.5, "ok": True, "name": "x"}}
    assert artifacts_from_summary(root, summary) == {"frozenGraph": "file:///srv/runs/V002/frozen_graph"}
    assert metrics_from_summary(summary) == {"accuracy": 0.5}
    assert artifacts_from_summary(root, {}) == {} and metrics_from_summary({"metrics": []}) == {}


def test_reference_summary() -> None:
    assert not references.summarize(None).found
    done = {"status": {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]}}
    assert references.summarize(done).succeeded
    failed = {"status": {"phase": "Failed", "conditions": [{"type": "Succeeded", "status": "False", "reason": "X", "message": "m"}]}}
    state = references.summarize(failed)
    assert state.failed and state.message == "m"
    running = {"status": {"phase": "Running", "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]}}
    assert not references.summarize(running).failed and references.summarize(running).phase == "Running"


def test_transition_events_types() -> None:
    import datetime

    c = st.Conditions([], 1, datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    c.set("Succeeded", st.UNKNOWN, "Running", "training")
    old = {"conditions": c.to_list()}
    c.set("Succeeded", st.FALSE, "BackoffLimitExceeded", "3 attempts failed")
    new = {"conditions": c.to_list()}
    [event] = events.transition_events(old, new, ["Succeeded"])
    assert event == events.Event("Warning", "BackoffLimitExceeded", "Succeeded=False: 3 attempts failed")
    # A first appearance: Normal only for a milestone reached, never for the way there.
    assert events.transition_events(None, old, ["Succeeded"]) == []
    c.set("Succeeded", st.TRUE, "Succeeded", "done")
    [reached] = events.transition_events(None, {"conditions": c.to_list()}, ["Succeeded"])
    assert reached.type == "Normal" and reached.reason == "Succeeded"
    c.set("Valid", st.TRUE, "SpecValid", "")
    assert events.transition_events(None, {"conditions": c.to_list()}, ["Valid"]) == []
    c.set("Valid", st.FALSE, "InvalidSpec", "spec.x: bad")
    [invalid] = events.transition_events(None, {"conditions": c.to_list()}, ["Valid"])
    assert invalid.type == "Warning"
    events.post({"metadata": {"name": "x"}}, [event])  # outside an operator: logged, not raised


def test_phase_gauge_follows_objects() -> None:
    tracker = metrics.PhaseTracker()
    gauge = metrics.RESOURCES.labels(kind="UnitKind", phase="Running")
    before = gauge._value.get()
    tracker.observe("UnitKind", "ns", "a", "Running")
    tracker.observe("UnitKind", "ns", "b", "Running")
    tracker.observe("UnitKind", "ns", "b", "Running")
    assert gauge._value.get() == before + 2
    tracker.observe("UnitKind", "ns", "a", "Succeeded")
    tracker.forget("UnitKind", "ns", "b")
    assert gauge._value.get() == before
    tracker.clear()
    assert metrics.RESOURCES.labels(kind="UnitKind", phase="Succeeded")._value.get() == 0


def test_owner_key_from_reference_or_labels() -> None:
    direct = {
        "metadata": {
            "namespace": "ml",
            "ownerReferences": [{"apiVersion": constants.API_VERSION, "kind": "TrainingJob", "name": "flowers", "controller": True}],
        }
    }
    assert str(owner_key(direct)) == "TrainingJob ml/flowers"
    via_replicaset = {
        "metadata": {
            "namespace": "ml",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": True}],
            "labels": {constants.LABEL_OWNER_KIND: "InferenceService", constants.LABEL_OWNER_NAME: "clipped"},
            "annotations": {constants.LABEL_OWNER_NAME: "the-full-name"},
        }
    }
    assert str(owner_key(via_replicaset)) == "InferenceService ml/the-full-name"
    assert owner_key({"metadata": {"labels": {constants.LABEL_OWNER_KIND: "Deployment", constants.LABEL_OWNER_NAME: "x"}}}) is None


def test_namespaces_from_flags_or_settings() -> None:
    settings = Settings.from_env({"ASCEND_MLOPS_NAMESPACES": "ml,team"})
    assert resolve_namespaces(argparse.Namespace(namespace=[], all_namespaces=False), settings) == ["ml", "team"]
    assert resolve_namespaces(argparse.Namespace(namespace=["a", "a", "b"], all_namespaces=False), settings) == ["a", "b"]
    assert resolve_namespaces(argparse.Namespace(namespace=[], all_namespaces=True), settings) == []


def test_autoscaler_state_from_hpa_and_keda_conditions() -> None:
    scaling = Autoscaling(max_replicas=4)
    hpa = constants.KIND_HPA
    assert autoscaler_state(hpa, "f", scaling, {})[:2] == ("Unknown", "AutoscalerPending")
    failing = {"status": {"conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale", "message": ""},
        {"type": "ScalingActive", "status": "False", "reason": "FailedGetPodsMetric",
         "message": "unable to get metric ascend_mlops_server_inflight_requests: no metrics returned"},
    ]}}
    status, reason, message = autoscaler_state(hpa, "f", scaling, failing)
    assert (status, reason) == ("False", "AutoscalerNotReady")
    assert "FailedGetPodsMetric: unable to get metric" in message and "Prometheus Adapter rule in docs/serving.md" in message
    active = {"status": {"conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}]}}
    assert autoscaler_state(hpa, "f", scaling, active) == (
        "True", "AutoscalerReady",
        "HorizontalPodAutoscaler f scales 1-4 replicas on 4 in-flight requests per pod (ascend_mlops_server_inflight_requests)",
    )
    keda = constants.KIND_SCALEDOBJECT
    broken = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ScaledObjectCheckFailed", "message": "no Prometheus"}]}}
    status, reason, message = autoscaler_state(keda, "f", scaling, broken)
    assert (status, reason) == ("False", "AutoscalerNotReady") and "ScaledObjectCheckFailed: no Prometheus" in message
    assert "Adapter" not in message  # KEDA reads Prometheus itself
    assert autoscaler_state(keda, "f", scaling, {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})[1] == "AutoscalerPending"
    # Settings an exposure needs, named with the fix.
    owner = Owner(kind=constants.INFERENCE_SERVICE, name="flowers", namespace="ml")
    spec = parse_inference_service({"model": {"uri": "pvc://d/m"}, "exposure": {"type": "HTTPRoute"}}, "huawei.com/Ascend310")
    errors = {e.path: e.message for e in exposure_errors(spec, owner, Settings())}
    assert "ASCEND_MLOPS_GATEWAY" in errors["spec.exposure.type"] and "ASCEND_MLOPS_DOMAIN" in errors["spec.exposure.host"]
    assert exposure_errors(spec, owner, Settings(gateway=("gw", "public"), domain="example.com")) == []


async def test_a_failed_reconcile_logs_a_namespace_deletion_at_info_and_an_rbac_refusal_as_a_warning(caplog: Any) -> None:
    import logging

    from ascend_mlops.kube import ApiError
    from ascend_mlops.reconcilers.engine import Engine, Key, Result
    from ascend_mlops.settings import Settings

    refusals = {
        "gone": "services \"s\" is forbidden: unable to create new content in namespace a because it is being terminated",
        "rbac": 'services "s" is forbidden: User "system:serviceaccount:x:y" cannot create resource "services"',
    }

    async def refused(_rt: Engine, key: Key) -> Result:
        raise ApiError(403, "Forbidden", refusals[key.name], "POST", "/api/v1/namespaces/a/services")

    rt = Engine(Settings.from_env({}), client=None)  # type: ignore[arg-type]  # the reconciler never calls it
    rt.reconcilers[constants.INFERENCE_SERVICE] = refused
    caplog.set_level(logging.INFO, logger="ascend_mlops")
    for name in refusals:
        await rt.reconcile(Key(constants.INFERENCE_SERVICE, "a", name))
    await rt.close()  # the retries it scheduled
    levels = {r.getMessage().split(":")[0]: r.levelname for r in caplog.records if "reconcile failed" in r.getMessage()}
    assert levels == {f"{constants.INFERENCE_SERVICE} a/gone": "INFO", f"{constants.INFERENCE_SERVICE} a/rbac": "WARNING"}
