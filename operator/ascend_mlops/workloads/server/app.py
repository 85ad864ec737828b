"""The HTTP layer: ModelArts' image API, the Open Inference Protocol (KServe v2),
Prometheus metrics and a small upload page, over one backend and one batcher.

Domain errors (`errors.ServerError`) become JSON bodies `{"error": "..."}`
with their status code; nothing a client sends can crash the server.

With `--auth-tokens` the routes that run or describe the model (PROTECTED_ROUTES)
need a token; the health routes (kubelet probes), the server metadata (`/v2`)
and the upload page (which asks for the token) stay open. With
`--metrics-port` /metrics is served by a second listener on that port only.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ascend_mlops import __version__
from ascend_mlops.api import contract
from ascend_mlops.workloads.server import auth, processing
from ascend_mlops.workloads.server.backends import Backend
from ascend_mlops.workloads.server.batching import Batcher, BatchResult
from ascend_mlops.workloads.server.config import ServerConfig
from ascend_mlops.workloads.server.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ServerError,
    ServerOverloaded,
    UnsupportedMediaType,
)
from ascend_mlops.workloads.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

SERVER_NAME = "ascend-mlops"
MODEL_VERSION = "1"
IMAGE_FIELD = "images"
HEADER_INFERENCE_LENGTH = "Inference-Header-Content-Length"
HEADER_BATCH_SIZE = "X-Batch-Size"
INFERENCE_ROUTES = contract.INFERENCE_ROUTES
MODEL_METADATA_ROUTES = frozenset({"/v2/models/{name}", "/v2/models/{name}/versions/{version}"})
# (method, canonical route) that need a token when --auth-tokens is given: running the model, and its
# metadata (labels, tensors, backend). Health, /v2 and the page stay open.
PROTECTED_ROUTES = frozenset(
    {("POST", route) for route in INFERENCE_ROUTES} | {("GET", route) for route in MODEL_METADATA_ROUTES}
)
AUTH_REALM = SERVER_NAME
_CHUNK = 64 * 1024


def _error_response(error: ServerError) -> web.Response:
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"error": error.message}, status=error.status, headers=headers)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    addresses = runner.addresses  # the bound port, which differs from the configured one with port 0
    return int(addresses[0][1]) if addresses else configured


def _server_timing(stages: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in stages.items())


def _serialize_bytes(elements: list[bytes]) -> bytes:
    """The Open Inference Protocol's binary BYTES layout: 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def _deserialize_bytes(data: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInput("BYTES tensor data is truncated (a 4-byte length prefix is cut off)")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInput("BYTES tensor data is truncated (an element is shorter than its length prefix)")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


