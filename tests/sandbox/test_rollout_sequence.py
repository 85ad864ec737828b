"""Ready never lies through a rollout (issue 21): the real operator, real TensorFlow servers, load all along.

One InferenceService (runtime tensorflow, 4 stable replicas, tiny 8x8 graphs)
goes through: a canary at 20 percent with analysis -> its steps -> automatic
promotion -> a next canary whose model cannot load -> rollback -> a good
canary promoted the GitOps way -> a canary beside it while the stable revision
scales 4 -> 2 -> 4 -> the canary removed. A watch records every condition
transition; requests go through the client Service on fresh connections the
whole time. Ready (and PredictorReady) must never be False once the service
was first Ready, no request may fail, and every phase ends in its documented
state. Each model's class names carry its version (`red`, `red-v2`, ...), so
every answer says which model gave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from ascend_mlops.api import constants
from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox.cluster import Sandbox, SandboxConfig, sandbox_processes
from tests.helpers import REPO_ROOT, eventually
from tests.sandbox.test_traffic_split import Tally, classify
from tests.workloads.server import tinymodel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "flowers"
NS = "default"
PLURAL = "inferenceservices"
WORKERS = 2  # concurrent clients: enough to feed the analysis, light on two shared cores
PAUSE = 0.02  # between a client's requests: the servers, the operator and the sandbox share two cores
PHASE_TIMEOUT = 120.0
MORE_LOAD = 20  # requests after the last change
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
ANALYSIS = {"intervalSeconds": 1, "steps": [20, 50], "maxErrorRate": 0.01, "minRequests": 3}


def model(version: str) -> dict[str, str]:
    return {"uri": f"pvc://data/models/{version}/frozen_graph", "labels": f"pvc://data/models/{version}/labels.txt"}


def uri(version: str) -> str:
    return model(version)["uri"]


def write_models(root: Path) -> None:
    """V001 (red), V002 (red-v2), V004 (red-v4), V005 (red-v5): good; V003: a graph that cannot load."""
    folder = root / "data" / "pvc" / "data" / "models"
    for version, suffix in (("V001", ""), ("V002", "-v2"), ("V004", "-v4"), ("V005", "-v5")):
        written = tinymodel.write_version_dir(folder / version)
        (written / "labels.txt").write_text("".join(f"{c}{suffix}\n" for c in tinymodel.CLASSES))
    broken = tinymodel.write_version_dir(folder / "V003")
    (broken / "frozen_graph" / "frozen_graph.pb").write_bytes(b"not a GraphDef")


@dataclass
class Recorder:
    """Every change of a condition's (status, reason), from the watch."""

    started: float = field(default_factory=time.monotonic)
    last: dict[str, tuple[str, str]] = field(default_factory=dict)
    transitions: list[tuple[float, str, str, str, str]] = field(default_factory=list)  # (t, type, status, reason, message)
    ready_once: bool = False
    lies: list[str] = field(default_factory=list)  # Ready/PredictorReady False after the first Ready, or a simulator mention

    def see(self, obj: dict[str, Any]) -> None:
        for c in (obj.get("status") or {}).get("conditions") or []:
            now = (c.get("status", ""), c.get("reason", ""))
            if self.last.get(c["type"]) == now:
                continue
            self.last[c["type"]] = now
            entry = (round(time.monotonic() - self.started, 1), c["type"], now[0], now[1], c.get("message", ""))
            self.transitions.append(entry)
            if c["type"] == "Ready" and now[0] == "True":
                self.ready_once = True
            if self.ready_once and c["type"] in ("Ready", "PredictorReady") and now[0] != "True":
                self.lies.append(str(entry))
            if "simulator" in c.get("message", ""):
                self.lies.append(f"a tensorflow service names the simulator: {entry}")

    def count(self, type_: str) -> int:
        return sum(1 for t in self.transitions if t[1] == type_)


