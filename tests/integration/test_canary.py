"""InferenceService spec.canary against the API: children and traffic at 0/20/100 percent, Service and
HTTPRoute modes, automatic rollback, metric analysis read from real /metrics endpoints, promotion
(automatic and GitOps ending in the same state), and an operator restart in the middle."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from ascend_mlops.api import constants, contract
from ascend_mlops.workloads.server.metrics import ServerMetrics
from tests.integration.conftest import Backend, Cluster, Operator, Reconciliations, eventually

KIND = constants.INFERENCE_SERVICE
NAME = "flowers"
STABLE = "flowers-predictor"
CANARY = "flowers-predictor-canary"
V1 = "pvc://data/runs/flowers/V001/om/model"
V2 = "pvc://data/runs/flowers/V002/om/model"
V3 = "pvc://data/runs/flowers/V003/om/model"
BOTH = {
    constants.LABEL_MANAGED_BY: constants.PRODUCT,
    constants.LABEL_OWNER_KIND: KIND,
    constants.LABEL_OWNER_NAME: NAME,
}


def isvc(canary: dict[str, Any] | None = None, model: str = V1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"uri": model}, **spec}
    if canary is not None:
        body["canary"] = canary
    return {"apiVersion": constants.API_VERSION, "kind": KIND, "metadata": {"name": NAME}, "spec": body}


async def start_operator(backend: Backend) -> Operator:
    op = Operator(backend)
    await op.start()
    return op


@pytest.fixture
async def gw_operator(backend: Backend, gateway_api: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Operator]:
    """The operator of a cluster with the Gateway API installed (HTTPRoute served) and a Gateway named."""
    monkeypatch.setenv("ASCEND_MLOPS_GATEWAY", "gateway-system/public")
    monkeypatch.setenv("ASCEND_MLOPS_DOMAIN", "models.example.com")
    op = await start_operator(backend)
    try:
        yield op
    finally:
        with contextlib.suppress(Exception):
            await op.stop()


# --- playing the Deployment controller and the kubelet ---------------------------------------------
async def get_deployment(cluster: Cluster, name: str) -> dict[str, Any] | None:
    return await cluster.client.get("apps/v1", "deployments", cluster.namespace, name)


def model_of(dep: dict[str, Any] | None) -> str | None:
    return ((((dep or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations", {}).get(constants.ANNOTATION_MODEL_DIGEST)


async def roll_out(cluster: Cluster, name: str, ready: int | None = None, *, pod_status: dict[str, Any] | None = None,
                   metrics_port: int | None = None) -> list[str]:
    """Make `name`'s pods exist and be ready (or `pod_status`), and report it on the Deployment."""
    dep = await eventually(lambda: get_deployment(cluster, name), what=f"deployment {name}")
    replicas = int(dep["spec"]["replicas"])
    ready = replicas if ready is None else ready
    template = dep["spec"]["template"]
    revision = template["metadata"]["annotations"][constants.ANNOTATION_MODEL_DIGEST].split("/")[-3].lower()
    names = []
    for i in range(replicas):
        pod_name = f"{name}-{revision}-{i}"
        names.append(pod_name)
        annotations = dict(template["metadata"]["annotations"])
        if metrics_port is not None:
            # The fake server answers /metrics where the pod's "metrics" port is (what the analysis reads).
            annotations[constants.ANNOTATION_SANDBOX_PORTS] = json.dumps({str(contract.DEFAULT_METRICS_PORT): metrics_port})
        if await cluster.pod(pod_name) is None:
            # Owned by the Deployment, as the sandbox's controller does (a real garbage collector
            # deletes a pod whose owner does not exist, such as a made-up ReplicaSet).
            await cluster.client.create("v1", "pods", cluster.namespace, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": pod_name, "labels": template["metadata"]["labels"], "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": dep["metadata"]["uid"], "controller": True}],
                },
                "spec": template["spec"],
            })
        status = pod_status or {"ready": i < ready, "restartCount": 0, "state": {"running": {}}}
        await cluster.set_pod_status(pod_name, {
            "phase": "Running", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if status.get("ready") else "False"}],
            "containerStatuses": [{"name": "server", **status}],
        })
    await cluster.client.patch("apps/v1", "deployments", cluster.namespace, name, {"status": {
        "observedGeneration": dep["metadata"]["generation"], "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": ready, "availableReplicas": ready,
    }}, subresource="status")
    return names


