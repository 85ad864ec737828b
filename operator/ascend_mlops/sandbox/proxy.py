"""Services on local ports: the sandbox's kube-proxy.

Every port of every Service with a selector gets a TCP listener on 127.0.0.1;
each connection goes to one ready endpoint (round robin), to the local port
the kubelet gave the pod's target port. With no ready endpoint the connection
is closed at once, as kube-proxy rejects it. The local address is written on
the Service as the annotation `ascend.mlops.dev/sandbox-url` (first port) and
`ascend.mlops.dev/sandbox-ports` (service port -> local port, JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ascend_mlops.sandbox.client import APIStatusError

if TYPE_CHECKING:
    from ascend_mlops.sandbox.kubelet import Kubelet

logger = logging.getLogger(__name__)

ANNOTATION_URL = "ascend.mlops.dev/sandbox-url"
ANNOTATION_PORTS = "ascend.mlops.dev/sandbox-ports"


class ServiceProxy:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.services: dict[str, dict[str, Any]] = {}
        self.listeners: dict[tuple[str, int], tuple[asyncio.Server, int]] = {}  # (svc uid, service port) -> server, local port
        self._round_robin = itertools.count()
        self._annotated: dict[str, str] = {}
        self._connections: set[asyncio.Task[Any]] = set()

    async def on_event(self, kind: str, service: dict[str, Any]) -> None:
        uid = service["metadata"]["uid"]
        if kind == "DELETED":
            self.services.pop(uid, None)
        else:
            self.services[uid] = service

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
        with contextlib.suppress(APIStatusError):
            await self.kubelet.client.patch("v1", "services", meta.get("namespace"), meta["name"], {"metadata": {"annotations": annotations}})

    def _target(self, service: Mapping[str, Any], port: Mapping[str, Any]) -> int | None:
        selector = service.get("spec", {}).get("selector") or {}
        endpoints = self.kubelet.ready_endpoints(selector, service["metadata"].get("namespace", "default"))
        if not endpoints:
            return None
        pod, worker = endpoints[next(self._round_robin) % len(endpoints)]
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
        return worker.local_ports.get(int(container_port))

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, uid: str, port: Mapping[str, Any]) -> None:
        service = self.services.get(uid)
        local = self._target(service, port) if service else None
        if local is None:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", local)
        except OSError:
            writer.close()
            return

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
