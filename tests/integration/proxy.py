"""A loopback TCP proxy between an operator process and the API server, with switches for failures.

It understands just enough HTTP/1.1 to tell requests apart (the operator's
client sends one request at a time per connection, never pipelined): a chunk
from the client that starts with a method is a new request. That is enough to
count the operator's writes, to hold one, and to play an API server that is
gone or hung. In front of a real apiserver (https) the TLS bytes pass through
unread: gone and hung work the same, counting and holding writes do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ascend_mlops.sandbox.apiserver import APIServer

WRITE_METHODS = (b"POST", b"PUT", b"PATCH", b"DELETE")


@dataclass(eq=False)
class Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    hold_response: bool = False  # the upstream's answer to the last request is not passed on


@dataclass
class Proxy:
    upstream: tuple[str, int]
    port: int = 0
    scheme: str = "http"  # https in front of a real apiserver: TLS goes through, requests are not seen
    hung: bool = False  # forward nothing more, in either direction
    hold_writes: bool = False  # stop a connection at its first write, before the API server sees it
    stop_after_writes: int | None = None  # let the n-th write through, then hold its answer and every later request
    writes: list[str] = field(default_factory=list)  # request lines of the writes forwarded
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _connections: set[Connection] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def go_away(self) -> None:
        """The API server disappears: the port refuses connections, open ones are reset."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            for writer in (conn.client, conn.upstream):
                if writer is not None:
                    writer.transport.abort()
        self._connections.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            pass  # the proxy is going away

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        self._connections.add(conn)
        try:
            up_reader, conn.upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            self._connections.discard(conn)
            return
        await asyncio.gather(self._requests(reader, conn), self._responses(up_reader, conn), return_exceptions=True)
        self._connections.discard(conn)
        for w in (writer, conn.upstream):
            w.transport.abort()

    async def _requests(self, source: asyncio.StreamReader, conn: Connection) -> None:
        assert conn.upstream is not None
        while True:
            chunk = await source.read(65536)
            if not chunk:
                return
            method = chunk.split(b" ", 1)[0]
            stopped = self.stop_after_writes is not None and len(self.writes) >= self.stop_after_writes
            if method in WRITE_METHODS or (stopped and method.isalpha() and method.isupper()):
                if self.hold_writes or stopped:
                    self.held.set()
                    await asyncio.Event().wait()  # the request never reaches the API server
                if method in WRITE_METHODS:
                    self.writes.append(chunk.split(b"\r\n", 1)[0].decode(errors="replace"))
                    if self.stop_after_writes is not None and len(self.writes) >= self.stop_after_writes:
                        conn.hold_response = True
                        self.held.set()
            while self.hung:
                await asyncio.sleep(0.05)
            conn.upstream.write(chunk)
            await conn.upstream.drain()

    async def _responses(self, source: asyncio.StreamReader, conn: Connection) -> None:
        while True:
            chunk = await source.read(65536)
            if not chunk:
                return
            while self.hung or conn.hold_response:
                await asyncio.sleep(0.05)
            conn.client.write(chunk)
            await conn.client.drain()


@contextlib.asynccontextmanager
async def proxied(api: APIServer | str) -> AsyncIterator[Proxy]:
    """A proxy in front of the sandbox's API, or of the API at this URL."""
    if isinstance(api, str):
        url = urllib.parse.urlsplit(api)
        proxy = Proxy((url.hostname or "127.0.0.1", url.port or 443), scheme=url.scheme)
    else:
        proxy = Proxy((api.host, api.port))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.go_away()
