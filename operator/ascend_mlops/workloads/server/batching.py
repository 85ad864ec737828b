"""Dynamic batching: concurrent requests wait briefly and run as one batch.

A batch closes when it reaches `max_batch_size` or when its first request
has waited `max_delay` seconds. One batch runs at a time (the device runs one
anyway); while it runs, the next one fills, so under load batches form
without any added wait, and a batch never waits when every request in
flight is already in it (a lone client pays no delay). Time is the event loop's clock, so tests can drive it
with a fake clock (looptime).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from ascend_mlops.workloads.server.errors import InferenceFailed, ServerOverloaded
from ascend_mlops.workloads.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    logits: np.ndarray  # [classes] for this request's image
    batch_size: int
    queue_seconds: float
    infer_seconds: float


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[BatchResult]
    enqueued: float


_STOP = object()
_WAKE = object()


class Batcher:
    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_delay: float,
        max_queue: int,
        metrics: ServerMetrics | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max batch size must be >= 1")
        self._infer = infer
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max(0.0, max_delay)
        self.max_queue = max_queue
        self._metrics = metrics
        self._in_flight = in_flight
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._pending = 0
        self._flush = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    @property
    def pending(self) -> int:
        return self._pending

    def check_room(self, images: int = 1) -> None:
        """Raise ServerOverloaded (503 + Retry-After) when `images` more would overflow the queue.

        The HTTP layer calls it before reading a request's body, so that under overload a
        rejected request costs no upload, decode or preprocessing time of the saturated server.
        """
        if self._pending + images > self.max_queue:
            raise ServerOverloaded(
                f"{self._pending} images are already waiting (--max-queue {self.max_queue}); retry shortly"
            )

    async def submit(self, image: np.ndarray) -> BatchResult:
        return (await self.submit_many([image]))[0]

    async def submit_many(self, images: list[np.ndarray]) -> list[BatchResult]:
        """Queue all of a request's images or none (a request is refused whole, not half run)."""
        if self._task is None or self._task.done():
            raise InferenceFailed("the batcher is not running")
        self.check_room(len(images))
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[BatchResult]] = [loop.create_future() for _ in images]
        self._pending += len(images)
        self._gauge()
        now = loop.time()
        for image, future in zip(images, futures, strict=True):
            self._queue.put_nowait(_Item(image, future, now))
        return list(await asyncio.gather(*futures))

    def flush(self) -> None:
        """Stop waiting for batches to fill (shutdown): run what is queued now."""
        self._flush = True
        self._queue.put_nowait(_WAKE)

    async def stop(self) -> None:
        """Run everything already queued, then stop."""
        if self._task is None:
            return
        self._flush = True
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._pending)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            if not isinstance(first, _Item):
                continue
            batch = [first]
            deadline = first.enqueued + self.max_delay
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - asyncio.get_running_loop().time()
                    if self._flush or timeout <= 0 or self._everyone_is_here(len(batch)):
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if nxt is _STOP:
                    stopping = True
                    break
                if isinstance(nxt, _Item):
                    batch.append(nxt)
            await self._run_batch(batch)
        # Requests that raced with stop still get an answer.
        while not self._queue.empty():
            leftover = self._queue.get_nowait()
            if isinstance(leftover, _Item):
                await self._run_batch([leftover])

    def _everyone_is_here(self, size: int) -> bool:
        """No other request is on its way (each brings at least one image): waiting can only add latency."""
        return self._in_flight is not None and size >= self._in_flight()

    async def _run_batch(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._pending -= len(batch)
        self._gauge()
        live = [item for item in batch if not item.future.done()]  # a client may have gone away
        if not live:
            return
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(live))
        try:
            images = np.stack([item.image for item in live])
            logits = await loop.run_in_executor(self._executor, self._infer, images)
        except Exception as exc:
            log.exception("inference failed for a batch of %d", len(live))
            for item in live:
                if not item.future.done():
                    item.future.set_exception(InferenceFailed(f"inference failed: {exc}"))
            return
        finished = loop.time()
        for item, row in zip(live, logits, strict=True):
            if not item.future.done():
                item.future.set_result(BatchResult(row, len(live), started - item.enqueued, finished - started))
