"""The real operator, in-process, against an HTTP Kubernetes API (KMock's emulator,
extended by the sandbox's API server with resourceVersion/generation, the status
subresource, selectors and CRD schema validation). The tests play kubelet and
controllers: they set pod and Deployment status through the API."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest

import ascend_mlops.main  # noqa: F401  (registers the handlers)
from ascend_mlops.api import constants
from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox.apiserver import APIServer
from tests.helpers import REPO_ROOT

T = TypeVar("T")
NAMESPACE = "default"
WATCHED_RESOURCES = len(constants.PLURALS) + 2  # our kinds, pods, deployments


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: T | None = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class Operator:
    """Start, stop and restart the real operator (Kopf + our handlers).

    Kopf runs in a thread with its own event loop, as `kopf.testing.KopfRunner`
    does: on exit it cancels every task of its loop it did not start, which
    would include the test's own tasks if they shared one.
    """

    def __init__(self, api: APIServer | None = None) -> None:
        self._api = api
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        settings = kopf.OperatorSettings()
        # The CRDs exist before the operator starts; without watching them for
        # changes Kopf has no re-discovery in flight that would slow down stop().
        settings.scanning.disabled = True
        try:
            asyncio.run(
                kopf.operator(
                    settings=settings,
                    clusterwide=True,
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
        that window makes its discovery requests retry for seconds. The sandbox
        API server knows its open watches: our three kinds, pods and Deployments.
        """
        watchers = getattr(getattr(self._api, "handler", None), "_watchers", None)
        if watchers is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(watchers) < WATCHED_RESOURCES and loop.time() < deadline:
            await asyncio.sleep(0.02)

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
    """Test-side API access: what kubectl, a kubelet or a controller would do."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        api_version = body["apiVersion"]
        plural = constants.PLURALS.get(body["kind"]) or body["kind"].lower() + "s"
        return await self.client.create(api_version, plural, NAMESPACE, body)

    async def get_cr(self, kind: str, name: str) -> dict[str, Any] | None:
        return await self.client.get(constants.API_VERSION, constants.PLURALS[kind], NAMESPACE, name)

    async def patch_cr(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.client.patch(constants.API_VERSION, constants.PLURALS[kind], NAMESPACE, name, body)

    async def pods(self, **labels: str) -> list[dict[str, Any]]:
        return await self.client.list("v1", "pods", NAMESPACE, labels or None)

    async def pod(self, name: str) -> dict[str, Any] | None:
        return await self.client.get("v1", "pods", NAMESPACE, name)

    async def set_pod_status(self, name: str, status: dict[str, Any]) -> None:
        await self.client.patch("v1", "pods", NAMESPACE, name, {"status": status}, subresource="status")

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
        events = await self.client.list("v1", "events", NAMESPACE)
        return [e for e in events if (e.get("involvedObject") or {}).get("name") == name]


@contextlib.asynccontextmanager
async def serving_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra_crd_dirs: Path) -> AsyncIterator[APIServer]:
    """The HTTP API with our CRDs (and any others), and the operator's environment pointing at it."""
    async with APIServer(crd_dirs=[REPO_ROOT / "crds", *extra_crd_dirs]) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("ASCEND_MLOPS_METRICS_PORT", "0")
        monkeypatch.setenv("ASCEND_MLOPS_HEALTH_PORT", "0")
        yield server


@contextlib.asynccontextmanager
async def cluster_of(api: APIServer) -> AsyncIterator[Cluster]:
    client = KubeClient(api.url)
    try:
        yield Cluster(client)
    finally:
        await client.close()


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[APIServer]:
    async with serving_api(tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture
async def cluster(api: APIServer) -> AsyncIterator[Cluster]:
    async with cluster_of(api) as c:
        yield c


@pytest.fixture
async def operator(api: APIServer) -> AsyncIterator[Operator]:
    op = Operator(api)
    await op.start()
    try:
        yield op
    finally:
        with contextlib.suppress(Exception):
            await op.stop()


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