@dataclass
class Service:
    client: KubeClient
    recorder: Recorder
    tally: Tally

    async def status(self) -> dict[str, Any]:
        return dict(((await self.client.get(constants.API_VERSION, PLURAL, NS, NAME)) or {}).get("status") or {})

    async def patch(self, spec: dict[str, Any]) -> None:
        await self.client.patch(constants.API_VERSION, PLURAL, NS, NAME, {"spec": spec})

    async def until(self, probe: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            s = await self.status()
            return s if probe(s) else None

        try:
            return await eventually(check, timeout=PHASE_TIMEOUT, what=what)
        except AssertionError as e:
            pods = [(p["metadata"]["name"], p["metadata"].get("annotations", {}).get(constants.ANNOTATION_MODEL_DIGEST), p.get("status"))
                    for p in (await self.client.listing("v1", "pods", NS)).get("items", [])]
            raise AssertionError(f"{e}\nstatus: {await self.status()}\ndeployments: {await self.deployments()}\npods: {pods}\n"
                                 f"transitions: {self.recorder.transitions}") from None

    async def until_deployments(self, want: dict[str, tuple[str, int]], what: str) -> None:
        async def check() -> bool:
            return await self.deployments() == want

        await eventually(check, timeout=PHASE_TIMEOUT, what=what)

    async def deployments(self) -> dict[str, tuple[str | None, int]]:
        found = await self.client.listing("apps/v1", "deployments", NS)
        return {
            d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["annotations"].get(constants.ANNOTATION_MODEL_DIGEST), d["spec"]["replicas"])
            for d in found.get("items", [])
        }


def condition(s: dict[str, Any], type_: str) -> tuple[str, str] | None:
    for c in s.get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


def settled(s: dict[str, Any]) -> bool:
    """Ready and nothing in progress (kstatus Current)."""
    return condition(s, "Ready") == ("True", "MinimumReplicasAvailable") and (condition(s, "Reconciling") or ("",))[0] == "False"


def traffic(s: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(t["revision"], t["model"], t["percent"]) for t in s.get("traffic") or []]


async def keep_loading(url: str, tally: Tally, stop: asyncio.Event) -> None:
    connector = aiohttp.TCPConnector(force_close=True, limit=WORKERS)  # fresh connections: the proxy spreads them
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker() -> None:
            while not stop.is_set():
                await classify(session, url, tally)
                await asyncio.sleep(PAUSE)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    root = tmp_path / "sandbox"
    write_models(root)
    async with Sandbox(SandboxConfig(root=root, crd_dirs=(REPO_ROOT / "crds",))) as sandbox, KubeClient(sandbox.url) as client:
        recorder = Recorder()

        async def watch() -> None:
            async for _, obj in client.watch(constants.API_VERSION, PLURAL, NS):
                if obj.get("metadata", {}).get("name") == NAME:
                    recorder.see(obj)

        watcher = asyncio.create_task(watch())
        await client.create(constants.API_VERSION, PLURAL, NS, {
            "apiVersion": constants.API_VERSION, "kind": constants.INFERENCE_SERVICE, "metadata": {"name": NAME},
            "spec": {
                "runtime": "tensorflow", "model": model("V001"), "replicas": 4, "resources": SMALL,
                "canary": {**model("V002"), "trafficPercent": 20, "analysis": ANALYSIS},
            },
        })
        tally, stop = Tally(), asyncio.Event()
        svc = Service(client, recorder, tally)
        await svc.until(lambda s: condition(s, "Ready") == ("True", "MinimumReplicasAvailable"), "the service Ready")

        async def url() -> str | None:
            obj = await client.get("v1", "services", NS, f"{NAME}-predictor")
            return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_URL)

        loader = asyncio.create_task(keep_loading(await eventually(url, timeout=60, what="the Service's URL"), tally, stop))
        try:
            yield svc
        finally:
            stop.set()
            await loader
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    assert sandbox_processes(root) == [], "processes outlived the sandbox"


class Sequenced(Protocol):
    """What the sequence needs of the service under test: the sandbox's (below) or the real node's (tests/cluster)."""

    recorder: Recorder
    tally: Tally

    async def patch(self, spec: dict[str, Any]) -> None: ...
    async def until(self, probe: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]: ...
    async def until_deployments(self, want: dict[str, tuple[str, int]], what: str) -> None: ...
    async def deployments(self) -> dict[str, tuple[str | None, int]]: ...