async def delete_pods(cluster: Cluster, names: list[str]) -> None:
    for name in names:
        await cluster.client.delete("v1", "pods", cluster.namespace, name)


async def status(cluster: Cluster) -> dict[str, Any]:
    obj = await cluster.get_cr(KIND, NAME)
    return dict((obj or {}).get("status") or {})


async def traffic(cluster: Cluster) -> dict[str, int]:
    return {t["revision"]: t["percent"] for t in (await status(cluster)).get("traffic") or []}


async def wait_traffic(cluster: Cluster, want: dict[str, int], timeout: float = 15.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        s = await status(cluster)
        return s if {t["revision"]: t["percent"] for t in s.get("traffic") or []} == want else None

    return await eventually(probe, timeout, f"traffic {want}")


async def selector(cluster: Cluster, name: str = STABLE) -> dict[str, str]:
    svc = await cluster.client.get("v1", "services", cluster.namespace, name)
    return dict(((svc or {}).get("spec") or {}).get("selector") or {})


async def wait_selector(cluster: Cluster, want: dict[str, str]) -> None:
    async def probe() -> bool:
        return await selector(cluster) == want

    await eventually(probe, what=f"client Service selecting {want}")


def component(value: str) -> dict[str, str]:
    return {**BOTH, constants.LABEL_COMPONENT: value}


# --- Service mode ------------------------------------------------------------------------------------
async def test_children_and_traffic_at_0_20_and_100_percent(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(isvc({"uri": V2, "trafficPercent": 20}))
    await roll_out(cluster, STABLE)
    canary = await eventually(lambda: get_deployment(cluster, CANARY), what="canary deployment")
    stable = await get_deployment(cluster, STABLE)
    assert stable is not None and model_of(stable) == V1 and model_of(canary) == V2
    # Each revision selects only its own pods; both ask for the same device.
    assert canary["spec"]["selector"]["matchLabels"] == component("predictor-canary")
    assert stable["spec"]["selector"]["matchLabels"] == component("predictor")
    assert canary["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["huawei.com/Ascend310"] == "1"
    assert await eventually(lambda: selector(cluster, "flowers-predictor-stable"), what="stable Service") == component("predictor")
    assert await eventually(lambda: selector(cluster, "flowers-predictor-canary"), what="canary Service") == component("predictor-canary")
    # Not ready yet: the client Service selects the stable revision only, and the canary gets 0.
    s = await wait_traffic(cluster, {"stable": 100, "canary": 0})
    assert s["trafficSplit"] == "Service"
    await wait_selector(cluster, component("predictor"))
    await cluster.wait_condition(KIND, NAME, "CanaryReady", "False", "DeploymentProgressing")

    await roll_out(cluster, CANARY)
    # Without a Gateway the client Service selects both revisions: 1 ready stable, 1 ready canary -> 50/50.
    s = await wait_traffic(cluster, {"stable": 50, "canary": 50})
    await wait_selector(cluster, BOTH)
    assert [(t["revision"], t["model"], t["readyReplicas"]) for t in s["traffic"]] == [("stable", V1, 1), ("canary", V2, 1)]
    assert s["canary"]["state"] == "Progressing"
    await cluster.wait_condition(KIND, NAME, "CanaryReady", "True")
    await cluster.wait_condition(KIND, NAME, "Ready", "True")

    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"trafficPercent": 100}}})
    await wait_traffic(cluster, {"stable": 0, "canary": 100})
    await wait_selector(cluster, component("predictor-canary"))
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"trafficPercent": 0}}})
    await wait_traffic(cluster, {"stable": 100, "canary": 0})
    await wait_selector(cluster, component("predictor"))

    # Removing spec.canary removes its Deployment and Services; the stable revision is untouched.
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": None}})
    await wait_traffic(cluster, {"stable": 100})
    await eventually(lambda: _gone(cluster, "apps/v1", "deployments", CANARY), what="canary deployment gone")
    assert await cluster.client.get("v1", "services", cluster.namespace, "flowers-predictor-canary") is None
    after = await get_deployment(cluster, STABLE)
    assert after is not None and after["metadata"]["generation"] == stable["metadata"]["generation"]
    assert await cluster.condition(KIND, NAME, "CanaryReady") is None
    assert "canary" not in await status(cluster)


