"""`ascend-mlops serve`: run the inference server until SIGTERM.

Startup and failure behaviour (what Kubernetes sees):
1. The HTTP port opens first: /v2/health/live answers 200, /v2/health/ready 503.
2. The model loads on the inference thread; then ready answers 200.
3. If the backend is unavailable or the model cannot be loaded, the error is
   logged, written to the termination log (`--termination-log`, JSON with
   "error" and "exitCode") and the process exits non-zero: 6 when pyACL is
   missing and the simulator is off, 5 when the model or labels are unusable,
   1 for anything else (a device error, say). Kubernetes then shows the pod in
   CrashLoopBackOff with the message, which the operator copies into the
   InferenceService's Ready condition (reason ModelLoadFailed). A server that
   stayed up "live but never ready" would hide the cause behind a probe timeout.
   A `--auth-tokens` source that is missing, unreadable or holds no token is a
   configuration error found before the port opens: exit 2, with the reason
   (never a token) in the termination log. Authentication is never silently off.
4. SIGTERM/SIGINT: readiness turns false, the listener closes, requests in
   flight (including queued batches) finish within `--shutdown-timeout`, then
   the backend releases every ACL resource and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from ascend_mlops.api import contract
from ascend_mlops.workloads import objectstore
from ascend_mlops.workloads.server import config as cfg
from ascend_mlops.workloads.server.auth import TokenSourceError
from ascend_mlops.workloads.server.backends import BACKENDS, Backend, create_backend
from ascend_mlops.workloads.server.config import ServerConfig
from ascend_mlops.workloads.server.errors import ModelLoadError, ToolkitMissing

log = logging.getLogger("ascend_mlops.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        contract.FLAG_MODEL, required=True, metavar="PATH|URI",
        help="acl: a .om file or a directory holding model.om; tensorflow: a frozen graph "
        "(.pb or frozen_graph dir) or a saved_model dir; local or s3:// / obs:// (downloaded and checked "
        "before the server reports ready)",
    )
    parser.add_argument(contract.FLAG_BACKEND, required=True, choices=BACKENDS, help="acl (Ascend NPU via pyACL) or tensorflow (CPU)")
    parser.add_argument(
        contract.FLAG_LABELS, default=None, metavar="FILE|URI",
        help="labels.txt, one class per line (default: labels.txt beside or up to 3 folders above the model, "
        "else class indices)",
    )
    parser.add_argument(contract.FLAG_NAME, default=cfg.DEFAULT_NAME, help="model name in /v2/models/<name> (default: %(default)s)")
    parser.add_argument(contract.FLAG_HOST, default="0.0.0.0", help="listen address (default: %(default)s)")
    parser.add_argument(contract.FLAG_PORT, type=int, default=contract.DEFAULT_SERVER_PORT, help="listen port; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        contract.FLAG_MAX_BATCH_SIZE, type=int, default=cfg.DEFAULT_MAX_BATCH_SIZE,
        help="most images run together; capped by the model's own batch sizes (default: %(default)s)",
    )
    parser.add_argument(
        contract.FLAG_MAX_BATCH_DELAY_MS, type=float, default=cfg.DEFAULT_MAX_BATCH_DELAY_MS,
        help="longest a request waits for others to join its batch (default: %(default)s)",
    )
    parser.add_argument(
        contract.FLAG_MAX_BODY_BYTES, type=int, default=cfg.DEFAULT_MAX_BODY_BYTES,
        help="largest request body; larger ones get 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue", type=int, default=cfg.DEFAULT_MAX_QUEUE,
        help="images waiting for the device before new requests get 503 + Retry-After (default: %(default)s)",
    )
    parser.add_argument(
        "--device-id", type=int, default=None,
        help=f"Ascend device for the acl backend (default: ${contract.ENV_DEVICE_ID} or 0)",
    )
    parser.add_argument(
        contract.FLAG_TERMINATION_LOG, default=contract.DEFAULT_TERMINATION_LOG,
        help="where a load failure is written for Kubernetes (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout", type=float, default=cfg.DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds to finish in-flight requests after SIGTERM (default: %(default)s)",
    )
    parser.add_argument(
        contract.FLAG_AUTH_TOKENS, type=Path, default=None, metavar="FILE|DIR",
        help="require a bearer token on the inference and model-metadata routes: a file, or a directory of files "
        "(a mounted Secret), whose non-empty lines are the valid tokens; re-read when they change "
        "(default: no authentication)",
    )
    parser.add_argument(
        contract.FLAG_METRICS_PORT, type=int, default=None, metavar="PORT",
        help=f"serve {contract.METRICS_PATH} on this port only, not on {contract.FLAG_PORT}; 0 picks a free one "
        f"(default: {contract.METRICS_PATH} on {contract.FLAG_PORT})",
    )
    parser.add_argument("--preprocess-threads", type=int, default=2, help="threads decoding images (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    device_id = args.device_id
    if device_id is None:
        raw = os.environ.get(contract.ENV_DEVICE_ID, "0").split(",")[0].strip() or "0"
        try:
            device_id = int(raw)
        except ValueError as exc:
            raise ValueError(f"${contract.ENV_DEVICE_ID} must be a device number, got {raw!r}") from exc
    model_uri = args.model if objectstore.is_object_uri(args.model) else None
    labels_uri = args.labels if args.labels and objectstore.is_object_uri(args.labels) else None
    for flag, uri in ((contract.FLAG_MODEL, model_uri), (contract.FLAG_LABELS, labels_uri)):
        if uri:
            objectstore.parse(uri, flag)  # ValueError naming the flag
    config = ServerConfig(
        # A remote model's local path is known once it is downloaded; until then, where it will go.
        model=Path(contract.MOUNT_SCRATCH) if model_uri else Path(args.model),
        backend=args.backend,
        name=args.name,
        labels=None if labels_uri or not args.labels else Path(args.labels),
        model_uri=model_uri,
        labels_uri=labels_uri,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        device_id=device_id,
        termination_log=args.termination_log or None,
        shutdown_timeout=args.shutdown_timeout,
        preprocess_threads=args.preprocess_threads,
        auth_tokens=args.auth_tokens,
        metrics_port=args.metrics_port,
    )
    config.validate()
    return config


def _fail(
    config: ServerConfig, message: str, code: int, simulated: bool | None = None, storage: dict[str, str] | None = None
) -> int:
    model = config.model_uri or str(config.model)
    log.error("cannot serve %s: %s", model, message)
    summary: dict[str, object] = {
        contract.SUMMARY_ERROR: message,
        contract.SUMMARY_EXIT_CODE: code,
        contract.SUMMARY_MODEL: model,
    }
    if storage:
        summary[contract.SUMMARY_STORAGE_ERROR] = storage
    if simulated is not None:
        summary[contract.SUMMARY_SIMULATED] = simulated
    contract.write_summary(config.termination_log, summary)
    return code


async def serve(config: ServerConfig) -> int:
    # Imported here so `--help` stays fast and never touches TensorFlow.
    from ascend_mlops.workloads.server.app import InferenceServer

    try:
        backend: Backend = create_backend(config.backend, config.model, config.device_id)
    except ToolkitMissing as exc:
        return _fail(config, str(exc), contract.EXIT_TOOLKIT_MISSING)
    try:
        server = InferenceServer(config, backend)
    except TokenSourceError as exc:
        return _fail(config, str(exc), contract.EXIT_USAGE, backend.simulated)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        ports = f"{config.port}" if config.metrics_port is None else f"{config.port} (metrics {config.metrics_port})"
        return _fail(config, f"cannot listen on {config.host}:{ports}: {exc}", 1, backend.simulated)

    load = asyncio.create_task(server.load())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({load, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not load.done():
        log.info("signal received while loading; stopping once the load returns")
        await asyncio.wait({load})
    error = load.exception()
    if error is not None:
        await server.stop()
        stopped.cancel()
        if isinstance(error, objectstore.StorageError):
            code = objectstore.exit_code(error, contract.EXIT_INVALID_MODEL)
            return _fail(config, str(error), code, backend.simulated, error.summary())
        if isinstance(error, ModelLoadError):
            return _fail(config, str(error), contract.EXIT_INVALID_MODEL, backend.simulated)
        log.exception("model load failed", exc_info=error)
        return _fail(config, f"{error.__class__.__name__}: {error}", 1, backend.simulated)

    await stopped
    log.info("shutting down: finishing in-flight requests (up to %.0fs)", config.shutdown_timeout)
    await server.stop()
    log.info("stopped")
    return contract.EXIT_OK


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return contract.EXIT_USAGE
    return asyncio.run(serve(config))
