"""The real operator, in-process, against a Kubernetes API. The tests play kubelet and
controllers: they set pod and Deployment status through the API.

Every test that takes the `backend` fixture (through `cluster`, `operator`, ...)
runs twice:

* `[sandbox]`: the sandbox's API server (KMock's emulator, extended with
  resourceVersion/generation, the status subresource, selectors and CRD schema
  validation), one per test, namespace `default`;
* `[real]`: upstream kube-apiserver v1.32 with etcd and the garbage collector
  (controlplane.py), one per session, a fresh namespace per test, the operator
  restricted to it (ASCEND_MLOPS_NAMESPACES). It evaluates the CRDs' CEL rules,
  prunes, defaults and answers as a cluster does. No kubelet, no scheduler and
  no workload controllers: what the tests write into a pod's or a Deployment's
  status stays as they wrote it.

A test that needs the sandbox's internals (its kubelet, its log reader, its
plain-HTTP API behind a proxy, the `api` fixture) says why with
`@pytest.mark.sandbox_only("...")` and gets the `[sandbox]` run only. The real
runs carry the `real_api` marker: `pytest tests/integration -m real_api`. Where
the real control plane cannot start (no archive or no etcd) they are skipped
with the reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

import ascend_mlops.main  # noqa: F401  (registers the handlers)
from ascend_mlops.api import constants
from ascend_mlops.kube import ApiError, KubeClient
from ascend_mlops.reconcilers.engine import Engine, Key
from ascend_mlops.sandbox.apiserver import GATEWAY_CRD_DIR, APIServer
from ascend_mlops.sandbox.apiserver import kubeconfig_text as sandbox_kubeconfig
from ascend_mlops.settings import ENV_NAMESPACES, Settings
from tests.helpers import REPO_ROOT, eventually, gateway_api_crds
from tests.integration import controlplane

NAMESPACE = "default"  # the sandbox's; a real run's is Backend.namespace (Cluster.namespace)
WATCHED_RESOURCES = len(constants.PLURALS) + 2  # our kinds, pods, deployments
WATCHED_PLURALS = {*constants.PLURALS.values(), "pods", "deployments", "services"}
IN_CI = os.environ.get("CI", "").lower() == "true"
CRDS = REPO_ROOT / "crds"
NAMESPACE_LABEL = "ascend.mlops.dev/integration-test"
_namespaces = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox_only(reason): needs the sandbox's internals; no [real] run")
    config.addinivalue_line("markers", "real_api: the [real] run of an integration test (upstream kube-apiserver)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`backend` is [sandbox] and [real], or [sandbox] only for a test marked sandbox_only."""
    if "backend" not in metafunc.fixturenames:
        return
    params = [pytest.param("sandbox", id="sandbox")]
    marker = metafunc.definition.get_closest_marker("sandbox_only")
    if marker is None:
        params.append(pytest.param("real", id="real", marks=pytest.mark.real_api))
    elif not marker.args or not str(marker.args[0]).strip():
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sandbox_only needs the reason as its argument")
    metafunc.parametrize("backend", params, indirect=True, scope="function")


@dataclass
class Reconciliations:
    """The reconciliations the in-process operator has finished: (kind, when it started), in order."""

    finished: list[tuple[str, float]]

    def mark(self) -> float:
        return time.monotonic()

    async def since(self, kind: str, mark: float) -> bool:
        """A reconciliation of `kind` that started after `mark` has finished (its writes done)."""
        return any(k == kind and started > mark for k, started in list(self.finished))


