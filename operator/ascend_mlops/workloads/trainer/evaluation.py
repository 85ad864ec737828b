"""Validation metrics from labels and logits: accuracy, loss, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax_cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _ratio(num: float, den: float) -> float:
    # A class never predicted (or absent) has no defined precision (recall); report 0, like scikit-learn.
    return float(num / den) if den else 0.0


def classification_metrics(labels: np.ndarray, logits: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    predictions = logits.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, len(classes))
    per_class: dict[str, dict[str, float | int]] = {}
    for i, name in enumerate(classes):
        tp = float(matrix[i, i])
        precision = _ratio(tp, float(matrix[:, i].sum()))
        recall = _ratio(tp, float(matrix[i, :].sum()))
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(matrix[i, :].sum()),
        }
    macro = {k: float(np.mean([c[k] for c in per_class.values()])) for k in ("precision", "recall", "f1")}
    return {
        "accuracy": _ratio(float(np.trace(matrix)), float(matrix.sum())),
        "loss": softmax_cross_entropy(labels, logits) if len(labels) else 0.0,
        **macro,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "labels": list(classes),
    }
