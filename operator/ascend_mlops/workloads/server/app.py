"""The HTTP layer: ModelArts' image API, the Open Inference Protocol (KServe v2),
Prometheus metrics and a small upload page, over one backend and one batcher.

Domain errors (`errors.ServerError`) become JSON bodies `{"error": "..."}`
with their status code; nothing a client sends can crash the server. Every
byte a client sends is read and checked in `parsing` (the one boundary that
turns malformed input into a 4xx), and a request is parsed whole before it
reaches the model. Connections are counted from their accept (`connections`),
so that SIGTERM answers a request whose headers were still arriving.

With `--auth-tokens` the routes that run or describe the model (PROTECTED_ROUTES)
need a token; the health routes (kubelet probes), the server metadata (`/v2`)
and the upload page (which asks for the token) stay open. With
`--metrics-port` /metrics is served by a second listener on that port only.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ascend_mlops import __version__
from ascend_mlops.api import contract
from ascend_mlops.workloads.server import auth, parsing, processing
from ascend_mlops.workloads.server.backends import Backend
from ascend_mlops.workloads.server.batching import Batcher, BatchResult
from ascend_mlops.workloads.server.config import ServerConfig
from ascend_mlops.workloads.server.connections import ConnectionTracker
from ascend_mlops.workloads.server.errors import (
    ClientClosed,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerError,
    ServerOverloaded,
    UnsupportedMediaType,
)
from ascend_mlops.workloads.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

SERVER_NAME = "ascend-mlops"
MODEL_VERSION = "1"
IMAGE_FIELD = "images"
HEADER_INFERENCE_LENGTH = parsing.HEADER_INFERENCE_LENGTH
HEADER_BATCH_SIZE = "X-Batch-Size"
INFERENCE_ROUTES = contract.INFERENCE_ROUTES
MODEL_METADATA_ROUTES = frozenset({"/v2/models/{name}", "/v2/models/{name}/versions/{version}"})
# (method, canonical route) that need a token when --auth-tokens is given: running the model, and its
# metadata (labels, tensors, backend). Health, /v2 and the page stay open.
PROTECTED_ROUTES = frozenset(
    {("POST", route) for route in INFERENCE_ROUTES} | {("GET", route) for route in MODEL_METADATA_ROUTES}
)
AUTH_REALM = SERVER_NAME
# After the drain, what aiohttp's own shutdown still gives a connection (one answered, discarding the rest of
# its body; one still running past --shutdown-timeout) before it is cut.
_CLOSE_GRACE = 1.0


def _error_response(error: ServerError) -> web.Response:
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"error": error.message}, status=error.status, headers=headers)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    addresses = runner.addresses  # the bound port, which differs from the configured one with port 0
    return int(addresses[0][1]) if addresses else configured


def _finite_logits(logits: np.ndarray) -> np.ndarray:
    # Inputs are checked finite and in range, so NaN or Infinity here is the model's fault (a 500), and it is
    # never sent as `NaN`, which is not JSON.
    if not np.isfinite(logits).all():
        raise InferenceFailed("the model returned NaN or Infinity for this input; check the model")
    return logits


def _server_timing(stages: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in stages.items())



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
        self._listener: asyncio.Server | None = None
        self.connections = ConnectionTracker()
        self.metrics.connections.set_function(lambda: self.connections.open)
        self._page = ""
        self._closed = False
        self._in_flight = 0  # inference requests being handled, for the batcher
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
            self.app, shutdown_timeout=min(_CLOSE_GRACE, self.config.shutdown_timeout), access_log=None,
            handle_signals=False,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        # Our own listener rather than a TCPSite: its protocol factory counts connections from their accept.
        self._listener = await asyncio.get_running_loop().create_server(
            self.connections.protocol_factory(self._runner.server), self.config.host, self.config.port,
            backlog=128, reuse_address=True,
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])
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
        """Stop accepting, answer every accepted connection, release the backend. Idempotent.

        aiohttp's own graceful shutdown only waits for requests whose headers
        it has parsed, and drops a connection whose headers (or body) are still
        arriving, so the listener is closed first and every connection owed an
        answer — from its accept on — is awaited here, up to --shutdown-timeout,
        before aiohttp closes what is left.
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
        if self._listener is not None:
            self._listener.close()  # from here a new connection is refused
            self._listener = None
        owed = self.connections.owed
        if owed:
            log.info("answering %d connection(s) before stopping (up to %.0fs)", owed, self.config.shutdown_timeout)
        left = await self.connections.drain(self.config.shutdown_timeout)
        if left:
            log.warning("%d connection(s) still unanswered after %.0fs; closing", left, self.config.shutdown_timeout)
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
        response: web.StreamResponse | None = None
        self.connections.request_started(request)
        try:
            response = self._authenticate(request, route) or self._refuse_early(request)
            if response is None:
                response = await self._handle(request, handler, route)
        finally:
            self.connections.request_finished(request, response)  # also when cancelled (response None)
        self.metrics.requests.labels(route, request.method, str(response.status)).inc()
        self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    def _refuse_early(self, request: web.Request) -> web.Response | None:
        """Limits that the headers already decide, before any body is read: Content-Length on every POST."""
        if request.method != "POST":
            return None
        try:
            parsing.check_declared_length(request, self.config.max_body_bytes)
        except ServerError as exc:
            return _error_response(exc)
        return None

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
            self.metrics.in_flight.inc()
        try:
            response: web.StreamResponse = await handler(request)
        except ClientClosed as exc:
            # Nobody to answer, and not the server's fault: one line, no traceback, code 499 in the metrics.
            log.info("%s %s: %s", request.method, request.path, exc.message)
            response = _error_response(exc)
        except ServerError as exc:
            response = _error_response(exc)
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
        if request.content_type != "multipart/form-data":
            raise UnsupportedMediaType(
                f"POST / takes multipart/form-data with a file field named {IMAGE_FIELD!r}, "
                f"got Content-Type {request.content_type or 'none'!r}"
            )
        found = await parsing.read_form_file(request, IMAGE_FIELD, self.config.max_body_bytes)
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
        body = parsing.dumps_json(processing.classification(_finite_logits(result.logits), self.labels, top))
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
        raw = await parsing.read_body(request, self.config.max_body_bytes)
        infer = parsing.parse_infer_request(
            raw, request.headers.get(HEADER_INFERENCE_LENGTH), self.backend.input_size, self.config.max_queue
        )
        arrays, decode_s, preprocess_s = await self._infer_inputs(infer)
        results = await batcher.submit_many(arrays)
        t_post = time.perf_counter()
        logits = _finite_logits(np.stack([r.logits for r in results]).astype(np.float32))
        response_outputs, blobs = self._infer_outputs(infer.outputs, logits)
        reply: dict[str, Any] = {"model_name": self.config.name, "model_version": MODEL_VERSION, "outputs": response_outputs}
        if infer.id is not None:
            reply["id"] = infer.id
        finished = time.perf_counter()
        timings = {
            "read": 0.0, "decode": decode_s, "preprocess": preprocess_s,
            "queue": max(r.queue_seconds for r in results), "infer": max(r.infer_seconds for r in results),
            "postprocess": finished - t_post, "total": finished - started,
        }
        self.metrics.observe_stages(timings)
        headers = {"Server-Timing": _server_timing(timings), HEADER_BATCH_SIZE: str(max(r.batch_size for r in results))}
        text = parsing.dumps_json(reply)
        if not blobs:
            return web.Response(text=text, content_type="application/json", headers=headers)
        header = text.encode()
        headers[HEADER_INFERENCE_LENGTH] = str(len(header))
        return web.Response(body=header + b"".join(blobs), content_type="application/octet-stream", headers=headers)

    async def _infer_inputs(self, infer: parsing.InferRequest) -> tuple[list[np.ndarray], float, float]:
        if infer.pixels is not None:
            return list(infer.pixels), 0.0, 0.0
        loop = asyncio.get_running_loop()
        files = infer.files or []
        prepared = await asyncio.gather(*(loop.run_in_executor(self._cpu_executor, self._prepare, f) for f in files))
        return [p[0] for p in prepared], max(p[1] for p in prepared), max(p[2] for p in prepared)

    def _infer_outputs(
        self, requested: tuple[parsing.OutputRequest, ...], logits: np.ndarray
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        outputs, blobs = [], []
        for spec in requested:
            if spec.classification > 0:
                probabilities = processing.softmax(logits)
                k = min(spec.classification, probabilities.shape[1])
                # Triton's classification format: "<score>:<class index>:<label>", best first.
                rows = [
                    [f"{p[i]:f}:{i}:{self.labels[i]}" for i in np.argsort(-p, kind="stable")[:k]]
                    for p in probabilities
                ]
                entry: dict[str, Any] = {"name": spec.name, "datatype": "BYTES", "shape": [len(rows), k]}
                flat = [s for row in rows for s in row]
                if spec.binary:
                    blob = parsing.serialize_bytes([s.encode() for s in flat])
                    entry["parameters"] = {"binary_data_size": len(blob)}
                    blobs.append(blob)
                else:
                    entry["data"] = flat
            else:
                entry = {"name": spec.name, "datatype": "FP32", "shape": list(logits.shape)}
                if spec.binary:
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
