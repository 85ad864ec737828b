"""The HTTP layer in-process: ModelArts API, bad input, batching, readiness, metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ascend_mlops.workloads.server.app import InferenceServer
from ascend_mlops.workloads.server.backends import Backend
from ascend_mlops.workloads.server.backends.acl_backend import AclBackend
from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend
from ascend_mlops.workloads.server.config import ServerConfig
from tests.workloads.server.tinymodel import image_bytes


class GatedBackend(Backend):
    """A real backend whose predict can be held at a gate, to make queueing deterministic."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.model_path)
        self.inner = inner
        self.name, self.platform, self.simulated = inner.name, inner.platform, inner.simulated
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def load(self) -> None:
        self.inner.load()
        self.input_size, self.num_classes = self.inner.input_size, self.inner.num_classes
        self.inputs, self.outputs = self.inner.inputs, self.inner.outputs

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        self.batches.append(len(images))
        return self.inner.predict(images)

    def close(self) -> None:
        self.inner.close()

    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters()

    @property
    def max_batch_size(self) -> int | None:
        return self.inner.max_batch_size


@dataclass
class Running:
    server: InferenceServer
    url: str
    http: aiohttp.ClientSession
    backend: GatedBackend

    async def post_image(self, data: bytes, field: str = "images", **kwargs: Any) -> tuple[int, dict[str, Any], Any]:
        form = aiohttp.FormData()
        form.add_field(field, data, filename="x.jpg", content_type="image/jpeg")
        async with self.http.post(f"{self.url}/", data=form, **kwargs) as response:
            return response.status, dict(response.headers), await response.json()

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        async with self.http.get(f"{self.url}/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(sample.value)
        return 0.0


Starter = Callable[..., "asyncio.Future[Running]"]


@pytest.fixture
async def start(tiny_version: Path, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Running] = []

    async def _start(load: bool = True, backend: Backend | None = None, **overrides: Any) -> Running:
        config = ServerConfig(
            model=tiny_version, backend="tensorflow", name="flowers", host="127.0.0.1", port=0,
            termination_log=str(tmp_path / "termination-log"), **overrides,
        )
        gated = GatedBackend(backend or TensorFlowBackend(tiny_version))
        server = InferenceServer(config, gated)
        port = await server.start()
        http = aiohttp.ClientSession()
        running = Running(server, f"http://127.0.0.1:{port}", http, gated)
        started.append(running)
        if load:
            await server.load()
        return running

    yield _start
    for running in started:
        await running.http.close()
        await running.server.stop()


async def test_post_image_answers_modelarts_shape(start: Callable[..., Any]) -> None:
    r = await start()
    for colour in ("red", "green", "blue"):
        status, headers, body = await r.post_image(image_bytes(colour))
        assert status == 200, body
        assert body["predicted_label"] == colour
        assert [label for label, _ in body["scores"]][0] == colour and len(body["scores"]) == 3
        assert sum(score for _, score in body["scores"]) == pytest.approx(1.0, abs=1e-5)
        assert "infer;dur=" in headers["Server-Timing"] and headers["X-Batch-Size"] == "1"
    status, _, body = await r.post_image(image_bytes("blue", fmt="PNG"), params={"top_k": "1"})
    assert status == 200 and len(body["scores"]) == 1
    assert await r.metric("ascend_mlops_server_requests_total", {"route": "/", "code": "200"}) == 4
    assert await r.metric("ascend_mlops_server_stage_duration_seconds_count", {"stage": "decode"}) == 4
    assert await r.metric("ascend_mlops_server_simulated") == 0


async def test_bad_requests_get_json_errors(start: Callable[..., Any]) -> None:
    r = await start(max_body_bytes=4096)
    url = r.url

    status, _, body = await r.post_image(image_bytes("red"), field="file")
    assert status == 400 and "no file field named 'images'" in body["error"]

    async with r.http.post(f"{url}/", data=image_bytes("red"), headers={"Content-Type": "image/jpeg"}) as resp:
        assert resp.status == 415 and "multipart/form-data" in (await resp.json())["error"]
    async with r.http.post(f"{url}/", json={"images": "x"}) as resp:
        assert resp.status == 415 and "application/json" in (await resp.json())["error"]

    status, _, body = await r.post_image(b"this is not an image")
    assert status == 400 and "not a JPEG, PNG or BMP" in body["error"]
    status, _, body = await r.post_image(image_bytes("red", size=64)[:300])
    assert status == 400 and "could not be decoded" in body["error"]
    status, _, body = await r.post_image(b"")
    assert status == 400 and "empty" in body["error"]

    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    import io

    from PIL import Image

    big = io.BytesIO()
    Image.fromarray(noise).save(big, "BMP")
    status, _, body = await r.post_image(big.getvalue())
    assert status == 413 and "--max-body-bytes" in body["error"]

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is enforced while streaming.
        boundary = b"--b\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x\"\r\n\r\n"
        yield boundary
        for _ in range(10):
            yield b"\0" * 1024
        yield b"\r\n--b--\r\n"

    async with r.http.post(f"{url}/", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}) as resp:
        assert resp.status == 413 and "error" in await resp.json()

    async with r.http.post(f"{url}/", data=b"garbage", headers={"Content-Type": "multipart/form-data"}) as resp:
        assert resp.status == 400 and "multipart" in (await resp.json())["error"]
    status, _, body = await r.post_image(image_bytes("red"), params={"top_k": "zero"})
    assert status == 400 and "top_k" in body["error"]

    async with r.http.get(f"{url}/v2/models/other") as resp:
        assert resp.status == 404 and "serves 'flowers'" in (await resp.json())["error"]
    async with r.http.get(f"{url}/no/such/path") as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with r.http.post(f"{url}/v2/models/flowers/infer", data=b"{not json") as resp:
        assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]
    bad_shape = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 4, 4, 3], "data": [0.0] * 48}]}
    async with r.http.post(f"{url}/v2/models/flowers/infer", json=bad_shape) as resp:
        assert resp.status == 400 and "[N, 8, 8, 3]" in (await resp.json())["error"]
    wrong_count = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8, 3], "data": [0.0] * 5}]}
    async with r.http.post(f"{url}/v2/models/flowers/infer", json=wrong_count) as resp:
        assert resp.status == 400 and "192 FP32 values" in (await resp.json())["error"]
    # The server is still healthy after all that.
    status, _, body = await r.post_image(image_bytes("green"))
    assert status == 200 and body["predicted_label"] == "green"


