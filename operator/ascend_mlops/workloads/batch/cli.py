"""`ascend-mlops predict`: one shard of a BatchPrediction (see docs/batch.md).

    ascend-mlops predict --model M --backend acl|tensorflow [--labels L] --input IN --output OUT \
        --shard i/N --task-id ID [--batch-size B] [--top-k K] [--termination-log P]

Exit codes (api.contract): 0 done (bad images are FAILED lines, not errors);
3 the input is missing, empty or not a valid .manifest; 4 bad parameters or
an output that cannot be written; 5 the model or labels are unusable; 6 no
pyACL and the simulator is off; 75 object storage unreachable (retry: the
rerun skips what is done); 1 anything unexpected (retryable too).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Any

from ascend_mlops.api import contract
from ascend_mlops.workloads import objectstore
from ascend_mlops.workloads.batch import inputs as inp
from ascend_mlops.workloads.batch.runner import Counts, Layout, ShardRunner, load
from ascend_mlops.workloads.batch.store import open_output
from ascend_mlops.workloads.server import processing
from ascend_mlops.workloads.server.backends import BACKENDS, Backend, create_backend
from ascend_mlops.workloads.server.errors import ModelLoadError, ToolkitMissing

log = logging.getLogger("ascend_mlops.predict")

DEFAULT_BATCH_SIZE = 16
DEFAULT_DECODE_THREADS = 2
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        contract.FLAG_MODEL, required=True, metavar="PATH|URI",
        help="acl: a .om file or a directory holding model.om; tensorflow: a frozen graph or saved_model; "
        "local or s3:// / obs://",
    )
    parser.add_argument(contract.FLAG_BACKEND, required=True, choices=BACKENDS, help="acl (Ascend NPU via pyACL) or tensorflow (CPU)")
    parser.add_argument(
        contract.FLAG_LABELS, default=None, metavar="FILE|URI",
        help="labels.txt (default: beside or up to 3 folders above the model, else class indices)",
    )
    parser.add_argument(
        contract.FLAG_INPUT, required=True, metavar="DIR|MANIFEST|URI",
        help="a folder read recursively for .jpg/.jpeg/.png/.bmp, or a .manifest of JSON lines with \"source\"",
    )
    parser.add_argument(contract.FLAG_OUTPUT, required=True, metavar="DIR|URI", help="where infer-result-<id>... goes")
    parser.add_argument(contract.FLAG_SHARD, default="0/1", metavar="i/N", help="this pod's share: inputs whose index %% N == i (default: %(default)s)")
    parser.add_argument(contract.FLAG_TASK_ID, required=True, help="names the results: infer-result-<id>.manifest and infer-result-<id>/")
    parser.add_argument(
        contract.FLAG_BATCH_SIZE, type=int, default=DEFAULT_BATCH_SIZE,
        help="images per device call, capped by the model's largest batch (default: %(default)s)",
    )
    parser.add_argument(contract.FLAG_TOP_K, type=int, default=processing.DEFAULT_TOP_K, help="scores per result (default: %(default)s)")
    parser.add_argument(
        "--decode-threads", type=int, default=DEFAULT_DECODE_THREADS,
        help="threads reading and decoding images while the device runs (default: %(default)s)",
    )
    parser.add_argument("--device-id", type=int, default=None, help=f"Ascend device (default: ${contract.ENV_DEVICE_ID} or 0)")
    parser.add_argument(contract.FLAG_TERMINATION_LOG, default=contract.DEFAULT_TERMINATION_LOG, help="summary for Kubernetes (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


class _Failure(Exception):
    def __init__(self, message: str, code: int, storage: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.storage = storage


def _storage_failure(exc: objectstore.StorageError, refused_code: int) -> _Failure:
    return _Failure(str(exc), objectstore.exit_code(exc, refused_code), exc.summary())


def _device_id(args: argparse.Namespace) -> int:
    if args.device_id is not None:
        return int(args.device_id)
    raw = os.environ.get(contract.ENV_DEVICE_ID, "0").split(",")[0].strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise _Failure(f"${contract.ENV_DEVICE_ID} must be a device number, got {raw!r}", contract.EXIT_INVALID_PARAMETERS) from None


def _check_parameters(args: argparse.Namespace) -> tuple[int, int]:
    bad = contract.EXIT_INVALID_PARAMETERS
    try:
        index, count = inp.parse_shard(args.shard)
    except ValueError as exc:
        raise _Failure(str(exc), bad) from None
    if not _TASK_ID_RE.match(args.task_id or ""):
        raise _Failure(f"{contract.FLAG_TASK_ID} {args.task_id!r}: use letters, digits, '.', '_' and '-'", bad)
    for flag, value in ((contract.FLAG_BATCH_SIZE, args.batch_size), (contract.FLAG_TOP_K, args.top_k), ("--decode-threads", args.decode_threads)):
        if value < 1:
            raise _Failure(f"{flag} {value}: must be at least 1", bad)
    return index, count


def _fetch_model(args: argparse.Namespace) -> tuple[Path, Path | None]:
    model_uri = args.model if objectstore.is_object_uri(args.model) else None
    labels_uri = args.labels if args.labels and objectstore.is_object_uri(args.labels) else None
    model, labels = Path(args.model), (Path(args.labels) if args.labels and not labels_uri else None)
    if not model_uri and not labels_uri:
        return model, labels
    from ascend_mlops.workloads.server import remote

    try:
        return remote.fetch(model_uri, model, labels_uri, labels)
    except ValueError as exc:
        raise _Failure(str(exc), contract.EXIT_INVALID_PARAMETERS) from None
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, contract.EXIT_INVALID_MODEL) from None


def predict(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    index, count = _check_parameters(args)
    summary["shard"] = f"{index}/{count}"
    try:
        output = open_output(args.output)
        output.prepare()
    except ValueError as exc:
        raise _Failure(str(exc), contract.EXIT_INVALID_PARAMETERS) from None
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, contract.EXIT_INVALID_PARAMETERS) from None
    try:
        items = inp.list_inputs(args.input)
    except inp.InputError as exc:
        raise _Failure(str(exc), contract.EXIT_INVALID_DATASET) from None
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, contract.EXIT_INVALID_DATASET) from None
    mine = inp.shard(items, index, count)
    layout = Layout(args.task_id)
    runner = ShardRunner(output, layout, batch_size=args.batch_size, top_k=args.top_k, decode_threads=args.decode_threads,
                         progress=lambda line: print(line, flush=True))
    counts = Counts(total=len(mine))
    try:
        done = runner.completed()
        pending = runner.pending(mine, done)
        counts.skipped = len(mine) - len(pending)
        counts.failed = sum(1 for i in mine if layout.failure(i) in done)
        counts.succeeded = counts.skipped - counts.failed
        log.info("shard %d/%d: %d of %d inputs, %d already done by an earlier attempt, %d to predict",
                 index, count, len(mine), len(items), counts.skipped, len(pending))
        failures: dict[int, dict[str, Any]] = {}
        if pending:
            model, labels = _fetch_model(args)
            backend: Backend | None = None
            try:
                backend, names = load(args.backend, model, labels, _device_id(args), create_backend)
                cap = backend.max_batch_size
                runner.batch_size = min(args.batch_size, cap) if cap else args.batch_size
                if runner.batch_size != args.batch_size:
                    log.info("batches of %d: the model's largest batch (asked for %d)", runner.batch_size, args.batch_size)
                failures = runner.predict(backend, names, pending, counts)
            except ToolkitMissing as exc:
                raise _Failure(str(exc), contract.EXIT_TOOLKIT_MISSING) from None
            except ModelLoadError as exc:
                raise _Failure(str(exc), contract.EXIT_INVALID_MODEL) from None
            finally:
                if backend is not None:
                    backend.close()
        lines = runner.lines(mine, done, failures)
        manifest = runner.finish(lines, index, count, {item.source: item.index for item in items})
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, contract.EXIT_INVALID_PARAMETERS) from None
    print(counts.progress().line(), flush=True)
    summary.update(total=counts.total, succeeded=counts.succeeded, failed=counts.failed, skipped=counts.skipped,
                   imagesPerSecond=round(counts.rate, 1))
    if manifest is not None:
        summary["manifest"] = layout.manifest
        log.info("all %d shards done: wrote %s", count, manifest)
    return contract.EXIT_OK


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    summary: dict[str, Any] = {}
    try:
        code = predict(args, summary)
    except _Failure as exc:
        log.error("predict failed: %s", exc.message)
        summary.update({contract.SUMMARY_ERROR: exc.message, contract.SUMMARY_EXIT_CODE: exc.code})
        if exc.storage:
            summary[contract.SUMMARY_STORAGE_ERROR] = exc.storage
        contract.write_summary(args.termination_log, summary)
        return exc.code
    finally:
        objectstore.remove_scratch()
    contract.write_summary(args.termination_log, summary)
    return code