class Operator:
    """Start, stop and restart the real operator (Kopf + our handlers).

    Kopf runs in a thread with its own event loop, as `kopf.testing.KopfRunner`
    does: on exit it cancels every task of its loop it did not start, which
    would include the test's own tasks if they shared one.
    """

    def __init__(self, backend: Backend | APIServer | None = None) -> None:
        # The sandbox's API (whose watches it counts and closes), or None on a real apiserver.
        self._api = backend.sandbox if isinstance(backend, Backend) else backend
        self._plane = backend.plane if isinstance(backend, Backend) else None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        settings = kopf.OperatorSettings()
        # The CRDs exist before the operator starts; without watching them for
        # changes Kopf has no re-discovery in flight that would slow down stop().
        settings.scanning.disabled = True
        # As `ascend-mlops operator` does: the namespaces of ASCEND_MLOPS_NAMESPACES, else all.
        namespaces = list(Settings.from_env().namespaces)
        try:
            asyncio.run(
                kopf.operator(
                    settings=settings,
                    clusterwide=not namespaces,
                    namespaces=namespaces,
                    standalone=True,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    memo=kopf.Memo(),
                )
            )
        except asyncio.CancelledError:
            pass  # Kopf's way of ending on a requested stop
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def start(self) -> None:
        assert self._thread is None, "already running"
        if self._api is not None:
            # Server-side ends of a stopped operator's watches linger until written to;
            # drop them so that counting open watches below counts this run's.
            await self._api.handler.close_watches()
        if self._plane is not None:
            # A real one notices a closed watch at once, but count on nothing: wait for it.
            await eventually(self._no_watches, timeout=5, what="the watches of a stopped operator closed")
        self._stop, self._ready, self.error = threading.Event(), threading.Event(), None
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self._thread.start()
        ready = await asyncio.to_thread(self._ready.wait, 20)
        assert self.error is None, f"operator failed to start: {self.error!r}"
        assert ready, "operator did not become ready within 20s"
        await self._wait_watching()

    async def _wait_watching(self) -> None:
        """Wait until Kopf's watch streams are open.

        Kopf reports ready before it has discovered the resources; stopping it in
        that window (or in its initial listings) makes it wait for seconds. Both
        API servers know their open watches: our kinds, pods, Deployments, Services.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        if self._plane is not None:
            # A real apiserver counts its open watches in /metrics (Kopf lists, then watches).
            while loop.time() < deadline:
                if await asyncio.to_thread(self._plane.namespaced_watches, WATCHED_PLURALS) >= len(WATCHED_PLURALS):
                    return
                await asyncio.sleep(0.05)
            return
        watchers = getattr(getattr(self._api, "handler", None), "_watchers", None)
        if watchers is None:
            return
        while len(watchers) < WATCHED_RESOURCES and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def _no_watches(self) -> bool:
        assert self._plane is not None
        return await asyncio.to_thread(self._plane.namespaced_watches, WATCHED_PLURALS) == 0

    async def stop(self) -> None:
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        self._stop.set()
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive(), "operator did not stop within 20s"
        if self.error is not None:
            raise AssertionError(f"operator crashed: {self.error!r}") from self.error

    async def restart(self) -> None:
        await self.stop()
        await self.start()


class Cluster:
    """Test-side API access in the test's namespace: what kubectl, a kubelet or a controller would do."""

    def __init__(self, client: KubeClient, namespace: str = NAMESPACE) -> None:
        self.client = client
        self.namespace = namespace

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        api_version = body["apiVersion"]
        plural = constants.PLURALS.get(body["kind"]) or body["kind"].lower() + "s"
        return await self.client.create(api_version, plural, self.namespace, body)

    async def get_cr(self, kind: str, name: str) -> dict[str, Any] | None:
        return await self.client.get(constants.API_VERSION, constants.PLURALS[kind], self.namespace, name)

    async def patch_cr(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.client.patch(constants.API_VERSION, constants.PLURALS[kind], self.namespace, name, body)

    async def pods(self, **labels: str) -> list[dict[str, Any]]:
        return await self.client.list("v1", "pods", self.namespace, labels or None)

    async def pod(self, name: str) -> dict[str, Any] | None:
        return await self.client.get("v1", "pods", self.namespace, name)

    async def set_pod_status(self, name: str, status: dict[str, Any]) -> None:
        await self.client.patch("v1", "pods", self.namespace, name, {"status": status}, subresource="status")

    async def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = await self.get_cr(kind, name)
        for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
            if condition["type"] == type_:
                return dict(condition)
        return None

    async def wait_condition(
        self, kind: str, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            c = await self.condition(kind, name, type_)
            if c and c["status"] == status and (reason is None or c["reason"] == reason):
                return c
            return None

        return await eventually(probe, timeout, f"{kind} {name} {type_}={status} {reason or ''}")

    async def events_for(self, name: str) -> list[dict[str, Any]]:
        events = await self.client.list("v1", "events", self.namespace)
        return [e for e in events if (e.get("involvedObject") or {}).get("name") == name]


@dataclass
class Backend:
    """Where a test's API is: the sandbox's (one per test), or a fresh namespace of the real control plane."""

    name: str  # "sandbox" or "real"
    url: str
    namespace: str
    ssl_context: ssl.SSLContext | None = None
    sandbox: APIServer | None = None  # the sandbox's internals; None on the real apiserver
    plane: controlplane.ControlPlane | None = None

    @property
    def real(self) -> bool:
        return self.plane is not None

    def client(self) -> KubeClient:
        return KubeClient(self.url, ssl_context=self.ssl_context)

    def write_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig for a process of its own (an `ascend-mlops operator`), in the test's namespace.

        `server`: another address of the same API (a proxy in front of it).
        """
        if self.plane is not None:
            return self.plane.kubeconfig(path, namespace=self.namespace, server=server)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sandbox_kubeconfig(server or self.url, self.namespace))
        return path


@contextlib.asynccontextmanager
async def serving_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra_crd_dirs: Path) -> AsyncIterator[APIServer]:
    """The HTTP API with our CRDs (and any others), and the operator's environment pointing at it."""
    async with APIServer(crd_dirs=[CRDS, *extra_crd_dirs]) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("ASCEND_MLOPS_METRICS_PORT", "0")
        monkeypatch.setenv("ASCEND_MLOPS_HEALTH_PORT", "0")
        yield server


@contextlib.asynccontextmanager
async def cluster_of(api: Backend | APIServer) -> AsyncIterator[Cluster]:
    if isinstance(api, Backend):
        client, namespace = api.client(), api.namespace
    else:
        client, namespace = KubeClient(api.url), NAMESPACE
    try:
        yield Cluster(client, namespace)
    finally:
        await client.close()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager for the whole session, our CRDs applied."""
    try:
        plane = controlplane.ControlPlane(tmp_path_factory.mktemp("control-plane"))
    except controlplane.Unavailable as exc:
        if IN_CI:
            pytest.fail(f"the [real] integration tests must run in CI, but {exc}")
        pytest.skip(f"[real] needs a kube-apiserver and etcd here: {exc}")
    plane.start(controlplane.load_crds(CRDS))
    try:
        yield plane
    finally:
        plane.stop()


@contextlib.asynccontextmanager
async def real_namespace(plane: controlplane.ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Backend]:
    """A fresh namespace (with its default ServiceAccount, which pods need) and the operator's environment in it.

    Afterwards the namespace goes (the namespace controller empties it meanwhile), and so
    does what the test made outside it: Nodes (the control plane has none of its own) and
    CRDs other than ours.
    """
    backend = Backend("real", plane.url, f"it{next(_namespaces)}-{uuid.uuid4().hex[:6]}", plane.ssl_context(), plane=plane)
    client = backend.client()
    try:
        await client.create("v1", "namespaces", None, {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": backend.namespace, "labels": {NAMESPACE_LABEL: "true"}},
        })
        await eventually(lambda: client.get("v1", "serviceaccounts", backend.namespace, "default"),
                         what=f"ServiceAccount {backend.namespace}/default")
        monkeypatch.setenv("KUBECONFIG", str(backend.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("ASCEND_MLOPS_METRICS_PORT", "0")
        monkeypatch.setenv("ASCEND_MLOPS_HEALTH_PORT", "0")
        monkeypatch.setenv(ENV_NAMESPACES, backend.namespace)
        yield backend
    finally:
        try:
            await _clean_up_after(client, backend.namespace)
        finally:
            await client.close()


async def _clean_up_after(client: KubeClient, namespace: str) -> None:
    ours = {crd["metadata"]["name"] for crd in controlplane.load_crds(CRDS)}
    extra = [c for c in await client.list("apiextensions.k8s.io/v1", "customresourcedefinitions", None)
             if c["metadata"]["name"] not in ours]
    for crd in extra:
        await client.delete("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd["metadata"]["name"])
    for node in await client.list("v1", "nodes", None):
        await client.delete("v1", "nodes", None, node["metadata"]["name"])
    await client.delete("v1", "namespaces", None, namespace)
    for crd in extra:
        group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
        plural = crd["spec"]["names"]["plural"]
        # Gone from discovery too, so that the next test's operator does not see it served.
        await eventually(functools.partial(_not_served, client, f"{group}/{version}", plural), timeout=30,
                         what=f"CRD {crd['metadata']['name']} removed")


async def _not_served(client: KubeClient, api_version: str, plural: str) -> bool:
    return plural not in await client.api_resources(api_version)


async def wait_served(cluster: Cluster, api_version: str, plural: str, timeout: float = 30.0) -> None:
    """Until discovery lists `plural` (a CRD just created is Established a moment later on a real apiserver)."""

    async def served() -> bool:
        return plural in await cluster.client.api_resources(api_version)

    await eventually(served, timeout, f"{api_version} {plural} served")


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Backend]:
    """[sandbox] or [real] (see the module's docstring); parametrized by pytest_generate_tests."""
    if request.param == "sandbox":
        async with serving_api(tmp_path, monkeypatch) as server:
            yield Backend("sandbox", server.url, NAMESPACE, sandbox=server)
        return
    plane: controlplane.ControlPlane = request.getfixturevalue("control_plane")
    async with real_namespace(plane, tmp_path, monkeypatch) as real:
        yield real


@pytest.fixture
def api(backend: Backend) -> APIServer:
    """The sandbox's API server object itself (its handler: log reader, object history, watches)."""
    if backend.sandbox is None:
        raise AssertionError("`api` is the sandbox's API server: mark the test sandbox_only(reason), or use `backend`")
    return backend.sandbox


@pytest.fixture
async def cluster(backend: Backend) -> AsyncIterator[Cluster]:
    async with cluster_of(backend) as c:
        yield c


@pytest.fixture
def reconciliations(monkeypatch: pytest.MonkeyPatch) -> Reconciliations:
    """Records every reconciliation of the operator (Engine.reconcile, wrapped): a test that asserts
    that nothing changed awaits one that started after the change, instead of sleeping."""
    record = Reconciliations([])
    original = Engine.reconcile

    async def reconcile(self: Engine, key: Key) -> None:
        started = time.monotonic()
        await original(self, key)
        record.finished.append((key.kind, started))  # from the operator's thread: list.append is atomic

    monkeypatch.setattr(Engine, "reconcile", reconcile)
    return record


@contextlib.asynccontextmanager
async def operator_running(
    backend: Backend, monkeypatch: pytest.MonkeyPatch | None = None, *, strict_stop: bool = False, **env: str,
) -> AsyncIterator[Operator]:
    """The operator, started, with these settings (ASCEND_MLOPS_<KEY>, through `monkeypatch`); stopped after.

    `strict_stop`: a crash or a hang found when stopping it fails the test (otherwise it is ignored)."""
    for key, value in env.items():
        assert monkeypatch is not None, "settings need monkeypatch (they are environment variables)"
        monkeypatch.setenv(f"ASCEND_MLOPS_{key}", value)
    op = Operator(backend)
    await op.start()
    try:
        yield op
    finally:
        if strict_stop:
            await op.stop()
        else:
            with contextlib.suppress(Exception):
                await op.stop()


@pytest.fixture
async def operator(backend: Backend) -> AsyncIterator[Operator]:
    async with operator_running(backend) as op:
        yield op


def gateway_crds(backend: Backend) -> list[dict[str, Any]]:
    """The Gateway API's own CRDs (a pinned copy) on the real apiserver; the sandbox serves its stand-in HTTPRoute."""
    if backend.real:
        return gateway_api_crds()
    return [dict(yaml.safe_load((GATEWAY_CRD_DIR / "gateway.networking.k8s.io_httproutes.yaml").read_text()))]


@pytest.fixture
async def gateway_api(backend: Backend, cluster: Cluster) -> None:
    """The Gateway API installed (its CRDs created through the API), before any operator starts."""
    for crd in gateway_crds(backend):
        try:
            await cluster.client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd)
        except ApiError as exc:
            if exc.status != 409:
                raise
        await wait_served(cluster, f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}", crd["spec"]["names"]["plural"])


def running(name: str = "trainer") -> dict[str, Any]:
    return {
        "phase": "Running",
        "containerStatuses": [
            {"name": name, "ready": True, "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}
        ],
    }


def terminated(exit_code: int, message: str = "", name: str = "trainer", reason: str | None = None) -> dict[str, Any]:
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": name,
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                        "message": message,
                    }
                },
            }
        ],
    }
