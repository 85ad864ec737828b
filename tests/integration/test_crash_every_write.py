"""Crash at every write: kill the operator after its k-th write, for every k of a full flow, and compare.

The flow is the seed's: a TrainingJob, a ModelConversion of its output and an
InferenceService of the conversion, with the test playing kubelet and
Deployment controller (pods finish with the workloads' termination messages;
the Deployment reports its replicas ready, with a server pod). The operator is
a real `ascend-mlops operator` process behind a proxy that counts its writes
(POST, PUT, PATCH, DELETE).

1. An uninterrupted run gives the reference: the final status of the three
   resources and the set of children, and K, the number of writes it took.
2. For every k in 1..K: a fresh API server; the proxy lets the k-th write
   reach the API server, keeps its answer from the operator, and holds every
   later request; the operator is SIGKILLed there. A new operator process
   then runs to the end. Its final state must equal the reference: the same
   statuses (timestamps aside), the same children, none twice, none without
   its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import constants, contract
from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox.apiserver import APIServer, kubeconfig_text
from tests.helpers import REPO_ROOT
from tests.integration.conftest import NAMESPACE, Cluster, eventually, running, terminated
from tests.integration.proxy import Proxy
from tests.integration.test_conversion import conversion
from tests.integration.test_entrypoints import spawn
from tests.integration.test_inference import service
from tests.integration.test_training import SUMMARY, job

pytestmark = [
    pytest.mark.slow,
    # A fresh API server for each of the flow's ~K crash points (in-process, milliseconds to start), and a
    # proxy that must read the operator's writes to count and hold them: plain HTTP, the sandbox's API.
    pytest.mark.sandbox_only("a fresh API per crash point and a proxy that reads the operator's plain-HTTP writes"),
]

CONVERSION_SUMMARY = {contract.SUMMARY_MODEL: "model.om", contract.SUMMARY_ATC_COMMAND: "atc ...", contract.SUMMARY_SIMULATED: True}
CHILD_KINDS = (("v1", "pods"), ("apps/v1", "deployments"), ("v1", "services"))
# Fields that differ between any two runs, crash or not.
VOLATILE = {"lastTransitionTime", "startTime", "completionTime", "lastUpdateTime", "uid", "resourceVersion", "creationTimestamp"}


def flow() -> list[dict[str, Any]]:
    return [job(), conversion(), service()]


async def play_cluster(client: KubeClient, stop: asyncio.Event) -> None:
    """The kubelet and the Deployment controller: finish the job pods, make the predictor ready."""
    while not stop.is_set():
        for pod in await client.list("v1", "pods", NAMESPACE):
            name = pod["metadata"]["name"]
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                continue
            if name == "flowers-worker-0":
                status = terminated(0, json.dumps(SUMMARY))
            elif name == "flowers-om-convert":
                status = terminated(0, json.dumps(CONVERSION_SUMMARY), name="converter")
            elif name.startswith("flowers-predictor-") and phase != "Running":
                status = running("server")
            else:
                continue
            with contextlib.suppress(Exception):
                await client.patch("v1", "pods", NAMESPACE, name, {"status": status}, subresource="status")
        for dep in await client.list("apps/v1", "deployments", NAMESPACE):
            await _run_deployment(client, dep)
        await asyncio.sleep(0.05)


async def _run_deployment(client: KubeClient, dep: dict[str, Any]) -> None:
    name = dep["metadata"]["name"]
    replicas = int(dep["spec"].get("replicas", 1))
    template = dep["spec"]["template"]
    pod_name = f"{name}-rs-0"
    if replicas and await client.get("v1", "pods", NAMESPACE, pod_name) is None:
        with contextlib.suppress(Exception):
            await client.create("v1", "pods", NAMESPACE, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": pod_name, "labels": template["metadata"]["labels"],
                    "annotations": template["metadata"].get("annotations", {}),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-rs", "uid": "rs-uid", "controller": True}],
                },
                "spec": template["spec"],
            })
    status = dep.get("status") or {}
    if status.get("observedGeneration") != dep["metadata"]["generation"] or status.get("readyReplicas") != replicas:
        with contextlib.suppress(Exception):
            await client.patch("apps/v1", "deployments", NAMESPACE, name, {"status": {
                "observedGeneration": dep["metadata"]["generation"], "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas,
            }}, subresource="status")


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _stable(v) for k, v in sorted(value.items()) if k not in VOLATILE}
        if isinstance(out.get("conditions"), list):  # a map keyed by type (listMapKeys): order is not state
            out["conditions"] = sorted(out["conditions"], key=lambda c: str(c.get("type")))
        return out
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def final_state(client: KubeClient) -> dict[str, Any]:
    """The three resources' status and every child, without what differs between any two runs."""
    state: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for kind in (constants.TRAINING_JOB, constants.MODEL_CONVERSION, constants.INFERENCE_SERVICE):
        for obj in await client.list(constants.API_VERSION, constants.PLURALS[kind], NAMESPACE):
            state[f"{kind}/{obj['metadata']['name']}"] = _stable(obj.get("status") or {})
            owners[obj["metadata"]["uid"]] = f"{kind}/{obj['metadata']['name']}"
    for api_version, plural in CHILD_KINDS:
        for obj in await client.list(api_version, plural, NAMESPACE):
            meta = obj["metadata"]
            if plural == "services" and meta["name"] == "kubernetes":
                continue
            refs = meta.get("ownerReferences") or []
            owner = [owners.get(r["uid"], f"{r['kind']}/{r['name']}") for r in refs]
            state[f"{plural}/{meta['name']}"] = {"owners": owner, "labels": meta.get("labels"), "spec": _stable(obj.get("spec"))}
    return state


