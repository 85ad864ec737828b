"""One shard of a batch: decode in a thread pool, infer in batches, write ModelArts' layout, resumably.

Layout under --output (names from api.contract):

    infer-result-<id>.manifest                    every input's line; written once, last, when all N shards are done
    infer-result-<id>/<name>_result.txt           a SUCCESSFUL input's answer (the JSON of the online POST /)
    infer-result-<id>/.failed/<name>.json         a FAILED input's manifest line (so a rerun does not redo it)
    infer-result-<id>/.shards/<i>-of-<N>.jsonl    a finished shard's manifest lines

Restart: an input is done when its result file or its failure record exists
(each is written atomically, so existing means complete); a rerun lists the
results folder once and does only the rest.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import posixpath
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ascend_mlops.api import contract
from ascend_mlops.api.progress import BatchProgress
from ascend_mlops.workloads.batch import inputs as inp
from ascend_mlops.workloads.batch.store import Output
from ascend_mlops.workloads.server import processing
from ascend_mlops.workloads.server.backends import Backend
from ascend_mlops.workloads.server.errors import InvalidInput

log = logging.getLogger("ascend_mlops.predict")

FAILED_DIR = ".failed"
SHARDS_DIR = ".shards"
SUCCESSFUL = "SUCCESSFUL"
FAILED = "FAILED"
PROGRESS_INTERVAL = 5.0  # seconds between progress lines
PREFETCH_BATCHES = 4  # batches decoded ahead of the device


def shard_file(index: int, count: int) -> str:
    return f"{index}-of-{count}.jsonl"


@dataclass
class Layout:
    task_id: str

    @property
    def results(self) -> str:
        return contract.batch_results_dir(self.task_id)

    @property
    def manifest(self) -> str:
        return contract.batch_manifest_name(self.task_id)

    def result(self, item: inp.Item) -> str:
        return f"{self.results}/{item.name}{contract.BATCH_RESULT_SUFFIX}"

    def failure(self, item: inp.Item) -> str:
        return f"{self.results}/{FAILED_DIR}/{item.name}.json"

    def shard(self, index: int, count: int) -> str:
        return f"{self.results}/{SHARDS_DIR}/{shard_file(index, count)}"


@dataclass
class Counts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    predicted: int = 0  # by this attempt (the device thread counts these)
    rejected: int = 0  # bad images of this attempt (the main thread counts these)
    seconds: float = 0.0  # prediction phase of this attempt

    @property
    def processed(self) -> int:
        return self.predicted + self.rejected

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def progress(self) -> BatchProgress:
        return BatchProgress(self.done, self.total, self.succeeded, self.failed, self.rate)


@dataclass
class ShardResult:
    counts: Counts
    lines: list[dict[str, Any]] = field(default_factory=list)
    manifest: str | None = None  # the manifest's location, when this shard assembled it


def _line(source: str, **rest: str) -> dict[str, Any]:
    return {"source": source, **rest}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _prepare(item: inp.Item, size: tuple[int, int]) -> np.ndarray | str:
    """The model input of one item, or the reason it failed (never raises but for storage outages)."""
    try:
        return processing.prepare(inp.read_image(item), size)
    except inp.ImageError as exc:
        return str(exc)
    except InvalidInput as exc:
        return exc.message
    except Exception as exc:  # a decoder bug or an exotic file must never stop the run
        from ascend_mlops.workloads import objectstore

        if isinstance(exc, objectstore.StorageUnavailable):
            raise
        return f"the image could not be decoded: {exc.__class__.__name__}: {exc}"


def _pending(writes: list[concurrent.futures.Future[None]]) -> list[concurrent.futures.Future[None]]:
    """The writes still running; raises the error of one that failed."""
    for w in writes:
        if w.done():
            w.result()
    return [w for w in writes if not w.done()]


class ShardRunner:
    """Runs `items` (this shard's) through `backend`, writing into `output`."""

    def __init__(
        self,
        output: Output,
        layout: Layout,
        *,
        batch_size: int,
        top_k: int,
        decode_threads: int,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.output = output
        self.layout = layout
        self.batch_size = batch_size
        self.top_k = top_k
        self.decode_threads = decode_threads
        self.progress = progress

    # -- restart ---------------------------------------------------------------
    def completed(self) -> set[str]:
        """Relative paths of every result and failure record already written (one listing)."""
        return self.output.listing(self.layout.results)

    def pending(self, items: list[inp.Item], done: set[str]) -> list[inp.Item]:
        """This shard's items without a result or failure record; what a killed attempt half-wrote for them goes."""
        todo = [i for i in items if self.layout.result(i) not in done and self.layout.failure(i) not in done]
        removed = self.output.discard_partial({rel for i in todo for rel in (self.layout.result(i), self.layout.failure(i))})
        if removed:
            log.info("removed %d partial file(s) an interrupted attempt left", removed)
        return todo

    # -- prediction --------------------------------------------------------------
    def _decoded(self, items: list[inp.Item], size: tuple[int, int]) -> Iterator[tuple[inp.Item, np.ndarray | str]]:
        """Items with their inputs, in order, decoded `PREFETCH_BATCHES` batches ahead on the pool."""
        ahead = max(self.batch_size * PREFETCH_BATCHES, self.decode_threads * 2)
        with concurrent.futures.ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode") as pool:
            queue: collections.deque[tuple[inp.Item, concurrent.futures.Future[np.ndarray | str]]] = collections.deque()
            it = iter(items)
            for item in it:
                queue.append((item, pool.submit(_prepare, item, size)))
                if len(queue) >= ahead:
                    break
            try:
                while queue:
                    item, future = queue.popleft()
                    nxt = next(it, None)
                    if nxt is not None:
                        queue.append((nxt, pool.submit(_prepare, nxt, size)))
                    yield item, future.result()
            finally:
                for _, future in queue:
                    future.cancel()

    def predict(self, backend: Backend, labels: list[str], items: list[inp.Item], counts: Counts) -> dict[int, dict[str, Any]]:
        """Predict `items`; return the failure lines by item index (successes are the result files).

        Three stages overlap: the decode pool prepares inputs ahead, this
        thread groups them into batches, the device thread runs nothing but
        `backend.predict` back to back (at most two batches wait for it), and
        the writer pool post-processes and writes each batch's results.
        """
        failures: dict[int, dict[str, Any]] = {}
        writes: list[concurrent.futures.Future[None]] = []
        ready: queue.Queue[list[tuple[inp.Item, np.ndarray]] | None] = queue.Queue(maxsize=2)
        errors: list[BaseException] = []
        started = time.perf_counter()
        last = started

        def post(batch: list[tuple[inp.Item, np.ndarray]], logits: np.ndarray) -> None:
            for (item, _), row in zip(batch, logits, strict=True):
                body = _dumps(processing.classification(row, labels, self.top_k))
                self.output.write(self.layout.result(item), body, "application/json")

        def device(writer: concurrent.futures.Executor) -> None:
            nonlocal writes
            try:
                while (batch := ready.get()) is not None:
                    logits = backend.predict(np.stack([array for _, array in batch]))
                    writes.append(writer.submit(post, batch, logits))
                    counts.succeeded += len(batch)
                    counts.predicted += len(batch)
                    if len(writes) >= 256:
                        writes = _pending(writes)
            except BaseException as exc:  # handed to the main thread, which raises it
                errors.append(exc)
                while ready.get() is not None:  # keep the producer from blocking
                    pass

        with concurrent.futures.ThreadPoolExecutor(self.output.writers, thread_name_prefix="write") as writer:
            thread = threading.Thread(target=device, args=(writer,), name="device", daemon=True)
            thread.start()
            try:
                batch: list[tuple[inp.Item, np.ndarray]] = []
                for item, prepared in self._decoded(items, backend.input_size):
                    if errors:
                        break
                    if isinstance(prepared, str):
                        line = _line(item.source, result=FAILED, error_message=prepared)
                        failures[item.index] = line
                        writes.append(writer.submit(self.output.write, self.layout.failure(item), _dumps(line), "application/json"))
                        counts.failed += 1
                        counts.rejected += 1
                        log.warning("FAILED %s: %s", item.source, prepared)
                    else:
                        batch.append((item, prepared))
                        if len(batch) >= self.batch_size:
                            ready.put(batch)
                            batch = []
                    now = time.perf_counter()
                    if now - last >= PROGRESS_INTERVAL:
                        last = now
                        counts.seconds = now - started
                        self.progress(counts.progress().line())
                if batch and not errors:
                    ready.put(batch)
            finally:
                ready.put(None)
                thread.join()
            if errors:
                raise errors[0]
        for w in writes:
            w.result()  # a write that failed (storage outage) fails the shard: the rerun redoes only it
        counts.seconds = time.perf_counter() - started
        return failures

    # -- the shard's lines and the manifest ---------------------------------------
    def lines(self, items: list[inp.Item], done: set[str], failures: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for item in items:
            if item.index in failures:
                found.append(failures[item.index])
            elif self.layout.failure(item) in done:
                raw = self.output.read(self.layout.failure(item))
                try:
                    line = json.loads(raw or b"")
                except ValueError:
                    line = None
                if not isinstance(line, dict):
                    line = _line(item.source, result=FAILED, error_message="the image could not be predicted")
                found.append(line)
            else:
                loc = self.output.location(self.layout.result(item))
                found.append(_line(item.source, result=SUCCESSFUL, **{"inference-loc": loc}))
        return found

    def finish(self, lines: list[dict[str, Any]], index: int, count: int, order: dict[str, int]) -> str | None:
        """Publish this shard's lines; assemble the manifest when every shard's are there. Its location or None."""
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        self.output.write(self.layout.shard(index, count), text.encode("utf-8"), "application/x-ndjson", durable=True)
        wanted = {self.layout.shard(j, count) for j in range(count)}
        present = self.output.listing(posixpath.join(self.layout.results, SHARDS_DIR))
        if not wanted <= present:
            log.info("shard %d/%d done; %d of %d shards finished, the manifest waits for the rest",
                     index, count, len(wanted & present), count)
            return None
        merged: list[tuple[int, str]] = []
        for j in range(count):
            raw = self.output.read(self.layout.shard(j, count))
            if raw is None:  # removed since the listing: leave the manifest to whoever wrote it
                return None
            for row in raw.decode("utf-8").splitlines():
                if row.strip():
                    merged.append((order.get(json.loads(row).get("source"), len(order)), row))
        merged.sort()
        body = "".join(row + "\n" for _, row in merged).encode("utf-8")
        # Same content from whichever shard gets here (inputs in their sorted order): a race is harmless.
        self.output.write(self.layout.manifest, body, "application/x-ndjson", durable=True)
        return self.output.location(self.layout.manifest)


def load(backend_name: str, model: Path, labels: Path | None, device_id: int, create: Callable[..., Backend]) -> tuple[Backend, list[str]]:
    """The server's backend and labels (processing.resolve_labels). Raises ToolkitMissing / ModelLoadError."""
    backend = create(backend_name, model, device_id)
    try:
        backend.load()
        names, path = processing.resolve_labels(labels, model, backend.num_classes)
    except BaseException:
        backend.close()
        raise
    log.info(
        "model %s loaded: backend %s%s, input %dx%d, %d classes, labels %s, max batch %s",
        model, backend.name, " (pyACL SIMULATOR)" if backend.simulated else "", *backend.input_size,
        backend.num_classes, path or "class indices", backend.max_batch_size or "any",
    )
    return backend, names