async def test_queue_full_is_503_with_retry_after(start: Callable[..., Any]) -> None:
    r = await start(max_queue=1, max_batch_size=1, max_batch_delay_ms=0)
    r.backend.gate.clear()
    r.backend.entered.clear()
    first = asyncio.create_task(r.post_image(image_bytes("red")))
    await asyncio.get_running_loop().run_in_executor(None, r.backend.entered.wait, 30)
    second = asyncio.create_task(r.post_image(image_bytes("green")))
    deadline = asyncio.get_running_loop().time() + 30
    while await r.metric("ascend_mlops_server_queue_depth") < 1:
        assert asyncio.get_running_loop().time() < deadline, "second request never queued"
        await asyncio.sleep(0.01)
    status, headers, body = await r.post_image(image_bytes("blue"))
    assert status == 503 and headers["Retry-After"] == "1" and "--max-queue 1" in body["error"]
    r.backend.gate.set()
    assert (await first)[2]["predicted_label"] == "red"
    assert (await second)[2]["predicted_label"] == "green"


async def test_concurrent_requests_form_batches(start: Callable[..., Any]) -> None:
    r = await start(max_batch_size=8, max_batch_delay_ms=1)
    r.backend.gate.clear()  # hold the first batch so that the others queue up behind it
    r.backend.entered.clear()
    colours = ["red", "green", "blue"] * 6
    tasks = [asyncio.create_task(r.post_image(image_bytes(c))) for c in colours]
    await asyncio.get_running_loop().run_in_executor(None, r.backend.entered.wait, 30)
    deadline = asyncio.get_running_loop().time() + 30
    while await r.metric("ascend_mlops_server_queue_depth") < 8:
        assert asyncio.get_running_loop().time() < deadline, "requests never queued"
        await asyncio.sleep(0.01)
    r.backend.gate.set()
    results = await asyncio.gather(*tasks)
    assert [body["predicted_label"] for _, _, body in results] == colours
    assert max(int(headers["X-Batch-Size"]) for _, headers, _ in results) > 1
    assert max(r.backend.batches) == 8 and sum(r.backend.batches) == len(colours)
    assert await r.metric("ascend_mlops_server_batch_size_count") == len(r.backend.batches)
    assert await r.metric("ascend_mlops_server_batch_size_bucket", {"le": "1.0"}) < len(r.backend.batches)