async def _gone(cluster: Cluster, api_version: str, plural: str, name: str) -> bool:
    return await cluster.client.get(api_version, plural, cluster.namespace, name) is None


async def test_a_crash_looping_canary_is_rolled_back_and_a_restart_changes_nothing(
    cluster: Cluster, operator: Operator, reconciliations: Reconciliations
) -> None:
    await cluster.create(isvc({"uri": V2, "trafficPercent": 20, "replicas": 2}))
    await roll_out(cluster, STABLE)
    await cluster.wait_condition(KIND, NAME, "Ready", "True")
    crash = {
        "ready": False, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": contract.EXIT_INVALID_MODEL, "reason": "Error",
                                     "message": json.dumps({"error": "model.om is not an offline model for Ascend310"})}},
    }
    pods = await roll_out(cluster, CANARY, ready=0, pod_status=crash)
    rolled = await cluster.wait_condition(KIND, NAME, "CanaryRolledBack", "True", "ModelLoadFailed")
    assert "not an offline model" in rolled["message"]
    # Scaled away: its devices go back; the service as a whole stays Ready on the stable revision.
    canary = await eventually(
        lambda: _scaled_to_zero(cluster), what="canary scaled to 0"
    )
    assert model_of(canary) == V2
    await delete_pods(cluster, pods)  # what the ReplicaSet controller does at 0 replicas
    await cluster.wait_condition(KIND, NAME, "Ready", "True")
    await wait_selector(cluster, component("predictor"))
    s = await wait_traffic(cluster, {"stable": 100, "canary": 0})
    assert s["canary"]["state"] == "RolledBack" and s["canary"]["reason"] == "ModelLoadFailed"
    # The Service goes with the rollback, not necessarily before the status says 0 percent.
    await eventually(lambda: _gone(cluster, "v1", "services", "flowers-predictor-canary"), what="canary Service gone")
    reasons = {e["reason"] for e in await cluster.events_for(NAME)}
    assert "ModelLoadFailed" in reasons

    # A restart resumes from the cluster: the canary stays rolled back, nothing is written again.
    before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in await cluster.client.list("apps/v1", "deployments", cluster.namespace)}
    before_status = await status(cluster)
    await operator.stop()
    stopped = reconciliations.mark()
    await operator.start()  # what operator.restart() does, with the mark in between
    await eventually(lambda: reconciliations.since(KIND, stopped), what="a reconciliation by the restarted operator")
    after = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in await cluster.client.list("apps/v1", "deployments", cluster.namespace)}
    assert after == before
    assert (await status(cluster))["canary"] == before_status["canary"]

    # A new canary model starts again.
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"uri": V3}}})
    await eventually(lambda: _canary_model(cluster, V3), what="canary rolled to V003")
    await cluster.wait_condition(KIND, NAME, "CanaryReady", "False", "DeploymentProgressing")
    assert await cluster.condition(KIND, NAME, "CanaryRolledBack") is None


async def _scaled_to_zero(cluster: Cluster) -> dict[str, Any] | None:
    dep = await get_deployment(cluster, CANARY)
    return dep if dep is not None and dep["spec"]["replicas"] == 0 else None


async def _canary_model(cluster: Cluster, model: str) -> dict[str, Any] | None:
    dep = await get_deployment(cluster, CANARY)
    return dep if model_of(dep) == model and dep and dep["spec"]["replicas"] > 0 else None


async def test_an_unschedulable_canary_is_rolled_back(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(isvc({"uri": V2, "trafficPercent": 20}))
    await roll_out(cluster, STABLE)
    dep = await eventually(lambda: get_deployment(cluster, CANARY), what="canary deployment")
    template = dep["spec"]["template"]
    await cluster.client.create("v1", "pods", cluster.namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "flowers-canary-pending", "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    })
    await cluster.set_pod_status("flowers-canary-pending", {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient huawei.com/Ascend310.",
    }]})
    rolled = await cluster.wait_condition(KIND, NAME, "CanaryRolledBack", "True", "Unschedulable")
    assert "Insufficient huawei.com/Ascend310" in rolled["message"]
    await eventually(lambda: _scaled_to_zero(cluster), what="canary scaled to 0")
    await cluster.wait_condition(KIND, NAME, "Ready", "True")


