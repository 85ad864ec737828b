"""Services on local ports: the sandbox's kube-proxy.

Every port of every Service with a selector gets a TCP listener on 127.0.0.1;
each connection goes to one ready endpoint (round robin per Service), to the
local port the kubelet gave the pod's target port. Like kube-proxy this works
per connection: a client that keeps its connection alive stays on one pod, so
a split between revisions by ready replicas holds over connections, not
requests. A pod being deleted is no endpoint from the moment of the deletion
(before its SIGTERM); a connection that cannot be opened is tried on the next
endpoint. With no ready endpoint the connection is closed at once, as
kube-proxy rejects it. The local address is written on the Service as the
annotation `ascend.mlops.dev/sandbox-url` (first port) and
`ascend.mlops.dev/sandbox-ports` (service port -> local port, JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ascend_mlops.api import constants
from ascend_mlops.kube import ApiError

if TYPE_CHECKING:
    from ascend_mlops.sandbox.kubelet import Kubelet

logger = logging.getLogger(__name__)

ANNOTATION_URL = constants.ANNOTATION_SANDBOX_URL
ANNOTATION_PORTS = constants.ANNOTATION_SANDBOX_PORTS


class ServiceProxy:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.services: dict[str, dict[str, Any]] = {}
        self.listeners: dict[tuple[str, int], tuple[asyncio.Server, int]] = {}  # (svc uid, service port) -> server, local port
        self._round_robin: dict[tuple[str, int], int] = {}  # (svc uid, service port) -> next endpoint
        self._annotated: dict[str, str] = {}
        self._connections: set[asyncio.Task[Any]] = set()

    async def on_event(self, kind: str, service: dict[str, Any]) -> None:
        uid = service["metadata"]["uid"]
        if kind == "DELETED":
            self.services.pop(uid, None)
        else:
            self.services[uid] = service

    def find(self, namespace: str, name: str) -> dict[str, Any] | None:
        for service in self.services.values():
            meta = service["metadata"]
            if meta.get("namespace", "default") == namespace and meta["name"] == name:
                return service
        return None

    def endpoint_ports(self, service: Mapping[str, Any], port: Mapping[str, Any]) -> list[int]:
        """Local ports of the Service port's ready endpoints (pods being deleted are not among them)."""
        selector = service.get("spec", {}).get("selector") or {}
        found = []
        for pod, worker in self.kubelet.ready_endpoints(selector, service["metadata"].get("namespace", "default")):
            local = _target_port(pod, worker.local_ports, port)
            if local is not None:
                found.append(local)
        return found

    def local_port(self, namespace: str, name: str, port: int | None = None) -> int | None:
        for uid, service in self.services.items():
            meta = service["metadata"]
            if meta.get("namespace") == namespace and meta["name"] == name:
                for (listener_uid, service_port), (_, local) in self.listeners.items():
                    if listener_uid == uid and (port is None or port == service_port):
                        return local
        return None

    def url(self, namespace: str, name: str) -> str | None:
        port = self.local_port(namespace, name)
        return f"http://127.0.0.1:{port}" if port else None

    async def sync(self) -> None:
        wanted: set[tuple[str, int]] = set()
        for uid, service in list(self.services.items()):
            spec = service.get("spec", {})
            if not spec.get("selector") or spec.get("clusterIP") == "None":
                continue
            ports: dict[str, int] = {}
            for port in spec.get("ports") or []:
                key = (uid, int(port.get("port", 0)))
                wanted.add(key)
                if key not in self.listeners:
                    server = await asyncio.start_server(self._handler(uid, port), host="127.0.0.1", port=0)
                    local = int(server.sockets[0].getsockname()[1])
                    self.listeners[key] = (server, local)
                    logger.info("service %s/%s port %s -> 127.0.0.1:%d", service["metadata"].get("namespace"), service["metadata"]["name"], key[1], local)
                ports[str(key[1])] = self.listeners[key][1]
            await self._annotate(service, ports)
        for key in [k for k in self.listeners if k not in wanted]:
            server, _ = self.listeners.pop(key)
            server.close()

    def _handler(self, uid: str, port: Mapping[str, Any]) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._connect(reader, writer, uid, port)

        return handle

    async def _annotate(self, service: Mapping[str, Any], ports: Mapping[str, int]) -> None:
        if not ports:
            return
        meta = service["metadata"]
        first = next(iter(ports.values()))
        annotations = {ANNOTATION_URL: f"http://127.0.0.1:{first}", ANNOTATION_PORTS: json.dumps(ports, sort_keys=True)}
        current = meta.get("annotations") or {}
        if all(current.get(k) == v for k, v in annotations.items()):
            return
        with contextlib.suppress(ApiError):
            await self.kubelet.client.patch("v1", "services", meta.get("namespace"), meta["name"], {"metadata": {"annotations": annotations}})

    def _targets(self, uid: str, service: Mapping[str, Any], port: Mapping[str, Any]) -> list[int]:
        """The ready endpoints' local ports, starting at this Service port's next one in turn."""
        ports = self.endpoint_ports(service, port)
        if not ports:
            return []
        key = (uid, int(port.get("port", 0)))
        turn = self._round_robin.get(key, 0) % len(ports)
        self._round_robin[key] = turn + 1
        return ports[turn:] + ports[:turn]

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, uid: str, port: Mapping[str, Any]) -> None:
        service = self.services.get(uid)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for local in self._targets(uid, service, port) if service else []:
            try:
                upstream = await asyncio.open_connection("127.0.0.1", local)
                break
            except OSError:
                continue  # exited meanwhile: the next endpoint, as a client's retry would
        if upstream is None:
            writer.close()
            return
        upstream_reader, upstream_writer = upstream

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            if task is not None:
                self._connections.discard(task)

    async def stop(self) -> None:
        for server, _ in self.listeners.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        self.listeners.clear()


def _target_port(pod: Mapping[str, Any], local_ports: Mapping[int, int], port: Mapping[str, Any]) -> int | None:
    """The local port of a Service port's targetPort (number or container port name) on one pod."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, str) and not target.isdigit():
        container_port = next(
            (p.get("containerPort") for c in pod.get("spec", {}).get("containers") or [] for p in c.get("ports") or [] if p.get("name") == target),
            None,
        )
        if container_port is None:
            return None
    else:
        container_port = int(target)
    return local_ports.get(int(container_port))
