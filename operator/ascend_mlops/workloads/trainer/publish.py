"""Chief only: stage every artifact of the run, then publish them as the next version."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from ascend_mlops.api import contract

from . import dataset, evaluation, export, networks, pipeline, versions
from .dataset import DatasetIndex, Split
from .params import Hyperparameters, TrainConfig
from .train import TrainResult

log = logging.getLogger(__name__)

# Enough batches for stable statistics; more only costs forward passes.
RECALIBRATION_IMAGES = 512


def publish(stage: versions.Staging | versions.ObjectStaging, config: TrainConfig, split: Split, index: DatasetIndex, result: TrainResult) -> tuple[str, dict[str, Any]]:
    """Write V### (atomically); return its name and the validation metrics."""
    hp = config.hparams
    model = export.export_model(config.algorithm, len(split.classes), hp.image_size, result.weights, hp.eval_crop)
    module = export.ExportModule(model, hp.image_size)
    val_ds = pipeline.evaluation_dataset(split.validation, hp.image_size, hp.batch_size, cache=True)
    if not result.backbone_trained:
        # Only the head trained, on features computed with the file's statistics: keep them.
        labels, logits = _validate(module, val_ds)
        log.info("kept the pretrained batch-norm statistics (the backbone stayed frozen)")
    else:
        labels, logits = _recalibrated(model, module, val_ds, split, hp, result)
    # Metrics of exactly the exported network, through its serving signature.
    metrics = evaluation.classification_metrics(labels, logits, split.classes)
    report = {
        **metrics,
        "algorithm": config.algorithm,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_images": len(split.train),
        "validation_images": len(split.validation),
        "skipped_files": dataset.skipped_report(index.skipped),
        "train_seconds": round(result.train_seconds, 3),
        "images_per_second": round(result.images_per_second, 3),
        "hyperparameters": hp.as_dict(),
        "train_ratio": config.train_ratio,
        "seed": config.seed,
        "history": [
            {**dataclasses.asdict(p), "phase": phase, "learning_rate": rate}
            for p, phase, rate in zip(result.history, result.phases, result.learning_rates, strict=True)
        ],
    }
    root = stage.path
    export.write_labels(split.classes, root / contract.LABELS_FILE)
    export.write_json(report, root / contract.METRICS_FILE)
    export.write_json(
        export.model_config(
            algorithm=config.algorithm,
            classes=split.classes,
            image_size=hp.image_size,
            metrics=metrics,
            hyperparameters=hp.as_dict(),
            eval_crop=hp.eval_crop,
        ),
        root / contract.MODEL_PACKAGE_DIR / contract.MODEL_CONFIG_FILE,
    )
    export.write_frozen_graph(module, root / contract.FROZEN_GRAPH_DIR)
    export.write_saved_model(module, root / contract.SAVED_MODEL_DIR)
    version = stage.publish()
    return version, metrics


def _validate(module: export.ExportModule, val_ds: Any) -> tuple[np.ndarray, np.ndarray]:
    labels, logits = [], []
    for images, y in val_ds:
        logits.append(module.serve(images)[contract.OUTPUT_NODE].numpy())
        labels.append(y.numpy())
    return np.concatenate(labels), np.concatenate(logits)


def _recalibrated(
    model: Any, module: export.ExportModule, val_ds: Any, split: Split, hp: Hyperparameters, result: TrainResult
) -> tuple[np.ndarray, np.ndarray]:
    """Validation (labels, logits) with recomputed batch-norm statistics, or with the moving ones if better."""
    calibration = pipeline.calibration_batches(split.train, hp.image_size, hp.batch_size, RECALIBRATION_IMAGES)
    batches = networks.recalibrate_batch_norm(model, calibration)
    labels, logits = _validate(module, val_ds)
    recalibrated_loss = evaluation.softmax_cross_entropy(labels, logits)
    # Recomputed statistics cure short runs, whose moving averages still hold
    # their initial values; after a long run the averages can be as good or
    # better. Keep whichever does better on the validation split.
    if recalibrated_loss > result.best_val_loss:
        model.set_weights(list(result.weights))
        labels, logits = _validate(module, val_ds)
        log.info(
            "kept the moving batch-norm statistics (validation loss %.4f; recomputed over %d batch(es): %.4f)",
            result.best_val_loss, batches, recalibrated_loss,
        )
    else:
        log.info(
            "recomputed batch-norm statistics over %d training batch(es): validation loss %.4f (moving averages: %.4f)",
            batches, recalibrated_loss, result.best_val_loss,
        )
    return labels, logits