# --- HTTPRoute mode ----------------------------------------------------------------------------------
async def route(cluster: Cluster) -> dict[str, Any] | None:
    return await cluster.client.get(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, cluster.namespace, NAME)


def weights(r: dict[str, Any] | None) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in (r or {}).get("spec", {}).get("rules", [{}])[0].get("backendRefs", [])}


async def test_gateway_mode_gives_exact_weights_on_an_httproute(cluster: Cluster, gw_operator: Operator) -> None:
    await cluster.create(isvc())
    r = await eventually(lambda: route(cluster), what="HTTPRoute")
    assert r["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": "public"}]
    assert r["spec"]["hostnames"] == [f"flowers.{cluster.namespace}.models.example.com"]
    assert weights(r) == {STABLE: 1}
    await roll_out(cluster, STABLE)

    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"uri": V2, "trafficPercent": 20}}})
    await eventually(lambda: get_deployment(cluster, CANARY), what="canary deployment")

    async def weighted(want: dict[str, int]) -> dict[str, Any] | None:
        current = await route(cluster)
        return current if weights(current) == want else None

    await eventually(lambda: weighted({"flowers-predictor-stable": 100, "flowers-predictor-canary": 0}), what="canary at 0 until ready")
    await roll_out(cluster, CANARY)
    await eventually(lambda: weighted({"flowers-predictor-stable": 80, "flowers-predictor-canary": 20}), what="80/20")
    s = await wait_traffic(cluster, {"stable": 80, "canary": 20})
    assert s["trafficSplit"] == "HTTPRoute" and s["canary"]["percent"] == 20
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"trafficPercent": 100}}})
    await eventually(lambda: weighted({"flowers-predictor-stable": 0, "flowers-predictor-canary": 100}), what="0/100")
    await wait_traffic(cluster, {"stable": 0, "canary": 100})
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"trafficPercent": 0}}})
    await eventually(lambda: weighted({"flowers-predictor-stable": 100, "flowers-predictor-canary": 0}), what="100/0")
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": None}})
    await eventually(lambda: weighted({STABLE: 1}), what="back to one backend")


async def test_gateway_setting_without_the_gateway_api_is_a_clear_condition(
    backend: Backend, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASCEND_MLOPS_GATEWAY", "gateway-system/public")
    op = await start_operator(backend)
    try:
        await cluster.create(isvc())
        failed = await cluster.wait_condition(KIND, NAME, "Ready", "False", "ReconcileError")
        assert "ASCEND_MLOPS_GATEWAY" in failed["message"] and "HTTPRoute" in failed["message"]
    finally:
        await op.stop()


# --- analysis against real /metrics endpoints ----------------------------------------------------------
class FakeServer:
    """The server's own metrics (ServerMetrics) on a real HTTP endpoint, fed as if requests arrived."""

    def __init__(self, error_share: float) -> None:
        self.metrics = ServerMetrics()
        self.error_share = error_share
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.served = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(contract.METRICS_PATH, self._metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._task = asyncio.create_task(self._traffic())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), content_type="text/plain")

    async def _traffic(self) -> None:
        while True:
            for _ in range(10):
                self.served += 1
                # Spread evenly: every window of a few dozen requests has its share of 5xx.
                failed = int(self.served * self.error_share) != int((self.served - 1) * self.error_share)
                self.metrics.requests.labels("/", "POST", "500" if failed else "200").inc()
                self.metrics.request_seconds.labels("/").observe(0.02)
            self.metrics.requests.labels("/v2/health/ready", "GET", "200").inc()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._runner:
            await self._runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, FakeServer]]:
    made = {"stable": FakeServer(0.0), "healthy": FakeServer(0.0), "failing": FakeServer(0.2)}
    for s in made.values():
        await s.start()
    try:
        yield made
    finally:
        for s in made.values():
            await s.stop()


ANALYSIS = {"intervalSeconds": 1, "steps": [20, 60, 100], "maxErrorRate": 0.05, "maxLatencyP99Ms": 500, "minRequests": 5}