class InferenceServer:
    """One model behind HTTP. Lifecycle: start() (live), load() (ready), stop() (drain, release)."""

    def __init__(self, config: ServerConfig, backend: Backend, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.backend = backend
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.ready = False
        self.load_error: str | None = None
        self.labels: list[str] = []
        self.labels_path: Path | None = None
        self.batcher: Batcher | None = None
        self.port = 0
        # pyACL binds contexts to threads: every backend call runs on this one thread.
        self._infer_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._cpu_executor = ThreadPoolExecutor(max_workers=config.preprocess_threads, thread_name_prefix="preprocess")
        self._runner: web.AppRunner | None = None
        self._page = ""
        self._closed = False
        self._in_flight = 0  # inference requests being handled, for the batcher and for draining
        self._idle = asyncio.Event()
        self._idle.set()
        # Raises auth.TokenSourceError when the source is missing or holds no token.
        self.auth = auth.TokenSource(config.auth_tokens) if config.auth_tokens is not None else None
        if self.auth is not None:
            for outcome in auth.OUTCOMES:
                self.metrics.auth.labels(outcome)  # every outcome is a series from the start, at 0
        self.metrics_port: int | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.app = self._build_app()

    # -- lifecycle -------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.config.max_body_bytes)
        app.router.add_get("/", self.handle_page)
        app.router.add_post("/", self.handle_modelarts)
        app.router.add_get("/v2", self.handle_server_metadata)
        app.router.add_get(contract.HEALTH_LIVE_PATH, self.handle_live)
        app.router.add_get(contract.HEALTH_READY_PATH, self.handle_ready)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.router.add_get(prefix, self.handle_model_metadata)
            app.router.add_get(f"{prefix}/ready", self.handle_model_ready)
            app.router.add_post(f"{prefix}/infer", self.handle_infer)
        if self.config.metrics_port is None:
            app.router.add_get(contract.METRICS_PATH, self.handle_metrics)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def start(self) -> int:
        """Listen (live, not ready yet). Returns the bound port (useful with port 0)."""
        if self.config.metrics_port is not None:
            # Its own application and runner: nothing but /metrics there, and it outlives the drain.
            metrics_app = web.Application()
            metrics_app.router.add_get(contract.METRICS_PATH, self.handle_metrics)
            self._metrics_runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, self.config.host, self.config.metrics_port).start()
            self.metrics_port = _bound_port(self._metrics_runner, self.config.metrics_port)
            log.info("metrics on http://%s:%d%s only", self.config.host, self.metrics_port, contract.METRICS_PATH)
        self._runner = web.AppRunner(
            self.app, shutdown_timeout=self.config.shutdown_timeout, access_log=None, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = _bound_port(self._runner, self.config.port)
        log.info(
            "listening on http://%s:%d (model %r not loaded yet%s)", self.config.host, self.port, self.config.name,
            ", tokens required" if self.auth is not None else "",
        )
        return self.port

    async def load(self) -> None:
        """Load the model on the inference thread; ready only once everything worked."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            model, labels = self.config.model, self.config.labels
            if self.config.model_uri or self.config.labels_uri:
                from ascend_mlops.workloads.server import remote

                model, labels = await loop.run_in_executor(
                    None, remote.fetch, self.config.model_uri, model, self.config.labels_uri, labels
                )
                self.backend.model_path = model
            await loop.run_in_executor(self._infer_executor, self.backend.load)
            self.labels, self.labels_path = processing.resolve_labels(labels, model, self.backend.num_classes)
        except BaseException as exc:
            self.ready = False
            self.load_error = str(exc)
            raise
        cap = self.backend.max_batch_size
        max_batch = min(self.config.max_batch_size, cap) if cap else self.config.max_batch_size
        self.batcher = Batcher(
            self.backend.predict,
            self._infer_executor,
            max_batch_size=max_batch,
            max_delay=self.config.max_batch_delay_ms / 1000.0,
            max_queue=self.config.max_queue,
            metrics=self.metrics,
            in_flight=lambda: self._in_flight,
        )
        self.batcher.start()
        self._page = self._render_page()
        simulated = "true" if self.backend.simulated else "false"
        self.metrics.model_info.labels(self.config.name, self.backend.name, self.backend.platform, simulated).set(1)
        self.metrics.simulated.set(1 if self.backend.simulated else 0)
        self.metrics.model_ready.labels(self.config.name).set(1)
        self.ready = True
        log.info(
            "model %r ready in %.1fs: backend %s%s, input %dx%d, %d classes, labels %s, batches up to %d",
            self.config.name, time.perf_counter() - started, self.backend.name,
            " (pyACL SIMULATOR)" if self.backend.simulated else "",
            *self.backend.input_size, self.backend.num_classes,
            self.labels_path or "class indices", max_batch,
        )

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, release the backend. Idempotent.

        aiohttp's own graceful shutdown drops the bytes of a request that is
        still uploading, so the listener is closed first and inference
        requests in flight are awaited here, before aiohttp closes connections.
        """
        self.ready = False
        self.metrics.model_ready.labels(self.config.name).set(0)
        if self.batcher is not None:
            self.batcher.flush()
        if self._runner is None:
            await self._release()
            await self._stop_metrics()
            return
        runner, self._runner = self._runner, None
        for site in list(runner.sites):
            await site.stop()
        if self._in_flight:
            log.info("waiting for %d request(s) in flight", self._in_flight)
            try:
                await asyncio.wait_for(self._idle.wait(), self.config.shutdown_timeout)
            except TimeoutError:
                log.warning("%d request(s) still in flight after %.0fs; closing", self._in_flight, self.config.shutdown_timeout)
        await runner.cleanup()  # -> _on_shutdown, closes connections, -> _on_cleanup
        await self._stop_metrics()

    async def _stop_metrics(self) -> None:
        if self._metrics_runner is not None:
            runner, self._metrics_runner = self._metrics_runner, None
            await runner.cleanup()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.ready = False
        if self.batcher is not None:
            self.batcher.flush()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self._release()

    async def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.batcher is not None:
            await self.batcher.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._infer_executor, self.backend.close)
        self._infer_executor.shutdown(wait=True)
        self._cpu_executor.shutdown(wait=True)
        log.info("model %r released", self.config.name)

    # -- middleware ------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        started = time.perf_counter()
        denied = self._authenticate(request, route)
        response = denied if denied is not None else await self._handle(request, handler, route)
        self.metrics.requests.labels(route, request.method, str(response.status)).inc()
        self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    def _authenticate(self, request: web.Request, route: str) -> web.Response | None:
        """None when the request may go on; else the 401 to answer (it never reaches the model)."""
        if self.auth is None or (request.method, route) not in PROTECTED_ROUTES:
            return None
        token = auth.presented_token(request.headers)
        if token is None:
            outcome = auth.OUTCOME_MISSING
        elif self.auth.check(token):
            outcome = auth.OUTCOME_OK
        else:
            outcome = auth.OUTCOME_INVALID
        self.metrics.auth.labels(outcome).inc()
        if outcome == auth.OUTCOME_OK:
            return None
        if outcome == auth.OUTCOME_MISSING:
            message = (
                f"model {self.config.name!r} needs a token: send the header "
                f"'{auth.HEADER_AUTHORIZATION}: Bearer <token>' (or '{auth.HEADER_AUTH_TOKEN}: <token>')"
            )
            challenge = f'Bearer realm="{AUTH_REALM}"'
        else:
            message = f"the token is not valid for model {self.config.name!r}"
            challenge = f'Bearer realm="{AUTH_REALM}", error="invalid_token", error_description="the token is not valid"'
        return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": challenge})

    async def _handle(self, request: web.Request, handler: Any, route: str) -> web.StreamResponse:
        counted = route in INFERENCE_ROUTES and request.method == "POST"
        if counted:
            self._in_flight += 1
            self._idle.clear()
            self.metrics.in_flight.inc()
        try:
            response: web.StreamResponse = await handler(request)
        except ServerError as exc:
            response = _error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            response = _error_response(
                PayloadTooLarge(f"the request body is larger than {contract.FLAG_MAX_BODY_BYTES} {self.config.max_body_bytes}")
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = web.json_response({"error": exc.reason}, status=exc.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unexpected error on %s %s", request.method, request.path)
            response = web.json_response({"error": f"internal error: {exc.__class__.__name__}: {exc}"}, status=500)
        finally:
            if counted:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
                self.metrics.in_flight.dec()
        return response

    # -- helpers ---------------------------------------------------------------
    def _require_ready(self) -> Batcher:
        # Not `self.ready`: that turns false at SIGTERM, while requests in flight still get served.
        if self.batcher is None or self._closed:
            if self.load_error:
                reason = f"the model failed to load: {self.load_error}"
            else:
                reason = "the server is shutting down" if self._closed else "the model is still loading"
            raise ModelNotReady(f"model {self.config.name!r} is not ready: {reason}")
        return self.batcher

    def _require_model(self, request: web.Request) -> None:
        name = request.match_info["name"]
        if name != self.config.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.config.name!r}")
        version = request.match_info.get("version")
        if version is not None and version != MODEL_VERSION:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; the only version is {MODEL_VERSION!r}")

    def _prepare(self, data: bytes) -> tuple[np.ndarray, float, float]:
        """decode + preprocess one image (runs on the preprocessing threads)."""
        t0 = time.perf_counter()
        image = processing.decode(data, self.backend.input_size)
        t1 = time.perf_counter()
        array = processing.to_input(image, self.backend.input_size)
        return array, t1 - t0, time.perf_counter() - t1

    async def _classify(self, data: bytes) -> tuple[BatchResult, dict[str, float]]:
        batcher = self._require_ready()
        loop = asyncio.get_running_loop()
        array, decode_s, preprocess_s = await loop.run_in_executor(self._cpu_executor, self._prepare, data)
        result = await batcher.submit(array)
        return result, {
            "decode": decode_s, "preprocess": preprocess_s,
            "queue": result.queue_seconds, "infer": result.infer_seconds,
        }

    async def _read_image_field(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"the request body is {request.content_length} bytes, over the {limit}-byte limit "
                f"({contract.FLAG_MAX_BODY_BYTES}); send a smaller image"
            )
        if request.content_type != "multipart/form-data":
            raise UnsupportedMediaType(
                f"POST / takes multipart/form-data with a file field named {IMAGE_FIELD!r}, "
                f"got Content-Type {request.content_type or 'none'!r}"
            )
        total = 0
        found: bytes | None = None
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue  # nested multipart: not ours
                chunks = bytearray()
                while True:
                    chunk = await part.read_chunk(_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge(
                            f"the request body is over the {limit}-byte limit ({contract.FLAG_MAX_BODY_BYTES}); "
                            "send a smaller image"
                        )
                    if part.name == IMAGE_FIELD and found is None:
                        chunks += chunk
                if part.name == IMAGE_FIELD and found is None:
                    found = bytes(chunks)
        except ServerError:
            raise
        except (ValueError, AssertionError, RuntimeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"malformed multipart/form-data body: {exc}") from exc
        if found is None:
            raise InvalidInput(f"the form has no file field named {IMAGE_FIELD!r}; send the image as {IMAGE_FIELD}=@file.jpg")
        return found

    # -- ModelArts ---------------------------------------------------------------
    async def handle_modelarts(self, request: web.Request) -> web.Response:
        """`POST /` multipart `images` -> {"predicted_label": ..., "scores": [[label, score], ...]}."""
        started = time.perf_counter()
        self._require_ready().check_room()
        top = self._top_k_param(request)
        data = await self._read_image_field(request)
        read_s = time.perf_counter() - started
        result, stages = await self._classify(data)
        t_post = time.perf_counter()
        body = json.dumps(processing.classification(result.logits, self.labels, top))
        finished = time.perf_counter()
        timings = {"read": read_s, **stages, "postprocess": finished - t_post, "total": finished - started}
        self.metrics.observe_stages(timings)
        return web.Response(
            text=body,
            content_type="application/json",
            headers={"Server-Timing": _server_timing(timings), HEADER_BATCH_SIZE: str(result.batch_size)},
        )

    def _top_k_param(self, request: web.Request) -> int:
        raw = request.query.get("top_k")
        if raw is None:
            return processing.DEFAULT_TOP_K
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise InvalidInput(f"top_k must be a positive integer, got {raw!r}")
        return value

    # -- page --------------------------------------------------------------------
    def _render_page(self) -> str:
        # Package data beside this module (pyproject ships *.html).
        template = resources.files("ascend_mlops.workloads.server").joinpath("upload_page.html").read_text("utf-8")
        banner = (
            '<p class="sim" id="simulated">SIMULATED Ascend: this model runs on the pyACL simulator (CPU), not on an NPU.</p>'
            if self.backend.simulated
            else ""
        )
        if self.auth is not None:
            # The page is open, the model's metadata is not: the count, not the names.
            labels = f"{len(self.labels)} (names need a token)"
            token_field = (
                '<input type="password" id="token" name="token" placeholder="token" autocomplete="off" '
                'aria-label="token">'
            )
        else:
            labels = ", ".join(self.labels[:20]) + (" ..." if len(self.labels) > 20 else "")
            token_field = ""
        values = {
            "{{MODEL}}": html.escape(self.config.name),
            "{{BACKEND}}": html.escape(f"{self.backend.name} / {self.backend.platform}"),
            "{{SIMULATED}}": banner,
            "{{LABELS}}": html.escape(labels),
            "{{AUTH}}": "required" if self.auth is not None else "off",
            "{{TOKEN_FIELD}}": token_field,
        }
        for key, value in values.items():
            template = template.replace(key, value)
        return template

    async def handle_page(self, request: web.Request) -> web.Response:
        if not self._page:
            return web.Response(
                text=f"<!doctype html><title>{SERVER_NAME}</title><p>Model {html.escape(self.config.name)} is "
                f"not ready: {html.escape(self.load_error or 'loading')}. Reload in a moment.</p>",
                content_type="text/html",
                status=503,
                headers={"Retry-After": "5"},
            )
        return web.Response(text=self._page, content_type="text/html")

    # -- Open Inference Protocol -------------------------------------------------
    async def handle_server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data", "classification"]}
        )

    async def handle_live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def handle_ready(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"ready": True})
        return web.json_response(
            {"ready": False, "error": self.load_error or "the model is still loading"},
            status=503,
            headers={"Retry-After": "5"},
        )

    async def handle_model_ready(self, request: web.Request) -> web.Response:
        self._require_model(request)
        return await self.handle_ready(request)

    async def handle_model_metadata(self, request: web.Request) -> web.Response:
        self._require_model(request)
        self._require_ready()
        return web.json_response(
            {
                "name": self.config.name,
                "versions": [MODEL_VERSION],
                "platform": self.backend.platform,
                "inputs": [t.to_json() for t in self.backend.inputs],
                "outputs": [t.to_json() for t in self.backend.outputs],
                "parameters": {
                    **self.backend.parameters(),
                    "labels": list(self.labels),
                    # The same input also takes encoded image files: datatype BYTES, shape [N].
                    "accepts_image_bytes": True,
                    "max_batch_size": self.batcher.max_batch_size if self.batcher else 0,
                    "max_batch_delay_ms": self.config.max_batch_delay_ms,
                },
            }
        )

    async def handle_infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self._require_model(request)
        batcher = self._require_ready()
        batcher.check_room()  # before the body: refusing under overload must cost the server nothing
        raw = await request.read()
        header_length = request.headers.get(HEADER_INFERENCE_LENGTH)
        if header_length is not None:
            try:
                split = int(header_length)
            except ValueError:
                split = -1
            if not 0 < split <= len(raw):
                raise InvalidInput(f"{HEADER_INFERENCE_LENGTH} {header_length!r} does not fit a {len(raw)}-byte body")
            header_bytes, binary = raw[:split], raw[split:]
        else:
            header_bytes, binary = raw, b""
        try:
            body = json.loads(header_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"the inference request is not valid JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
            raise InvalidInput(
                'the request needs "inputs" with exactly one tensor: "images" as FP32 [N,H,W,3] or as BYTES [N] image files'
            )
        tensor = body["inputs"][0]
        if not isinstance(tensor, dict):
            raise InvalidInput("inputs[0] must be an object with name, datatype, shape and data")
        arrays, decode_s, preprocess_s = await self._infer_inputs(tensor, binary)
        results = await batcher.submit_many(arrays)
        t_post = time.perf_counter()
        logits = np.stack([r.logits for r in results]).astype(np.float32)
        response_outputs, blobs = self._infer_outputs(body, logits)
        reply: dict[str, Any] = {"model_name": self.config.name, "model_version": MODEL_VERSION, "outputs": response_outputs}
        if "id" in body:
            reply["id"] = body["id"]
        finished = time.perf_counter()
        timings = {
            "read": 0.0, "decode": decode_s, "preprocess": preprocess_s,
            "queue": max(r.queue_seconds for r in results), "infer": max(r.infer_seconds for r in results),
            "postprocess": finished - t_post, "total": finished - started,
        }
        self.metrics.observe_stages(timings)
        headers = {"Server-Timing": _server_timing(timings), HEADER_BATCH_SIZE: str(max(r.batch_size for r in results))}
        text = json.dumps(reply)
        if not blobs:
            return web.Response(text=text, content_type="application/json", headers=headers)
        header = text.encode()
        headers[HEADER_INFERENCE_LENGTH] = str(len(header))
        return web.Response(body=header + b"".join(blobs), content_type="application/octet-stream", headers=headers)

    async def _infer_inputs(self, tensor: dict[str, Any], binary: bytes) -> tuple[list[np.ndarray], float, float]:
        datatype = str(tensor.get("datatype", ""))
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or not shape:
            raise InvalidInput(f"inputs[0].shape must be a list of non-negative integers, got {shape!r}")
        params = tensor.get("parameters") or {}
        binary_size = params.get("binary_data_size") if isinstance(params, dict) else None
        count = shape[0]
        if count < 1 or count > self.config.max_queue:
            raise InvalidInput(f"inputs[0] must hold 1..{self.config.max_queue} images, got {count}")
        if binary_size is not None and (not isinstance(binary_size, int) or binary_size != len(binary)):
            raise InvalidInput(f"binary_data_size {binary_size!r} does not match the {len(binary)} bytes after the JSON header")
        if datatype == "FP32":
            h, w = self.backend.input_size
            if shape[1:] != [h, w, 3]:
                raise InvalidInput(f"FP32 images must have shape [N, {h}, {w}, 3] (NHWC RGB in [0, 255]), got {shape}")
            try:
                if binary_size is not None:
                    array = np.frombuffer(binary, dtype="<f4").reshape(shape)
                else:
                    array = np.asarray(tensor.get("data"), dtype=np.float32).reshape(shape)
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"inputs[0].data does not hold {int(np.prod(shape))} FP32 values for shape {shape}: {exc}") from exc
            return [np.ascontiguousarray(row) for row in array.astype(np.float32, copy=False)], 0.0, 0.0
        if datatype == "BYTES":
            if int(np.prod(shape)) != count:
                raise InvalidInput(f"BYTES images must have shape [N] or [N, 1], got {shape}")
            if binary_size is not None:
                files = _deserialize_bytes(binary)
            else:
                data = tensor.get("data")
                if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
                    raise InvalidInput("BYTES data in JSON must be a list of base64 strings (or use binary data)")
                try:
                    files = [base64.b64decode(d, validate=True) for d in data]
                except ValueError as exc:
                    raise InvalidInput(f"BYTES data is not valid base64: {exc}") from exc
            if len(files) != count:
                raise InvalidInput(f"shape says {count} images but the data holds {len(files)}")
            loop = asyncio.get_running_loop()
            prepared = await asyncio.gather(*(loop.run_in_executor(self._cpu_executor, self._prepare, f) for f in files))
            return [p[0] for p in prepared], max(p[1] for p in prepared), max(p[2] for p in prepared)
        raise InvalidInput(f"inputs[0].datatype must be FP32 (pixels) or BYTES (image files), got {datatype!r}")

    def _infer_outputs(self, body: dict[str, Any], logits: np.ndarray) -> tuple[list[dict[str, Any]], list[bytes]]:
        params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        binary_default = bool(params.get("binary_data_output", False)) if params else False
        requested = body.get("outputs")
        if requested is None:
            requested = [{"name": "logits"}]
        if not isinstance(requested, list):
            raise InvalidInput('"outputs" must be a list')
        outputs, blobs = [], []
        for spec in requested:
            name = spec.get("name") if isinstance(spec, dict) else None
            if name != "logits":
                raise InvalidInput(f"unknown output {name!r}; the model's output is 'logits'")
            out_params = spec.get("parameters") or {}
            binary = bool(out_params.get("binary_data", binary_default))
            classes = int(out_params.get("classification", 0) or 0)
            if classes > 0:
                probabilities = processing.softmax(logits)
                k = min(classes, probabilities.shape[1])
                # Triton's classification format: "<score>:<class index>:<label>", best first.
                rows = [
                    [f"{p[i]:f}:{i}:{self.labels[i]}" for i in np.argsort(-p, kind="stable")[:k]]
                    for p in probabilities
                ]
                entry: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": [len(rows), k]}
                flat = [s for row in rows for s in row]
                if binary:
                    blob = _serialize_bytes([s.encode() for s in flat])
                    entry["parameters"] = {"binary_data_size": len(blob)}
                    blobs.append(blob)
                else:
                    entry["data"] = flat
            else:
                entry = {"name": name, "datatype": "FP32", "shape": list(logits.shape)}
                if binary:
                    blob = logits.astype("<f4").tobytes()
                    entry["parameters"] = {"binary_data_size": len(blob)}
                    blobs.append(blob)
                else:
                    entry["data"] = [float(v) for v in logits.reshape(-1)]
            outputs.append(entry)
        return outputs, blobs

    # -- metrics -----------------------------------------------------------------
    async def handle_metrics(self, request: web.Request) -> web.Response:
        payload = generate_latest(self.metrics.registry)
        response = web.Response(body=payload)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


__all__ = ["InferenceServer", "ServerOverloaded"]