async def run_sequence(svc: Sequenced, where: str) -> None:
    """The sequence and its assertions, from the service's first Ready (times from its creation, as the transitions')."""
    began = svc.recorder.started
    phases: list[str] = []

    def done(phase: str) -> None:
        phases.append(f"{phase} at {time.monotonic() - began:.0f}s ({svc.tally.total} requests)")

    # 1. Canary V002 at 20 percent, analysis steps, automatic promotion: V002 stable, held in status.promoted.
    s = await svc.until(lambda s: (s.get("canary") or {}).get("state") == "Promoted" and len(traffic(s)) == 1 and settled(s),
                        "the automatic promotion, the canary gone")
    verdicts = [(d["decision"], d["percent"]) for d in s["canary"]["decisions"] if d["decision"] != "Wait"]
    assert verdicts == [("Advance", 20), ("Promote", 50)], s["canary"]["decisions"]
    assert s["promoted"]["uri"] == uri("V002") and traffic(s) == [("stable", uri("V002"), 100)]
    assert "simulated" not in s["model"]
    done("automatic promotion")

    # 2. A next canary whose model cannot load: rolled back, scaled to 0; the stable revision keeps V002.
    await svc.patch({"canary": {**model("V003"), "trafficPercent": 20, "analysis": None}})
    s = await svc.until(lambda s: (condition(s, "CanaryRolledBack") or ("",))[0] == "True" and settled(s), "the rollback")
    assert condition(s, "CanaryRolledBack") in (("True", "ModelLoadFailed"), ("True", "CrashLoopBackOff"))
    assert traffic(s) == [("stable", uri("V002"), 100), ("canary", uri("V003"), 0)]
    await svc.until_deployments({f"{NAME}-predictor": (uri("V002"), 4), f"{NAME}-predictor-canary": (uri("V003"), 0)},
                                "the broken canary scaled to 0")
    done("rollback")

    # 3. A good canary (V004), then GitOps: spec.model := V004, no spec.canary. One Deployment serving V004.
    await svc.patch({"canary": {**model("V004"), "trafficPercent": 20}})
    await svc.until(lambda s: condition(s, "CanaryReady") == ("True", "MinimumReplicasAvailable"), "canary V004 ready")
    await svc.patch({"model": model("V004"), "canary": None})
    s = await svc.until(lambda s: "canary" not in s and "promoted" not in s and traffic(s) == [("stable", uri("V004"), 100)] and settled(s),
                        "the GitOps promotion")
    assert await svc.deployments() == {f"{NAME}-predictor": (uri("V004"), 4)}
    done("GitOps promotion")

    # 4. A canary (V005) beside it while the stable revision scales 4 -> 2 -> 4; then the canary removed.
    await svc.patch({"canary": {**model("V005"), "trafficPercent": 20}})
    await svc.until(lambda s: condition(s, "CanaryReady") == ("True", "MinimumReplicasAvailable"), "canary V005 ready")
    for replicas in (2, 4):
        await svc.patch({"replicas": replicas})
        s = await svc.until(lambda s, n=replicas: s.get("replicas") == n and s.get("readyReplicas") == n and settled(s), f"{replicas} ready")
        done(f"scaled to {replicas}")
    await svc.patch({"canary": None})
    s = await svc.until(lambda s: "canary" not in s and traffic(s) == [("stable", uri("V004"), 100)] and settled(s), "the canary removed")
    assert await svc.deployments() == {f"{NAME}-predictor": (uri("V004"), 4)}
    assert condition(s, "CanaryReady") is None and condition(s, "CanaryRolledBack") is None
    done("canary removed")
    # A little more load after the last change: requests answered (or not) since it.
    served = svc.tally.total + len(svc.tally.failures)

    async def more_load() -> bool:
        return svc.tally.total + len(svc.tally.failures) >= served + MORE_LOAD

    await eventually(more_load, timeout=60, what=f"{MORE_LOAD} more requests after the last change")

    tally, recorder = svc.tally, svc.recorder
    answers = {label.split("-")[-1] if "-" in label else "v1" for label in tally.answers}
    print(f"\nrollout sequence {where}: {recorder.count('Ready')} Ready transitions (the first: False at creation), "
          f"{len(recorder.transitions)} condition transitions, {tally.total} requests, {len(tally.failures)} failed; "
          f"answers by model {dict(tally.answers)}")
    for phase in phases:
        print(f"  {phase}")
    for entry in recorder.transitions:
        print(f"  {entry}")
    assert recorder.ready_once and recorder.lies == [], recorder.lies
    assert tally.failures == [], tally.failures[:5]
    assert tally.total > 100 and {"v1", "v2", "v4", "v5"} <= answers


async def test_ready_stays_true_through_canary_promotion_rollback_gitops_and_scaling(service: Service) -> None:
    await run_sequence(service, "in the sandbox")