async def test_analysis_rolls_back_a_canary_that_answers_5xx(cluster: Cluster, operator: Operator, servers: dict[str, FakeServer]) -> None:
    await cluster.create(isvc({"uri": V2, "analysis": ANALYSIS}))
    await roll_out(cluster, STABLE, metrics_port=servers["stable"].port)
    await roll_out(cluster, CANARY, metrics_port=servers["failing"].port)
    rolled = await cluster.wait_condition(KIND, NAME, "CanaryRolledBack", "True", "AnalysisFailed", timeout=60)
    assert rolled["message"].startswith("at 20 percent: 5xx share ") and "> maxErrorRate 5.0%" in rolled["message"]
    s = await status(cluster)
    *waits, decision = s["canary"]["decisions"]
    assert all(w["decision"] == "Wait" for w in waits)  # too few requests read yet, on a busy machine
    assert decision["decision"] == "RollBack" and decision["percent"] == 20 and decision["step"] == 0
    assert decision["canary"]["requests"] >= 5 and 0.1 <= decision["canary"]["errorRate"] <= 0.3
    assert decision["stable"]["errors"] == 0 and decision["stable"]["requests"] > 0
    assert decision["canary"]["latencyP99Ms"] <= 25
    await eventually(lambda: _scaled_to_zero(cluster), what="canary scaled to 0")
    assert (await cluster.condition(KIND, NAME, "Ready") or {}).get("status") == "True"
    assert "AnalysisFailed" in {e["reason"] for e in await cluster.events_for(NAME)}


async def test_a_healthy_canary_walks_every_step_to_promotion_across_a_restart(
    cluster: Cluster, operator: Operator, servers: dict[str, FakeServer]
) -> None:
    await cluster.create(isvc({"uri": V2, "analysis": ANALYSIS}))
    stable_pods = await roll_out(cluster, STABLE, metrics_port=servers["stable"].port)
    await roll_out(cluster, CANARY, metrics_port=servers["healthy"].port)
    await wait_traffic(cluster, {"stable": 50, "canary": 50})  # Service mode: by ready replicas (wanted: 20)

    async def at_step(n: int) -> dict[str, Any] | None:
        s = await status(cluster)
        return s if (s.get("canary") or {}).get("step") == n else None

    await eventually(lambda: at_step(1), 60, "step 2 (60 percent)")
    await operator.restart()  # mid-analysis: the baseline and the step are in status
    promoting = await cluster.wait_condition(KIND, NAME, "CanaryPromoted", "True", "AnalysisPassed", timeout=60)
    assert "every step passed" in promoting["message"]
    s = await status(cluster)
    verdicts = [d for d in s["canary"]["decisions"] if d["decision"] != "Wait"]  # Wait: too few requests read yet
    assert [(d["decision"], d["percent"]) for d in verdicts] == [("Advance", 20), ("Advance", 60), ("Promote", 100)]
    assert all(d["canary"]["errors"] == 0 and d["canary"]["requests"] >= 5 for d in verdicts)
    # Promoting: the canary takes every request while the stable Deployment rolls to its model in place.
    stable = await eventually(lambda: _stable_model(cluster, V2), what="stable rolled to V002")
    assert stable["spec"]["replicas"] == 1
    await wait_selector(cluster, component("predictor-canary"))
    await cluster.wait_condition(KIND, NAME, "Ready", "True")  # the canary serves meanwhile
    await delete_pods(cluster, stable_pods)
    await roll_out(cluster, STABLE, metrics_port=servers["stable"].port)
    await eventually(lambda: _gone(cluster, "apps/v1", "deployments", CANARY), what="canary removed after promotion")
    s = await wait_traffic(cluster, {"stable": 100})
    assert s["traffic"][0]["model"] == V2 and s["model"]["uri"] == V2 and s["canary"]["state"] == "Promoted"
    await wait_selector(cluster, component("predictor"))
    reasons = [e["reason"] for e in await cluster.events_for(NAME)]
    assert reasons.count("StepPassed") >= 2 and "AnalysisPassed" in reasons and "Promoted" in reasons

    # The promotion holds while spec.model still names V001: a next canary does not roll the stable revision back.
    generation = (await get_deployment(cluster, STABLE) or {})["metadata"]["generation"]
    assert (await status(cluster))["promoted"]["uri"] == V2
    await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"uri": V3, "analysis": None, "trafficPercent": 10}}})
    await eventually(lambda: _canary_model(cluster, V3), what="a next canary, V003")
    assert model_of(await get_deployment(cluster, STABLE)) == V2
    # GitOps makes it permanent: spec.model := the canary's model, no spec.canary. Nothing rolls.
    await cluster.patch_cr(KIND, NAME, {"spec": {"model": {"uri": V2}, "canary": None}})
    await eventually(lambda: _no_canary_status(cluster), what="canary status cleared")
    after = await get_deployment(cluster, STABLE)
    assert after is not None and after["metadata"]["generation"] == generation
    assert "promoted" not in await status(cluster)
    await eventually(lambda: _gone(cluster, "apps/v1", "deployments", CANARY), what="V003 canary removed")
    await assert_promoted(cluster)