def orphans(state: dict[str, Any]) -> list[str]:
    """Children whose owner is not one of the flow's resources (or the test's ReplicaSet stand-in)."""
    known = {k for k in state if k.split("/")[0] in (constants.TRAINING_JOB, constants.MODEL_CONVERSION, constants.INFERENCE_SERVICE)}
    return [
        key for key, value in state.items()
        if key.split("/")[0] in {p for _, p in CHILD_KINDS}
        and not any(o in known or o.startswith("ReplicaSet/") for o in value["owners"])
    ]


class Run:
    """One API server, the cluster player, and operator processes behind a proxy."""

    def __init__(self, api: APIServer, tmp_path: Path) -> None:
        self.api = api
        self.tmp_path = tmp_path
        self.client = KubeClient(api.url)
        self.cluster = Cluster(self.client)
        self.proxy = Proxy((api.host, api.port))
        self._stop = asyncio.Event()
        self._player: asyncio.Task[None] | None = None
        self.starts = 0

    async def __aenter__(self) -> Run:
        await self.proxy.start()
        self._player = asyncio.create_task(play_cluster(self.client, self._stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._player is not None:
            await asyncio.gather(self._player, return_exceptions=True)
        await self.proxy.go_away()
        await self.client.close()

    async def operator(self) -> asyncio.subprocess.Process:
        self.starts += 1
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.tmp_path / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(self.proxy.url))
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), ASCEND_MLOPS_METRICS_PORT="0", ASCEND_MLOPS_HEALTH_PORT="0")
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = self.tmp_path / f"operator-{self.starts}.log"
        return await spawn([sys.executable, "-m", "ascend_mlops", "operator", "--namespace", NAMESPACE], env, log)

    async def apply_flow(self) -> None:
        for body in flow():
            await self.cluster.create(body)

    async def ready(self) -> bool:
        isvc = await self.cluster.get_cr(constants.INFERENCE_SERVICE, "flowers")
        conditions = ((isvc or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    async def settle(self, quiet: float = 1.5, timeout: float = 60) -> None:
        """Until the InferenceService is Ready and the operator has written nothing for `quiet` seconds."""
        await eventually(self.ready, timeout=timeout, what="InferenceService Ready")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            before = len(self.proxy.writes)
            await asyncio.sleep(quiet)
            if len(self.proxy.writes) == before:
                return
        raise AssertionError("the operator kept writing: " + ", ".join(self.proxy.writes[-10:]))


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


@contextlib.asynccontextmanager
async def fresh_api() -> AsyncIterator[APIServer]:
    async with APIServer(crd_dirs=[REPO_ROOT / "crds"]) as server:
        yield server


async def reference_run(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    async with fresh_api() as api, Run(api, tmp_path) as run:
        process = await run.operator()
        try:
            await run.apply_flow()
            await run.settle()
            return await final_state(run.client), list(run.proxy.writes)
        finally:
            await stop(process)


async def crashed_run(tmp_path: Path, k: int) -> tuple[dict[str, Any], list[str]]:
    """The flow with the operator killed after its k-th write; `[]` as the writes if this run never made k."""
    async with fresh_api() as api, Run(api, tmp_path) as run:
        run.proxy.stop_after_writes = k
        first = await run.operator()
        await run.apply_flow()
        held = asyncio.create_task(run.proxy.held.wait())
        done = asyncio.create_task(run.settle())
        try:
            # Timing decides a few writes (a status patch can fold two changes into one), so a
            # run may finish in fewer than the reference's writes: then there is no k-th to crash at.
            await asyncio.wait({held, done}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        finally:
            first.kill()  # SIGKILL: no cleanup, no last words
            await first.wait()
            for task in (held, done):
                task.cancel()
            await asyncio.gather(held, done, return_exceptions=True)
        if not run.proxy.held.is_set():
            assert len(run.proxy.writes) < k, "neither killed nor settled within 90 s"
            return await final_state(run.client), []
        crashed_after = list(run.proxy.writes)
        run.proxy.stop_after_writes = None
        second = await run.operator()
        try:
            await run.settle()
            return await final_state(run.client), crashed_after
        finally:
            await stop(second)


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    out = [f"missing {key}" for key in expected.keys() - actual.keys()]
    out += [f"extra {key}" for key in actual.keys() - expected.keys()]
    out += [f"{key} differs:\n  want {expected[key]}\n  got  {actual[key]}" for key in expected.keys() & actual.keys() if expected[key] != actual[key]]
    return out


async def test_killed_after_every_write_the_restarted_operator_ends_in_the_same_state(tmp_path: Path) -> None:
    reference, writes = await reference_run(tmp_path / "reference")
    assert writes, "the flow made no writes"
    assert not orphans(reference), orphans(reference)
    assert {"pods/flowers-worker-0", "pods/flowers-om-convert", "deployments/flowers-predictor"} <= reference.keys()
    failures: list[str] = []
    crashes = 0
    for k in range(1, len(writes) + 1):
        state, crashed_after = await crashed_run(tmp_path / f"k{k}", k)
        if crashed_after:
            assert len(crashed_after) == k, crashed_after
            crashes += 1
        where = f"killed after write {k} ({crashed_after[-1]})" if crashed_after else f"run {k}, finished in fewer than {k} writes"
        diff = differences(reference, state) + [f"orphan {o}" for o in orphans(state)]
        if diff:
            failures.append(f"{where}:\n" + "\n".join(diff))
    assert not failures, f"{len(failures)} of {len(writes)} crash points end differently:\n\n" + "\n\n".join(failures)
    # Nearly every k is a real crash point (only the last few may be beyond a faster run).
    assert crashes >= 0.8 * len(writes), f"only {crashes} of {len(writes)} runs were killed"
