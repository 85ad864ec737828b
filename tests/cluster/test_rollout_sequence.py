"""Ready never lies through a rollout (issue 21), on the real node: the sandbox test's sequence, same assertions.

tests/sandbox/test_rollout_sequence.py's run_sequence on the real node: one InferenceService (runtime
tensorflow, 4 stable replicas, tiny 8x8 graphs on a hostPath claim) goes through
a canary at 20 percent with analysis -> its steps -> automatic promotion -> a
next canary whose model cannot load -> rollback -> a good canary promoted the
GitOps way -> a canary beside it while the stable revision scales 4 -> 2 -> 4 ->
the canary removed. `kubectl get -w -o json` records every condition transition
(a watch delivers every version of the object, which polling would not); the
test process sends requests to the client Service's ClusterIP (kube-proxy picks
a ready pod per fresh connection) the whole time. Ready (and PredictorReady)
must never be False once the service was first Ready, no request may fail, and
every phase ends in its documented state.

Without a Gateway (the chart as conftest installs it) the canary's share is its
share of the ready pods: the analysis steps (20, 50) are its verdicts' percents,
not measured shares.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ascend_mlops.api import constants
from ascend_mlops.builders import inference
from tests.cluster import realcluster as rc
from tests.sandbox.test_rollout_sequence import (
    ANALYSIS,
    NAME,
    PLURAL,
    Recorder,
    condition,
    keep_loading,
    model,
    run_sequence,
    write_models,
)
from tests.sandbox.test_traffic_split import Tally, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

# Each phase takes 5-40 s on a 2-core node; a phase that does not end in this time is stuck.
PHASE_TIMEOUT = 90.0
POLL = 0.5  # between kubectl calls of a wait (each is a process on the two cores the servers use)
# 4 stable pods + a canary + the one a rolling update adds: 50m each fits beside the operator on 2 cores.
SMALL = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


@dataclass
class Service:
    """The InferenceService under test: kubectl for changes, the watch's newest version for waits."""

    cluster: rc.Cluster
    ns: str
    recorder: Recorder
    tally: Tally
    latest: dict[str, Any] = field(default_factory=dict)  # the newest version the watch delivered

    def status(self) -> dict[str, Any]:
        return dict(self.latest.get("status") or {})

    async def kubectl(self, *args: str) -> str:
        return await asyncio.to_thread(self.cluster.kubectl, *args)

    async def patch(self, spec: dict[str, Any]) -> None:
        await self.kubectl("patch", PLURAL, NAME, "-n", self.ns, "--type=merge", "-p", json.dumps({"spec": spec}))

    async def until(self, probe: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            s = self.status()
            return s if probe(s) else None

        try:
            return await eventually(check, timeout=PHASE_TIMEOUT, what=what)
        except AssertionError as e:
            raise await self.failure(str(e)) from None

    async def until_deployments(self, want: dict[str, tuple[str, int]], what: str) -> None:
        async def check() -> bool:
            if await self.deployments() == want:
                return True
            await asyncio.sleep(POLL)
            return False

        try:
            await eventually(check, timeout=PHASE_TIMEOUT, what=what)
        except AssertionError as e:
            raise await self.failure(str(e)) from None

    async def deployments(self) -> dict[str, tuple[str | None, int]]:
        found = await asyncio.to_thread(self.cluster.list, "deployments", self.ns)
        return {
            d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["annotations"].get(constants.ANNOTATION_MODEL_DIGEST), d["spec"]["replicas"])
            for d in found
        }

    async def failure(self, what: str) -> AssertionError:
        described = await asyncio.to_thread(self.cluster.describe, self.ns)
        return AssertionError(f"{what}\nstatus: {json.dumps(self.status())[:4000]}\ndeployments: {await self.deployments()}\n"
                              f"transitions: {self.recorder.transitions}\n{described}")


async def watch(svc: Service) -> None:
    """Every version of the namespace's InferenceServices, as `kubectl get -w -o json` prints them (one JSON document
    each, indented); ours go to the recorder. kubectl ending before the test stops it is a failure."""
    process = await asyncio.create_subprocess_exec(
        "kubectl", "get", PLURAL, "-n", svc.ns, "--watch", "-o", "json", env=svc.cluster.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    text, decoder, buffer = codecs.getincrementaldecoder("utf-8")(), json.JSONDecoder(), ""
    try:
        while chunk := await process.stdout.read(1 << 16):
            buffer += text.decode(chunk)
            while buffer := buffer.lstrip():
                try:
                    obj, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break  # the rest of the document is still to come
                buffer = buffer[end:]
                for item in obj.get("items", []) if str(obj.get("kind", "")).endswith("List") else [obj]:
                    if item.get("metadata", {}).get("name") == NAME:
                        svc.latest = item
                        svc.recorder.see(item)
        stderr = (await process.stderr.read()).decode()[-2000:]
        raise AssertionError(f"the watch ended early: kubectl exited {await process.wait()}: {stderr}")
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@pytest.fixture
async def service(cluster: rc.Cluster) -> AsyncIterator[Service]:
    with cluster.namespace("rollout") as ns:
        base = rc.DATA_ROOT / ns / "rollout"
        # The sandbox's layout: write_models(root) writes root/data/pvc/data/models/<version>, the claim "data".
        write_models(base)
        rc.chown_for_pods(base)
        cluster.claim(ns, "data", host_dir=base / "data" / "pvc" / "data")
        svc = Service(cluster, ns, Recorder(), Tally())
        watcher = asyncio.create_task(watch(svc))
        stop = asyncio.Event()
        loader: asyncio.Task[None] | None = None
        try:
            svc.recorder.started = time.monotonic()  # transitions' times from the creation
            cluster.apply({
                "apiVersion": constants.API_VERSION, "kind": constants.INFERENCE_SERVICE, "metadata": {"name": NAME, "namespace": ns},
                "spec": {
                    "runtime": "tensorflow", "model": model("V001"), "replicas": 4, "resources": SMALL,
                    "canary": {**model("V002"), "trafficPercent": 20, "analysis": ANALYSIS},
                },
            })
            await svc.until(lambda s: condition(s, "Ready") == ("True", "MinimumReplicasAvailable"), "the service Ready")
            url = await asyncio.to_thread(rc.http_url, cluster, inference.service_name(NAME), ns)
            loader = asyncio.create_task(keep_loading(url, svc.tally, stop))
            yield svc
            if watcher.done():
                raise AssertionError("the watch stopped before the test ended: transitions may be missing") from watcher.exception()
        finally:
            stop.set()
            if loader is not None:
                await loader
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    shutil.rmtree(rc.DATA_ROOT / ns, ignore_errors=True)


async def test_ready_stays_true_through_canary_promotion_rollback_gitops_and_scaling(service: Service) -> None:
    await run_sequence(service, "on the real node")
