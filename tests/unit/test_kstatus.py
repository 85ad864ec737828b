"""The status the operator writes is readable by kstatus (Flux, `kubectl wait`) and Argo CD.

The real reconcilers run the flowers example (TrainingJob -> ModelConversion ->
InferenceService and BatchPrediction, the manifests in examples/flowers) against an in-memory API
that also plays kubelet: it moves pods and the Deployment through their
phases. At every step the three resources' statuses are checked against
metav1.Condition's rules and kstatus' rules, and fed to the Argo CD health
checks of docs/argocd (with lua5.1, as Argo CD would run them).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import ConditionType
from ascend_mlops.kube import Conflict, matches_labels
from ascend_mlops.reconcilers import batch, conversion, inference, training
from ascend_mlops.reconcilers.engine import Engine, Key
from ascend_mlops.settings import Settings
from tests.helpers import REPO_ROOT

NAMESPACE = "ml-team"
EXAMPLES = REPO_ROOT / "examples" / "flowers"
ARGOCD = REPO_ROOT / "docs" / "argocd"
RECONCILERS = {
    constants.TRAINING_JOB: training.reconcile,
    constants.MODEL_CONVERSION: conversion.reconcile,
    constants.INFERENCE_SERVICE: inference.reconcile,
    constants.BATCH_PREDICTION: batch.reconcile,
}

# metav1.Condition validation (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
CONDITION_TYPE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# ---------------------------------------------------------------------------
# An in-memory API server (the calls KubeClient offers) that also plays kubelet.
# ---------------------------------------------------------------------------
class MemoryApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._uids = itertools.count(1)

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((api_version, plural, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list(
        self, api_version: str, plural: str, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (v, p, ns, _), obj in sorted(self.objects.items())
            if (v, p) == (api_version, plural) and ns == (namespace or "") and matches_labels(obj, labels or {})
        ]

    async def create(self, api_version: str, plural: str, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        key = (api_version, plural, namespace or "", obj["metadata"]["name"])
        if key in self.objects:
            raise Conflict(409, "AlreadyExists", f"{plural} {key[3]} already exists", "POST", plural)
        meta = obj["metadata"]
        meta.update(namespace=namespace, uid=f"uid-{next(self._uids)}", generation=1,
                    creationTimestamp="2026-05-20T10:00:00Z")
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        obj = self.objects[(api_version, plural, namespace or "", name)]
        if subresource == "status":
            body = {"status": body.get("status")}  # the status subresource ignores everything else
        merge_patch(obj, body)
        return copy.deepcopy(obj)

    async def replace(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = (api_version, plural, namespace or "", name)
        old = self.objects[key]
        new = copy.deepcopy(dict(body))
        new["metadata"]["generation"] = old["metadata"]["generation"] + (new.get("spec") != old.get("spec"))
        new["status"] = old.get("status", {})
        self.objects[key] = new
        return copy.deepcopy(new)

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> bool:
        return self.objects.pop((api_version, plural, namespace or "", name), None) is not None

    async def close(self) -> None:
        pass

    # --- what users and kubelet do ---------------------------------------------------------
    def apply_example(self, filename: str, name: str | None = None) -> Key:
        body = yaml.safe_load((EXAMPLES / filename).read_text(encoding="utf-8"))
        kind = body["kind"]
        body["metadata"]["namespace"] = NAMESPACE
        if name:
            body["metadata"]["name"] = name
        key = (constants.API_VERSION, constants.PLURALS[kind], NAMESPACE, body["metadata"]["name"])
        body["metadata"].update(uid=f"uid-{next(self._uids)}", generation=1)
        self.objects[key] = body
        return Key(kind, NAMESPACE, body["metadata"]["name"])

    def resource(self, key: Key) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(constants.API_VERSION, key.plural, key.namespace, key.name)])

    def edit_spec(self, key: Key, **changes: Any) -> None:
        obj = self.objects[(constants.API_VERSION, key.plural, key.namespace, key.name)]
        obj["spec"].update(changes)
        obj["metadata"]["generation"] += 1

    def pods(self) -> list[dict[str, Any]]:
        return [obj for (v, p, _, _), obj in sorted(self.objects.items()) if (v, p) == ("v1", "pods")]

    def set_pod(self, pod: dict[str, Any], phase: str, *, exit_code: int | None = None, message: str = "",
                waiting: str | None = None, restarts: int = 0) -> None:
        container = pod["spec"]["containers"][0]["name"]
        state: dict[str, Any] = {"running": {"startedAt": "2026-05-20T10:01:00Z"}}
        last: dict[str, Any] = {}
        if exit_code is not None and waiting is None:
            state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                    "message": message}}
        elif waiting is not None:
            state = {"waiting": {"reason": waiting, "message": "back-off restarting failed container"}}
            last = {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message}}
        pod["status"] = {
            "phase": phase,
            "containerStatuses": [
                {"name": container, "ready": phase == "Running" and waiting is None, "restartCount": restarts,
                 "state": state, "lastState": last}
            ],
        }

    def finish_deployment(self) -> None:
        for (v, p, _, _), obj in self.objects.items():
            if (v, p) == ("apps/v1", "deployments"):
                replicas = obj["spec"]["replicas"]
                obj["status"] = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                                 "availableReplicas": replicas, "observedGeneration": obj["metadata"]["generation"]}

    def add_server_pod(self, **state: Any) -> dict[str, Any]:
        (deployment,) = [o for (v, p, _, _), o in self.objects.items() if (v, p) == ("apps/v1", "deployments")]
        template = copy.deepcopy(deployment["spec"]["template"])
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**template["metadata"], "name": "flowers-predictor-0", "namespace": NAMESPACE,
                            "ownerReferences": deployment["metadata"]["ownerReferences"]},
               "spec": template["spec"]}
        self.set_pod(pod, **state)
        self.objects[("v1", "pods", NAMESPACE, "flowers-predictor-0")] = pod
        return pod


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


# ---------------------------------------------------------------------------
# kstatus (sigs.k8s.io/cli-utils/pkg/kstatus), the generic rules for custom resources.
# ---------------------------------------------------------------------------
def kstatus(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    observed = status.get("observedGeneration")
    if observed is not None and observed != meta.get("generation"):
        return "InProgress"
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    if conditions.get(ConditionType.RECONCILING, {}).get("status") == "True":
        return "InProgress"
    if conditions.get(ConditionType.STALLED, {}).get("status") == "True":
        return "Failed"
    ready = conditions.get(ConditionType.READY)
    if ready is not None and ready.get("status") != "True":
        return "InProgress"
    return "Current"


def check_conditions(obj: Mapping[str, Any], observed: bool = True) -> None:
    """metav1.Condition's rules, plus the operator's own: summary condition, kstatus pair."""
    where = f"{obj['kind']} {obj['metadata']['name']}"
    status = obj["status"]
    generation = status["observedGeneration"]
    if observed:
        assert generation == obj["metadata"]["generation"], where
    else:
        assert generation < obj["metadata"]["generation"], where
    conditions = status["conditions"]
    types = [c["type"] for c in conditions]
    assert len(types) == len(set(types)), f"{where}: conditions must be keyed by type: {types}"
    for c in conditions:
        assert set(c) <= {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}, c
        assert CONDITION_TYPE.match(c["type"]) and len(c["type"]) <= 316, c
        assert c["status"] in ("True", "False", "Unknown"), c
        assert CONDITION_REASON.match(c["reason"]) and len(c["reason"]) <= 1024, c
        assert len(c.get("message", "")) <= 32768, c
        assert RFC3339.match(c["lastTransitionTime"]), c
        assert c["observedGeneration"] == generation, c
    summary = ConditionType.READY if obj["kind"] == constants.INFERENCE_SERVICE else ConditionType.SUCCEEDED
    assert summary in types, f"{where}: no {summary} condition"
    assert ConditionType.RECONCILING in types and ConditionType.STALLED in types, where
    abnormal = [c["type"] for c in conditions if c["type"] in (ConditionType.RECONCILING, ConditionType.STALLED)
                and c["status"] == "True"]
    assert len(abnormal) <= 1, f"{where}: Reconciling and Stalled both True"


# ---------------------------------------------------------------------------
# The flow.
# ---------------------------------------------------------------------------
@dataclass
class Snapshot:
    step: str
    resource: dict[str, Any]
    kstatus: str  # expected
    argocd: str  # expected
    observed: bool = True  # the operator has reconciled the latest generation


class Flow:
    def __init__(self) -> None:
        self.api = MemoryApi()
        moment = datetime.datetime(2026, 5, 20, 10, 0, tzinfo=datetime.UTC)
        self.runtime = Engine(Settings(), self.api, clock=lambda: moment)  # type: ignore[arg-type]
        self.snapshots: list[Snapshot] = []

    async def reconcile(self, *keys: Key) -> None:
        for key in keys:
            await RECONCILERS[key.kind](self.runtime, key)

    def record(self, step: str, key: Key, expected_kstatus: str, expected_argocd: str, observed: bool = True) -> None:
        self.snapshots.append(
            Snapshot(f"{step}: {key}", self.api.resource(key), expected_kstatus, expected_argocd, observed)
        )


def train_summary() -> str:
    return contract.encode_summary({
        contract.SUMMARY_VERSION: "V001",
        contract.SUMMARY_ARTIFACTS: {
            contract.ARTIFACT_FROZEN_GRAPH: "V001/frozen_graph",
            contract.ARTIFACT_SAVED_MODEL: "V001/saved_model",
            contract.ARTIFACT_LABELS: "V001/labels.txt",
            contract.ARTIFACT_METRICS: "V001/metrics.json",
        },
        contract.SUMMARY_METRICS: {"accuracy": 0.91, "loss": 0.3, "epochs": 12},
    })


def convert_summary() -> str:
    return contract.encode_summary({contract.SUMMARY_MODEL: contract.OM_FILE,
                                    contract.SUMMARY_ATC_COMMAND: "atc --framework=3", contract.SUMMARY_SIMULATED: False})


def batch_summary(shard: int) -> str:
    summary: dict[str, Any] = {"total": 250, "succeeded": 249, "failed": 1, "skipped": 0,
                               "imagesPerSecond": 40.0, "shard": f"{shard}/2"}
    if shard == 1:
        summary["manifest"] = contract.batch_manifest_name("flowers-batch")
    return contract.encode_summary(summary)


async def run_flow() -> Flow:
    flow = Flow()
    api = flow.api
    tj = api.apply_example("trainingjob.yaml")
    mc = api.apply_example("modelconversion.yaml")
    isvc = api.apply_example("inferenceservice.yaml")
    bp = api.apply_example("batchprediction.yaml")

    await flow.reconcile(tj, mc, isvc, bp)
    flow.record("waiting for the conversion", bp, "InProgress", "Progressing")
    flow.record("created", tj, "InProgress", "Progressing")
    flow.record("waiting for the training job", mc, "InProgress", "Progressing")
    flow.record("waiting for the conversion", isvc, "InProgress", "Progressing")

    (train_pod,) = api.pods()
    api.set_pod(train_pod, "Running")
    await flow.reconcile(tj)
    flow.record("training", tj, "InProgress", "Progressing")

    api.set_pod(train_pod, "Succeeded", exit_code=0, message=train_summary())
    await flow.reconcile(tj, mc)
    flow.record("trained", tj, "Current", "Healthy")
    flow.record("converting", mc, "InProgress", "Progressing")

    (convert_pod,) = [p for p in api.pods() if p["metadata"]["name"] != train_pod["metadata"]["name"]]
    api.set_pod(convert_pod, "Succeeded", exit_code=0, message=convert_summary())
    await flow.reconcile(mc, isvc)
    flow.record("converted", mc, "Current", "Healthy")

    await flow.reconcile(bp)
    shards = [p for p in api.pods() if p["metadata"]["labels"].get(constants.LABEL_OWNER_KIND) == constants.BATCH_PREDICTION]
    assert len(shards) == 2
    flow.record("shards created", bp, "InProgress", "Progressing")
    for pod in shards:
        api.set_pod(pod, "Running")
    await flow.reconcile(bp)
    flow.record("classifying", bp, "InProgress", "Progressing")
    api.set_pod(shards[0], "Succeeded", exit_code=0, message=batch_summary(0))
    await flow.reconcile(bp)
    flow.record("one shard of two done", bp, "InProgress", "Progressing")
    api.set_pod(shards[1], "Succeeded", exit_code=0, message=batch_summary(1))
    await flow.reconcile(bp)
    flow.record("every shard done", bp, "Current", "Healthy")
    flow.record("rolling out", isvc, "InProgress", "Progressing")

    api.finish_deployment()
    await flow.reconcile(isvc)
    flow.record("serving", isvc, "Current", "Healthy")

    # A user edit: until the operator has looked at it, nobody may call it current.
    api.edit_spec(isvc, replicas=2)
    flow.record("edited, not yet observed", isvc, "InProgress", "Progressing", observed=False)
    await flow.reconcile(isvc)
    flow.record("scaling", isvc, "InProgress", "Progressing")
    api.finish_deployment()
    await flow.reconcile(isvc)
    flow.record("scaled", isvc, "Current", "Healthy")

    # The server crash-loops: kstatus keeps waiting (the operator does not give
    # up on a crash loop), Argo CD shows it as broken at once.
    api.add_server_pod(phase="Running", exit_code=1, message="Traceback ...", waiting="CrashLoopBackOff", restarts=4)
    await flow.reconcile(isvc)
    flow.record("crash loop", isvc, "InProgress", "Degraded")
    # The model cannot be loaded (permanent exit code): stalled for both.
    api.add_server_pod(phase="Running", exit_code=contract.EXIT_INVALID_MODEL, message="not an .om model",
                       waiting="CrashLoopBackOff", restarts=2)
    await flow.reconcile(isvc)
    flow.record("model cannot load", isvc, "Failed", "Degraded")

    # A training job that fails for good (permanent exit code: no retry).
    empty = api.apply_example("trainingjob.yaml", name="flowers-empty")
    await flow.reconcile(empty)
    (bad_pod,) = [p for p in api.pods() if p["metadata"]["labels"].get(constants.LABEL_OWNER_NAME) == "flowers-empty"]
    api.set_pod(bad_pod, "Failed", exit_code=contract.EXIT_INVALID_DATASET,
                message=contract.encode_summary({contract.SUMMARY_ERROR: "dataset has 1 class", contract.SUMMARY_EXIT_CODE: 3}))
    await flow.reconcile(empty)
    flow.record("failed", empty, "Failed", "Degraded")

    # An invalid spec (what the CRD schema cannot express).
    api.edit_spec(mc, source={"trainingJobRef": {"name": "flowers-resnet50"}, "uri": "pvc://x/y"})
    api.objects[(constants.API_VERSION, mc.plural, NAMESPACE, mc.name)].pop("status")
    await flow.reconcile(mc)
    flow.record("invalid", mc, "Failed", "Degraded")
    await flow.runtime.close()
    return flow


@pytest.fixture(scope="module")
def flow() -> Flow:
    return asyncio.run(run_flow())


def test_statuses_follow_the_condition_conventions(flow: Flow) -> None:
    assert len(flow.snapshots) >= 15
    for snapshot in flow.snapshots:
        check_conditions(snapshot.resource, snapshot.observed)


def test_kstatus_reads_every_step_as_expected(flow: Flow) -> None:
    got = [(s.step, kstatus(s.resource)) for s in flow.snapshots]
    assert got == [(s.step, s.kstatus) for s in flow.snapshots]


def test_summary_conditions_drive_kubectl_wait(flow: Flow) -> None:
    def condition(snapshot: Snapshot, type_: str) -> str | None:
        found = [c for c in snapshot.resource["status"]["conditions"] if c["type"] == type_]
        return found[0]["status"] if found else None

    for s in flow.snapshots:
        kind = s.resource["kind"]
        summary = ConditionType.READY if kind == constants.INFERENCE_SERVICE else ConditionType.SUCCEEDED
        # `kubectl wait --for=condition=<summary>` returns exactly when kstatus says Current
        # (apart from an edit not yet observed, which only observedGeneration reveals).
        if s.kstatus == "Current":
            assert condition(s, summary) == "True", s.step
        elif s.observed:
            assert condition(s, summary) != "True" or kind == constants.INFERENCE_SERVICE, s.step


def test_argocd_health_checks_read_the_operators_real_statuses(flow: Flow, tmp_path: Path) -> None:
    lua = shutil.which("lua5.1")
    if lua is None:
        pytest.skip("lua5.1 is not installed: run .ci/checks/tools.sh lua5.1")
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import importlib

        cases_module = importlib.import_module("argocd-health-cases")
    finally:
        sys.path.pop(0)
    cases = [
        {
            "name": s.step,
            "script": str(ARGOCD / constants.GROUP / s.resource["kind"] / "health.lua"),
            "input": s.resource,
            "expected": {"status": s.argocd},
        }
        for s in flow.snapshots
    ]
    cases_file = tmp_path / "cases.lua"
    cases_file.write_text("return " + cases_module.lua_value(cases), encoding="utf-8")
    result = subprocess.run(
        [lua, str(REPO_ROOT / "scripts" / "argocd-health-test.lua"), str(cases_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(cases)} passed, 0 failed" in result.stdout
