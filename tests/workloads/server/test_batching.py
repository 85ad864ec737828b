"""Dynamic batching on a fake clock (looptime): batches close when full or when the delay expires."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ascend_mlops.workloads.server.batching import Batcher
from ascend_mlops.workloads.server.errors import InferenceFailed, ServerOverloaded
from ascend_mlops.workloads.server.metrics import ServerMetrics


class Recorder:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.sizes.append(len(images))
        return images.reshape(len(images), -1)[:, :2] * 2


def image(value: float) -> np.ndarray:
    return np.full((2, 1, 1), value, dtype=np.float32)


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1)


@pytest.mark.looptime
async def test_a_full_batch_runs_at_once_and_a_partial_one_after_the_delay(executor: ThreadPoolExecutor) -> None:
    infer = Recorder()
    batcher = Batcher(infer, executor, max_batch_size=4, max_delay=10.0, max_queue=100)
    batcher.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(batcher.submit(image(i)) for i in range(4)))
    assert loop.time() - start < 1.0  # full: no waiting for the delay
    assert [r.logits[0] for r in results] == [0, 2, 4, 6] and all(r.batch_size == 4 for r in results)

    start = loop.time()
    results = await asyncio.gather(*(batcher.submit(image(i)) for i in range(3)))
    assert loop.time() - start == pytest.approx(10.0, abs=0.5)  # waited the whole delay for a 4th
    assert infer.sizes == [4, 3]
    await batcher.stop()


@pytest.mark.looptime
async def test_more_requests_than_a_batch_split_into_batches(executor: ThreadPoolExecutor) -> None:
    infer = Recorder()
    metrics = ServerMetrics()
    batcher = Batcher(infer, executor, max_batch_size=4, max_delay=0.005, max_queue=100, metrics=metrics)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(image(i)) for i in range(10)))
    assert [float(r.logits[0]) for r in results] == [2.0 * i for i in range(10)]
    assert sorted(infer.sizes, reverse=True) == [4, 4, 2]
    assert metrics.registry.get_sample_value("ascend_mlops_server_batch_size_count") == 3
    await batcher.stop()


async def test_a_full_queue_answers_overloaded(executor: ThreadPoolExecutor) -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocking(images: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(30)
        return images.reshape(len(images), -1)

    batcher = Batcher(blocking, executor, max_batch_size=1, max_delay=0, max_queue=1)
    batcher.start()
    first = asyncio.create_task(batcher.submit(image(1)))
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
    second = asyncio.create_task(batcher.submit(image(2)))
    await asyncio.sleep(0)  # let `second` enqueue
    assert batcher.pending == 1
    with pytest.raises(ServerOverloaded, match="--max-queue 1"):
        await batcher.submit(image(3))
    release.set()
    assert (await first).logits[0] == 1 and (await second).logits[0] == 2
    await batcher.stop()


@pytest.mark.looptime
async def test_flush_stops_waiting_and_stop_drains(executor: ThreadPoolExecutor) -> None:
    infer = Recorder()
    batcher = Batcher(infer, executor, max_batch_size=8, max_delay=3600.0, max_queue=100)
    batcher.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = [asyncio.create_task(batcher.submit(image(i))) for i in range(3)]
    await asyncio.sleep(1)
    batcher.flush()
    await asyncio.gather(*pending)
    assert loop.time() - start < 10 and infer.sizes == [3]
    await batcher.stop()
    with pytest.raises(InferenceFailed):
        await batcher.submit(image(0))


async def test_a_backend_error_fails_the_batch_not_the_batcher(executor: ThreadPoolExecutor) -> None:
    calls = []

    def flaky(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return images.reshape(len(images), -1)

    batcher = Batcher(flaky, executor, max_batch_size=1, max_delay=0, max_queue=10)
    batcher.start()
    with pytest.raises(InferenceFailed, match="device lost"):
        await batcher.submit(image(1))
    assert (await batcher.submit(image(5))).logits[0] == 5
    await batcher.stop()


@pytest.mark.looptime
async def test_a_batch_does_not_wait_when_every_request_in_flight_is_in_it(executor: ThreadPoolExecutor) -> None:
    infer = Recorder()
    in_flight = [2]
    batcher = Batcher(infer, executor, max_batch_size=8, max_delay=60.0, max_queue=100, in_flight=lambda: in_flight[0])
    batcher.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(batcher.submit(image(1)), batcher.submit(image(2)))
    assert loop.time() - start < 1.0 and infer.sizes == [2]
    in_flight[0] = 3  # a third request is still being decoded: wait for it, up to the delay
    start = loop.time()
    await asyncio.gather(batcher.submit(image(1)), batcher.submit(image(2)))
    assert loop.time() - start == pytest.approx(60.0, abs=1.0) and infer.sizes == [2, 2]
    await batcher.stop()