async def _stable_model(cluster: Cluster, model: str) -> dict[str, Any] | None:
    dep = await get_deployment(cluster, STABLE)
    return dep if model_of(dep) == model else None


async def _no_canary_status(cluster: Cluster) -> bool:
    s = await status(cluster)
    return "canary" not in s and [t["revision"] for t in s.get("traffic") or []] == ["stable"]


async def children(cluster: Cluster) -> dict[str, Any]:
    deps = {d["metadata"]["name"]: (model_of(d), d["spec"]["replicas"]) for d in await cluster.client.list("apps/v1", "deployments", cluster.namespace)}
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in await cluster.client.list("v1", "services", cluster.namespace)}
    s = await status(cluster)
    return {"deployments": deps, "services": services, "traffic": s.get("traffic"), "model": s.get("model")}


async def test_gitops_promotion_ends_where_the_automatic_one_does(
    cluster: Cluster, operator: Operator, reconciliations: Reconciliations
) -> None:
    await cluster.create(isvc({"uri": V2, "trafficPercent": 20}))
    stable_pods = await roll_out(cluster, STABLE)
    await roll_out(cluster, CANARY)
    await wait_traffic(cluster, {"stable": 50, "canary": 50})
    # The GitOps way: spec.model := the canary's model, spec.canary removed, in one apply.
    await cluster.patch_cr(KIND, NAME, {"spec": {"model": {"uri": V2}, "canary": None}})
    await eventually(lambda: _stable_model(cluster, V2), what="stable rolled to V002")
    # The canary keeps serving (100 percent) while the stable revision rolls: no request needs a missing pod.
    await wait_traffic(cluster, {"stable": 0, "canary": 100})
    assert await get_deployment(cluster, CANARY) is not None
    await wait_selector(cluster, component("predictor-canary"))
    await cluster.wait_condition(KIND, NAME, "Ready", "True")
    # What a real Deployment controller reports first: the new generation seen, the old pod still
    # ready, no pod of the new template yet (so no updatedReplicas: the apiserver omits zero counts).
    # That is no rollout: the promotion goes on, the canary keeps serving.
    rolling = await get_deployment(cluster, STABLE)
    assert rolling is not None
    patched = reconciliations.mark()
    await cluster.client.patch("apps/v1", "deployments", cluster.namespace, STABLE, {"status": {
        "observedGeneration": rolling["metadata"]["generation"], "replicas": 1, "updatedReplicas": None,
        "readyReplicas": 1, "availableReplicas": 1,
    }}, subresource="status")
    # Once a reconciliation that started after that status has finished:
    await eventually(lambda: reconciliations.since(KIND, patched), what="a reconciliation after the Deployment's status")
    s = await status(cluster)
    assert (s.get("canary") or {}).get("state") == "Promoting", s.get("canary")
    assert await get_deployment(cluster, CANARY) is not None
    await delete_pods(cluster, stable_pods)
    await roll_out(cluster, STABLE)
    await eventually(lambda: _gone(cluster, "apps/v1", "deployments", CANARY), what="canary removed")
    await eventually(lambda: _no_canary_status(cluster), what="canary status cleared")
    await assert_promoted(cluster)


async def assert_promoted(cluster: Cluster) -> None:
    """The state both promotions end in: one Deployment serving V002, one Service, all traffic to it."""
    state = await children(cluster)
    assert state["deployments"] == {STABLE: (V2, 1)}
    assert state["services"] == {STABLE: component("predictor")}
    assert state["traffic"] == [{"revision": "stable", "model": V2, "percent": 100, "replicas": 1, "readyReplicas": 1}]
    assert state["model"]["uri"] == V2
