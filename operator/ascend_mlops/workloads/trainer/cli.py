"""`ascend-mlops train`: argument parsing, validation, and the run from dataset to published version.

Exit codes (ascend_mlops.api.contract): 0 success; EXIT_INVALID_DATASET and
EXIT_INVALID_PARAMETERS for input that cannot work (the operator does not
retry those); 1 for anything unexpected and 143 for SIGTERM (both retried).
Every outcome writes a JSON summary to --termination-log.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ascend_mlops.api import catalog, contract
from ascend_mlops.workloads import objectstore

from . import dataset, distribute, params, versions
from .errors import STOP, DatasetError, ParameterError, StorageFailure, Terminated, TrainerError

log = logging.getLogger("ascend_mlops.trainer")

DEFAULT_SEED = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        contract.FLAG_ALGORITHM,
        default=catalog.DEFAULT_ALGORITHM,
        metavar="NAME",
        help=f"model to train: {', '.join(catalog.ALGORITHMS)} (default: %(default)s)",
    )
    parser.add_argument(
        contract.FLAG_DATA, required=True, metavar="DIR|URI",
        help="dataset: one sub-directory of images per class; a local directory or s3://bucket/prefix, "
        "obs://bucket/prefix (downloaded to scratch space first)",
    )
    parser.add_argument(
        contract.FLAG_OUTPUT, required=True, metavar="DIR|URI",
        help="output root, a local directory or s3:// / obs:// URI; the run adds the next version V001, V002, ...",
    )
    parser.add_argument(
        contract.FLAG_TRAIN_RATIO,
        type=float,
        default=catalog.DEFAULT_TRAIN_RATIO,
        metavar="R",
        help="share of each class used for training; the rest is the validation split (default: %(default)s)",
    )
    parser.add_argument(
        contract.FLAG_SET,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hyperparameter, repeatable: "
        + ", ".join(f"{k} ({v})" for k, v in catalog.HYPERPARAMETER_DEFAULTS.items()),
    )
    parser.add_argument(
        contract.FLAG_WEIGHTS,
        default=None,
        metavar="FILE|URI",
        help="warm start from a Keras weights file (.h5 / .weights.h5), local or on s3:// / obs://",
    )
    parser.add_argument(
        contract.FLAG_SEED,
        type=int,
        default=DEFAULT_SEED,
        help="seed of the split, the initial weights and the shuffling (default: %(default)s)",
    )
    parser.add_argument(
        contract.FLAG_TERMINATION_LOG,
        default=contract.DEFAULT_TERMINATION_LOG,
        metavar="PATH",
        help="where to write the JSON summary (default: %(default)s)",
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (test runners swap it), not the one at setup."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        root.addHandler(handler)
    logging.getLogger("ascend_mlops").setLevel(logging.INFO)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Inside the step loop, raised at the next step boundary; elsewhere now. Either way the
    # `finally` blocks then remove the staging directory.
    STOP.requested = True
    if not STOP.deferring:
        raise Terminated("received SIGTERM")


def _config(args: argparse.Namespace, *, data: Path, weights: str | None) -> params.TrainConfig:
    return params.TrainConfig(
        algorithm=params.algorithm(args.algorithm),
        data=data,
        output=Path(args.output),
        train_ratio=params.train_ratio(args.train_ratio),
        hparams=params.hyperparameters(params.parse_assignments(args.set)),
        seed=args.seed,
        weights=params.weights_file(weights),
    )


def _storage_failure(exc: objectstore.StorageError, flag: str, refused_code: int) -> StorageFailure:
    return StorageFailure(f"{flag}: {exc}", objectstore.exit_code(exc, refused_code), exc.summary())


def _remote_output(text: str) -> objectstore.ObjectURI | None:
    """The object-storage output root, checked to exist before hours of training; None for a directory."""
    if not objectstore.is_object_uri(text):
        return None
    try:
        root = objectstore.parse(text, contract.FLAG_OUTPUT)
        objectstore.check_bucket(root, "write to")
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, contract.FLAG_OUTPUT, contract.EXIT_INVALID_PARAMETERS) from None
    return root


def _fetch(text: str | None, flag: str, purpose: str, refused: type[TrainerError]) -> str | None:
    """A local path for `text`: itself, or where its object-storage copy was downloaded."""
    if not text or not objectstore.is_object_uri(text):
        return text
    try:
        uri = objectstore.parse(text, flag)
        local = objectstore.fetch_input(uri, objectstore.scratch_dir(purpose), what=f"{flag} {uri}")
    except ValueError as exc:
        raise refused(str(exc)) from None
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, flag, refused.exit_code) from None
    return str(local)


def run(args: argparse.Namespace) -> int:
    _configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Signal handlers can only be set from the main thread (an embedding caller may use another).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        summary = _run(args)
        code = contract.EXIT_OK
    except TrainerError as exc:
        log.error("%s", exc)
        code = exc.exit_code
        summary = {contract.SUMMARY_ERROR: str(exc), contract.SUMMARY_EXIT_CODE: code}
        if isinstance(exc, StorageFailure):
            summary[contract.SUMMARY_STORAGE_ERROR] = exc.storage
    except Terminated as exc:
        log.error("stopped: %s", exc)
        code = exc.exit_code
        summary = {contract.SUMMARY_ERROR: str(exc), contract.SUMMARY_EXIT_CODE: code}
    except Exception as exc:
        log.exception("training failed")
        code = 1
        summary = {contract.SUMMARY_ERROR: f"{type(exc).__name__}: {exc}", contract.SUMMARY_EXIT_CODE: code}
    finally:
        objectstore.remove_scratch()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    contract.write_summary(args.termination_log, summary)
    return code


def _train(config: params.TrainConfig, cluster: distribute.Cluster, split: dataset.Split) -> Any:
    # TensorFlow loads only now, once the input is known to be usable.
    from . import train

    strategy = train.make_strategy(cluster)
    trainer = train.Trainer(config, len(split.classes), strategy)
    return trainer.fit(split)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    # Cheap checks first: a typo in a hyperparameter must not wait for a download.
    _config(args, data=Path("."), weights=None)
    remote_output = _remote_output(args.output)
    data = _fetch(args.data, contract.FLAG_DATA, "dataset", DatasetError)
    weights = _fetch(args.weights, contract.FLAG_WEIGHTS, "weights", ParameterError)
    config = _config(args, data=Path(data or ""), weights=weights)
    cluster = distribute.from_env(os.environ)
    index = dataset.scan(config.data, size_hint=config.hparams.image_size)
    split = dataset.split(index, config.train_ratio, config.seed)
    counts = split.counts()
    log.info(
        "dataset %s: %d classes, %d train / %d validation images, %d file(s) skipped; %s",
        config.data, len(split.classes), len(split.train), len(split.validation), len(index.skipped),
        ", ".join(f"{k} {v['train']}/{v['validation']}" for k, v in counts.items()),
    )
    log.info("%s; hyperparameters: %s", cluster.describe(), config.hparams.as_dict())
    dataset_info = {
        "classes": len(split.classes),
        "train": len(split.train),
        "validation": len(split.validation),
        "skipped": len(index.skipped),
    }
    if not cluster.is_chief:
        result = _train(config, cluster, split)
        log.info("not the chief: the chief writes the output")
        last = result.history[-1]
        return {
            contract.SUMMARY_METRICS: {
                "accuracy": round(last.val_accuracy or 0.0, 6),
                "loss": round(last.val_loss or 0.0, 6),
                "epochs": result.epochs_run,
            },
            "dataset": dataset_info,
        }
    try:
        stage: versions.Staging | versions.ObjectStaging = (
            versions.ObjectStaging(remote_output) if remote_output is not None else versions.Staging(config.output)
        )
    except OSError as exc:
        raise ParameterError(f"{contract.FLAG_OUTPUT} {config.output}: cannot write there: {exc}") from None
    # Everything from here on is written into the staging directory, which
    # becomes a version only once complete (a killed run leaves no version).
    try:
        result = _train(config, cluster, split)
        from . import publish

        version, metrics = publish.publish(stage, config, split, index, result)
    except objectstore.StorageError as exc:
        raise _storage_failure(exc, contract.FLAG_OUTPUT, contract.EXIT_INVALID_PARAMETERS) from None
    finally:
        stage.discard()
    log.info(
        "published %s: validation accuracy %.4f, loss %.4f after %d epoch(s) (best %d) in %.0fs",
        remote_output.join(version) if remote_output is not None else config.output / version, metrics["accuracy"], metrics["loss"], result.epochs_run,
        result.best_epoch, time.monotonic() - started,
    )
    return {
        contract.SUMMARY_VERSION: version,
        contract.SUMMARY_ARTIFACTS: {
            contract.ARTIFACT_FROZEN_GRAPH: f"{version}/{contract.FROZEN_GRAPH_DIR}",
            contract.ARTIFACT_SAVED_MODEL: f"{version}/{contract.SAVED_MODEL_DIR}",
            contract.ARTIFACT_LABELS: f"{version}/{contract.LABELS_FILE}",
            contract.ARTIFACT_METRICS: f"{version}/{contract.METRICS_FILE}",
            contract.ARTIFACT_MODEL_PACKAGE: f"{version}/{contract.MODEL_PACKAGE_DIR}",
        },
        contract.SUMMARY_METRICS: {
            "accuracy": round(metrics["accuracy"], 6),
            "loss": round(metrics["loss"], 6),
            "epochs": result.epochs_run,
        },
        "dataset": dataset_info,
    }
