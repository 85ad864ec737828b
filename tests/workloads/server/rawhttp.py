"""Raw HTTP against an in-process server running on its own thread, so that any bytes can be sent."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ascend_mlops.workloads.server.app import InferenceServer
from ascend_mlops.workloads.server.backends import Backend
from ascend_mlops.workloads.server.config import ServerConfig


@dataclass
class Reply:
    status: int  # 0: the connection closed without an answer
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body, parse_constant=_no_constants)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """One request that closes its connection (so that the answer ends at EOF)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
    all_headers = {"Content-Length": str(len(body)), **(headers or {})}
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        return Reply(0, {}, raw)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), headers, body)


def _complete(raw: bytes, head_request: bool) -> bool:
    """The first answer in `raw` is all there (by its Content-Length), so there is no need to wait for EOF."""
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found:
        return False
    if head_request:
        return True  # an answer to HEAD has no body, whatever its Content-Length says
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def exchange(port: int, data: bytes, timeout: float = 30) -> Reply:
    """Send `data`, read the (first) answer: to its Content-Length, or until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413, 400) and closed before taking it all: read what it said
        raw = b""
        try:
            while not _complete(raw, data.startswith(b"HEAD ")) and (chunk := sock.recv(65536)):
                raw += chunk
        except ConnectionResetError:
            pass
    return parse_reply(raw)


class ThreadedServer:
    """An InferenceServer on a thread of its own, with its own event loop."""

    def __init__(self, config: ServerConfig, backend: Backend) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="server", daemon=True)
        self._thread.start()
        self.server: InferenceServer = self.call(self._make(config, backend))
        self.port = self.call(self.server.start())
        self.call(self.server.load())

    @staticmethod
    async def _make(config: ServerConfig, backend: Backend) -> InferenceServer:
        return InferenceServer(config, backend)  # in the loop: its asyncio objects belong to it

    @staticmethod
    async def _cancel_the_rest() -> None:
        """As asyncio.run does when it ends: no task is left pending when the loop closes."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def exchange(self, data: bytes, timeout: float = 30) -> Reply:
        return exchange(self.port, data, timeout)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        reply = self.exchange(request("GET", "/metrics"))
        total = 0.0
        for family in text_string_to_metric_families(reply.body.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += sample.value
        return total

    def close(self) -> None:
        try:
            self.call(self.server.stop())
            self.call(self._cancel_the_rest())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()


@contextmanager
def threaded_server(config: ServerConfig, backend: Backend) -> Iterator[ThreadedServer]:
    running = ThreadedServer(config, backend)
    try:
        yield running
    finally:
        running.close()