async def test_not_ready_until_loaded(start: Callable[..., Any]) -> None:
    r = await start(load=False)
    async with r.http.get(f"{r.url}/v2/health/live") as resp:
        assert resp.status == 200 and await resp.json() == {"live": True}
    async with r.http.get(f"{r.url}/v2/health/ready") as resp:
        assert resp.status == 503 and (await resp.json())["ready"] is False
    status, headers, body = await r.post_image(image_bytes("red"))
    assert status == 503 and "Retry-After" in headers and "still loading" in body["error"]
    async with r.http.get(f"{r.url}/") as resp:
        assert resp.status == 503
    await r.server.load()
    async with r.http.get(f"{r.url}/v2/health/ready") as resp:
        assert resp.status == 200
    async with r.http.get(f"{r.url}/v2/models/flowers/ready") as resp:
        assert resp.status == 200


async def test_a_failed_load_keeps_ready_false_with_the_reason(start: Callable[..., Any], tmp_path: Path) -> None:
    r = await start(load=False, backend=TensorFlowBackend(tmp_path / "missing"))
    with pytest.raises(Exception, match="no such file"):
        await r.server.load()
    async with r.http.get(f"{r.url}/v2/health/ready") as resp:
        body = await resp.json()
        assert resp.status == 503 and body["ready"] is False and "no such file" in body["error"]


async def test_simulated_acl_is_labelled_everywhere(sim: Any, start: Callable[..., Any], tiny_om: Path) -> None:
    r = await start(backend=AclBackend(tiny_om, sim, simulated=True))
    async with r.http.get(f"{r.url}/v2/models/flowers") as resp:
        meta = await resp.json()
    assert meta["parameters"]["simulated"] is True and "SIMULATOR" in meta["parameters"]["note"]
    assert await r.metric("ascend_mlops_server_simulated") == 1
    assert await r.metric("ascend_mlops_server_model_info", {"simulated": "true", "backend": "acl"}) == 1
    async with r.http.get(f"{r.url}/") as resp:
        assert resp.status == 200 and 'id="simulated"' in await resp.text()
    status, _, body = await r.post_image(image_bytes("blue"))
    assert status == 200 and body["predicted_label"] == "blue"


async def test_v2_infer_json_fp32_and_base64_bytes(start: Callable[..., Any]) -> None:
    r = await start()
    pixels = np.zeros((2, 8, 8, 3), dtype=np.float32)
    pixels[0, ..., 1] = 255
    pixels[1, ..., 2] = 255
    request = {"id": "42", "inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 8, 8, 3], "data": pixels.tolist()}]}
    async with r.http.post(f"{r.url}/v2/models/flowers/infer", json=request) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["id"] == "42" and body["model_name"] == "flowers"
    logits = np.array(body["outputs"][0]["data"]).reshape(body["outputs"][0]["shape"])
    assert list(np.argmax(logits, axis=1)) == [1, 2]

    files = [base64.b64encode(image_bytes(c)).decode() for c in ("red", "blue")]
    request = {
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": files}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    }
    async with r.http.post(f"{r.url}/v2/models/flowers/versions/1/infer", data=json.dumps(request)) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    output = body["outputs"][0]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    assert output["data"][0].endswith(":0:red") and output["data"][2].endswith(":2:blue")


async def test_an_acl_error_during_inference_is_a_500_naming_the_call(
    sim: Any, start: Callable[..., Any], tiny_om: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await start(backend=AclBackend(tiny_om, sim, simulated=True))
    monkeypatch.setattr(sim.mdl, "execute", lambda *args: 507011)  # the device faults from now on
    status, _, body = await r.post_image(image_bytes("red"))
    assert status == 500
    assert "acl.mdl.execute failed with code 507011 (ACL_ERROR_RT_MODEL_EXECUTE)" in body["error"]
    monkeypatch.undo()
    status, _, body = await r.post_image(image_bytes("red"))  # the server survived it
    assert status == 200 and body["predicted_label"] == "red"
