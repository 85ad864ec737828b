"""Connections counted from the moment they are accepted, for a graceful shutdown.

aiohttp only knows about a request once its headers have been parsed, so its
own shutdown closes a connection whose headers are still arriving without an
answer. Here the listening socket's protocol factory wraps each aiohttp
RequestHandler (aiohttp's documented low-level use: `loop.create_server(server,
...)`), and a connection is *owed an answer* from its accept until its request
has been handled, and again from the first byte of each later request on it.

`drain()` (SIGTERM, after the listener closed): idle keep-alive connections are
closed at once; every other connection is answered, then closed; it returns when
none is owed an answer any more, or at the deadline.

A connection whose last response went out before its request body was read
(413 from the headers, 401, ...) is not owed anything for the bytes that are
still arriving: aiohttp discards them and closes it. Pipelined requests queued
behind the one being handled when SIGTERM arrives are not answered (aiohttp
closes after the current one); HTTP clients do not pipeline in practice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import StreamReader, web


@dataclass
class _Connection:
    handler: web.RequestHandler
    owed: bool = True  # accepted, or bytes of a new request received, and not answered yet
    requests: int = 0  # requests being handled (between the middleware's start and end)
    discarding: StreamReader | None = None  # answered before this body was read: its rest is not a request


class ConnectionTracker:
    def __init__(self) -> None:
        self._connections: dict[web.RequestHandler, _Connection] = {}
        self._draining = False
        self._settled = asyncio.Event()

    def protocol_factory(self, make_handler: Callable[[], web.RequestHandler]) -> Callable[[], asyncio.Protocol]:
        return lambda: _CountedProtocol(self, make_handler())

    @property
    def owed(self) -> int:
        """Connections waiting for an answer."""
        return sum(1 for c in self._connections.values() if c.owed)

    @property
    def open(self) -> int:
        return len(self._connections)

    # -- events: from the protocol ------------------------------------------------------------------
    def _accepted(self, handler: web.RequestHandler) -> None:
        self._connections[handler] = _Connection(handler)
        self._changed()

    def _received(self, handler: web.RequestHandler) -> None:
        conn = self._connections.get(handler)
        if conn is not None and conn.requests == 0 and conn.discarding is None:
            conn.owed = True  # the first bytes of the next request (between requests, bytes can be nothing else)

    def _lost(self, handler: web.RequestHandler) -> None:
        conn = self._connections.pop(handler, None)
        if conn is not None and conn.discarding is not None:
            # aiohttp would wait up to its lingering time (10 s) for the rest of a body that can no longer come.
            conn.discarding.feed_eof()
        self._changed()

    # -- events: from the middleware ------------------------------------------------------------------
    def request_started(self, request: web.BaseRequest) -> None:
        conn = self._connections.get(request.protocol)
        if conn is not None:
            conn.requests += 1
            conn.owed, conn.discarding = True, None

    def request_finished(self, request: web.BaseRequest, response: web.StreamResponse | None) -> None:
        """The handler is done; `response` is about to be written (None: cancelled). Once per request_started."""
        body = request.content
        consumed = body.is_eof() and body.exception() is None
        if response is not None and not consumed:
            response.force_close()  # do not reuse a connection whose request body we did not read
        if body.exception() is not None:
            # Not valid in its Content-Encoding, say: nothing more can be read from it, and aiohttp, discarding the
            # rest after the response, would only raise the error again and log it as unhandled, with a traceback.
            body.feed_eof()
        conn = self._connections.get(request.protocol)
        if conn is None:
            return
        conn.requests -= 1
        if conn.requests:
            return
        conn.owed, conn.discarding = False, None if consumed else body
        if self._draining:
            if response is not None:
                response.force_close()  # `Connection: close`: the client knows not to send another request
            if consumed:
                conn.handler.close()  # aiohttp writes this response, then closes the connection
        self._changed()

    def _changed(self) -> None:
        if self._draining and not self.owed:
            self._settled.set()

    # -- shutdown ----------------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> int:
        """Answer every connection owed an answer, closing idle ones; returns how many are still owed."""
        self._draining = True
        for conn in list(self._connections.values()):
            if not conn.owed and not conn.requests:
                conn.handler.force_close()  # idle keep-alive: nothing to answer
        self._changed()
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            pass
        return self.owed


class _CountedProtocol(asyncio.Protocol):
    """An aiohttp RequestHandler with its accept, bytes and close reported to the tracker first."""

    def __init__(self, tracker: ConnectionTracker, handler: web.RequestHandler) -> None:
        self._tracker = tracker
        self._handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tracker._accepted(self._handler)
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data:
            self._tracker._received(self._handler)
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()  # None: the transport closes, as it does for aiohttp itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connection_lost(exc)
        self._tracker._lost(self._handler)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()
