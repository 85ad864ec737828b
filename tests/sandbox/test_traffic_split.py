"""Canary traffic through the sandbox, with real model servers (issue 11's sandbox side; no operator).

Two revisions of a tiny model run as `ascend-mlops serve` pods (the TensorFlow
backend on an 8x8 frozen graph): stable, 3 replicas, class names `red`, ...;
canary, 1 replica, the same graph with class names `red-v2`, ..., so every
answer says which revision gave it. The objects are created through the API
the way the operator creates them: the Deployments `split-predictor` and
`split-predictor-canary`, the per-revision Services, the client Service that
selects both, and an HTTPRoute with weighted backendRefs.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ascend_mlops.api import constants, contract
from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox import gateway as sandbox_gateway
from ascend_mlops.sandbox.apiserver import GATEWAY_CRD_DIR
from ascend_mlops.sandbox.cluster import Sandbox, SandboxConfig, sandbox_processes
from ascend_mlops.settings import Settings
from tests.helpers import REPO_ROOT, eventually
from tests.workloads.server import tinymodel

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAME = "split"
NS = "default"
STABLE_REPLICAS, CANARY_REPLICAS = 3, 1
REQUESTS = 1000
CONCURRENCY = 8
# Through each path, before a pod is deleted and again after it stopped: the deletion happens under
# load, and the test's more than 100 requests a path are reached whatever the machine's speed.
LOAD_REQUESTS = 60
IMAGE = tinymodel.image_bytes("red")


def labels(component: str) -> dict[str, str]:
    return {constants.LABEL_INSTANCE: NAME, constants.LABEL_COMPONENT: component}


def deployment(name: str, component: str, replicas: int, version: Path) -> dict[str, Any]:
    probe = {"httpGet": {"path": contract.HEALTH_READY_PATH, "port": "http"}, "periodSeconds": 1, "failureThreshold": 3}
    container = {
        "name": "server",
        "image": Settings().server_image,
        "args": contract.serve_args(
            model=str(version / contract.FROZEN_GRAPH_DIR), backend="tensorflow", name=NAME,
            labels=str(version / contract.LABELS_FILE),
        ),
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}],
        "ports": [{"name": "http", "containerPort": contract.DEFAULT_SERVER_PORT, "protocol": "TCP"}],
        "startupProbe": {**probe, "httpGet": {**probe["httpGet"], "path": contract.HEALTH_LIVE_PATH}, "failureThreshold": 120},
        "readinessProbe": probe,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels(component)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(component)},
            "template": {"metadata": {"labels": labels(component)}, "spec": {"containers": [container]}},
        },
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def httproute(name: str, backends: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": constants.GATEWAY_API_VERSION, "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "ascend-mlops-system", "name": "sandbox"}],
            "hostnames": [f"{NAME}.{NS}.example.com"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": backend, "port": 80, "weight": weight} for backend, weight in backends],
            }],
        },
    }


@dataclass
class Split:
    sandbox: Sandbox
    client: KubeClient
    service_url: str
    route_url: str


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)  # predicted_label -> count
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.answers.values())

    @property
    def canary_share(self) -> float:
        return sum(n for label, n in self.answers.items() if label.endswith("-v2")) / max(self.total, 1)


async def classify(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    form = aiohttp.FormData()
    form.add_field("images", IMAGE, filename="red.jpg", content_type="image/jpeg")
    try:
        async with session.post(url + "/", data=form) as response:
            text = await response.text()
            if response.status != 200:
                tally.failures.append(f"{response.status}: {text[:200]}")
                return
            tally.answers[json.loads(text)["predicted_label"]] += 1
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        tally.failures.append(f"{type(e).__name__}: {e}")


async def load(
    url: str, *, requests: int | None = None, until: asyncio.Event | None = None, fresh_connections: bool = False,
    tally: Tally | None = None,
) -> Tally:
    """POST the red image `requests` times (or until the event), CONCURRENCY at a time, counting into `tally`."""
    tally = tally if tally is not None else Tally()
    left = [requests if requests is not None else math.inf]
    connector = aiohttp.TCPConnector(force_close=fresh_connections, limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker() -> None:
            while left[0] > 0 and not (until is not None and until.is_set()):
                left[0] -= 1
                await classify(session, url, tally)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return tally


def completed_count(tally: Tally) -> int:
    """Requests answered, well or not."""
    return tally.total + len(tally.failures)


async def completed(route: Tally, service: Tally, n: int, since: tuple[int, int] = (0, 0)) -> bool:
    """At least `n` requests more than `since` completed through the HTTPRoute and through the Service."""
    return completed_count(route) >= since[0] + n and completed_count(service) >= since[1] + n


async def ready_pods(client: KubeClient, component: str) -> list[dict[str, Any]]:
    pods = (await client.listing("v1", "pods", NS, label_selector=f"{constants.LABEL_COMPONENT}={component}")).get("items", [])
    return [
        p for p in pods
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in p.get("status", {}).get("conditions") or [])
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Split]:
    models = tmp_path_factory.mktemp("models")
    stable = tinymodel.write_version_dir(models / "V001")
    canary = tinymodel.write_version_dir(models / "V002")
    (canary / contract.LABELS_FILE).write_text("".join(f"{c}-v2\n" for c in tinymodel.CLASSES))
    root = tmp_path_factory.mktemp("sandbox")
    config = SandboxConfig(root=root, run_operator=False, crd_dirs=(REPO_ROOT / "crds", GATEWAY_CRD_DIR))
    async with Sandbox(config) as sandbox, KubeClient(sandbox.url) as client:
        stable_svc, canary_svc = f"{NAME}-predictor-stable", f"{NAME}-predictor-canary"
        await client.create("apps/v1", "deployments", NS, deployment(f"{NAME}-predictor", constants.COMPONENT_PREDICTOR, STABLE_REPLICAS, stable))
        await client.create("apps/v1", "deployments", NS, deployment(f"{NAME}-predictor-canary", constants.COMPONENT_CANARY, CANARY_REPLICAS, canary))
        await client.create("v1", "services", NS, service(stable_svc, labels(constants.COMPONENT_PREDICTOR)))
        await client.create("v1", "services", NS, service(canary_svc, labels(constants.COMPONENT_CANARY)))
        await client.create("v1", "services", NS, service(f"{NAME}-predictor", {constants.LABEL_INSTANCE: NAME}))  # Service mode: both
        await client.create(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, httproute(NAME, [(stable_svc, 80), (canary_svc, 20)]))

        async def all_ready() -> bool:
            return (
                len(await ready_pods(client, constants.COMPONENT_PREDICTOR)) == STABLE_REPLICAS
                and len(await ready_pods(client, constants.COMPONENT_CANARY)) == CANARY_REPLICAS
            )

        await eventually(all_ready, timeout=120, what="3 stable and 1 canary server ready")

        async def urls() -> tuple[str, str] | None:
            svc = await client.get("v1", "services", NS, f"{NAME}-predictor")
            route = await client.get(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, NAME)
            found = [((o or {}).get("metadata", {}).get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_URL) for o in (svc, route)]
            return (str(found[0]), str(found[1])) if all(found) else None

        service_url, route_url = await eventually(urls, timeout=60, what="the Service's and the HTTPRoute's sandbox URLs")
        yield Split(sandbox, client, service_url, route_url)
    assert sandbox_processes(root) == [], "processes outlived the sandbox"


async def test_pods_carry_their_port_map_and_serve_metrics_there(split: Split) -> None:
    pods = (await split.client.listing("v1", "pods", NS, label_selector=f"{constants.LABEL_INSTANCE}={NAME}")).get("items", [])
    assert len(pods) == STABLE_REPLICAS + CANARY_REPLICAS
    async with aiohttp.ClientSession() as session:
        for pod in pods:
            ports = json.loads(pod["metadata"]["annotations"][constants.ANNOTATION_SANDBOX_PORTS])
            assert set(ports) == {str(contract.DEFAULT_SERVER_PORT)}
            async with session.get(f"http://{pod['status']['podIP']}:{ports['8080']}{contract.METRICS_PATH}") as response:
                assert response.status == 200 and "ascend_mlops_server" in await response.text()


async def test_httproute_splits_each_request_by_weight(split: Split) -> None:
    route = await split.client.get(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, NAME)
    assert route is not None
    parent = route["status"]["parents"][0]
    assert parent["controllerName"] == sandbox_gateway.CONTROLLER_NAME
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}

    started = time.monotonic()
    tally = await load(split.route_url, requests=REQUESTS)  # keep-alive: 8 connections carry all of it
    elapsed = time.monotonic() - started
    assert not tally.failures, tally.failures[:5]
    assert tally.total == REQUESTS
    print(f"HTTPRoute 80/20: canary {tally.canary_share:.1%} of {tally.total} in {elapsed:.1f}s ({tally.answers})")
    assert abs(tally.canary_share - 0.20) <= 0.05

    # A new weight applies to the next requests.
    patch = httproute(NAME, [(f"{NAME}-predictor-stable", 50), (f"{NAME}-predictor-canary", 50)])["spec"]
    await split.client.patch(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, NAME, {"spec": patch})

    async def weights_seen() -> bool:
        live = next(r for r in split.sandbox.kubelet.gateway.routes.values() if r["metadata"]["name"] == NAME)  # type: ignore[union-attr]
        return [b["weight"] for b in live["spec"]["rules"][0]["backendRefs"]] == [50, 50]

    await eventually(weights_seen, timeout=60, what="the gateway to see the new weights")
    tally = await load(split.route_url, requests=200)
    assert not tally.failures and abs(tally.canary_share - 0.50) <= 0.05, tally
    await split.client.patch(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, NAME, {"spec": httproute(NAME, [(f"{NAME}-predictor-stable", 80), (f"{NAME}-predictor-canary", 20)])["spec"]})


async def test_service_splits_by_ready_replicas(split: Split) -> None:
    started = time.monotonic()
    tally = await load(split.service_url, requests=REQUESTS, fresh_connections=True)  # the proxy splits connections
    elapsed = time.monotonic() - started
    assert not tally.failures, tally.failures[:5]
    expected = CANARY_REPLICAS / (STABLE_REPLICAS + CANARY_REPLICAS)
    bound = 3 * math.sqrt(expected * (1 - expected) / tally.total)  # the binomial 3-sigma bound
    print(f"Service 3:1 replicas: canary {tally.canary_share:.1%} of {tally.total} (expected {expected:.0%} ± {bound:.1%}) in {elapsed:.1f}s")
    assert abs(tally.canary_share - expected) <= bound


async def test_no_request_fails_while_a_pod_is_deleted(split: Split) -> None:
    """The deleted pod leaves the endpoints before its SIGTERM; its requests in flight finish."""
    stop = asyncio.Event()
    route_load, service_load = Tally(), Tally()
    through_route = asyncio.create_task(load(split.route_url, until=stop, tally=route_load))
    through_service = asyncio.create_task(load(split.service_url, until=stop, fresh_connections=True, tally=service_load))
    await eventually(lambda: completed(route_load, service_load, LOAD_REQUESTS), timeout=60, what="load through both paths")
    victim = (await ready_pods(split.client, constants.COMPONENT_PREDICTOR))[0]
    name = victim["metadata"]["name"]
    await split.client.delete("v1", "pods", NS, name)
    kubelet = split.sandbox.kubelet
    assert kubelet is not None

    async def gone() -> bool:
        return all(w.name != name for w in kubelet.workers.values()) and all(w.name != name for w, _ in kubelet.terminating.values())

    await eventually(gone, timeout=30, what=f"pod {name} to stop")
    before = completed_count(route_load), completed_count(service_load)
    # and more load after it
    await eventually(lambda: completed(route_load, service_load, LOAD_REQUESTS, since=before), timeout=60,
                     what="load through both paths after the pod stopped")
    stop.set()
    route_tally, service_tally = await through_route, await through_service
    print(f"pod {name} deleted under load: {route_tally.total} requests through the HTTPRoute, "
          f"{service_tally.total} through the Service, failures {len(route_tally.failures) + len(service_tally.failures)}")
    assert route_tally.total > 100 and service_tally.total > 100
    assert route_tally.failures == [] and service_tally.failures == []


async def test_a_canary_without_ready_pods_costs_no_request(split: Split) -> None:
    await split.client.patch("apps/v1", "deployments", NS, f"{NAME}-predictor-canary", {"spec": {"replicas": 0}})

    async def canary_gone() -> bool:
        kubelet = split.sandbox.kubelet
        assert kubelet is not None
        canary = kubelet.proxy.find(NS, f"{NAME}-predictor-canary")
        return canary is not None and not kubelet.proxy.endpoint_ports(canary, canary["spec"]["ports"][0])

    await eventually(canary_gone, timeout=60, what="the canary's endpoints to be gone")
    tally = await load(split.route_url, requests=200)  # 20 % of these would go to the canary
    assert tally.failures == [] and tally.canary_share == 0.0 and tally.total == 200

    # Nowhere to go: 503 with a JSON body, as Envoy's "no healthy upstream".
    await split.client.create(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, httproute("only-canary", [(f"{NAME}-predictor-canary", 1)]))

    async def url() -> str | None:
        route = await split.client.get(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, "only-canary")
        return ((route or {}).get("metadata", {}).get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_URL)

    only_canary = await eventually(url, timeout=60, what="the second route's URL")
    async with aiohttp.ClientSession() as session, session.get(only_canary + "/v2") as response:
        assert response.status == 503
        assert (await response.json())["error"] == "no healthy upstream"
    await split.client.delete(constants.GATEWAY_API_VERSION, constants.HTTPROUTES, NS, "only-canary")

    async def closed() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(only_canary + "/v2"):
                return False
        except aiohttp.ClientConnectionError:
            return True

    await eventually(closed, timeout=60, what="the deleted route's listener to close")
