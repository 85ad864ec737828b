"""Progress lines, validation metrics and TF_CONFIG parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ascend_mlops.workloads.trainer import distribute, evaluation, progress
from ascend_mlops.workloads.trainer.errors import ParameterError


def test_progress_line_round_trips() -> None:
    p = progress.EpochProgress(epoch=3, total_epochs=100, loss=0.81234, accuracy=0.65, images_per_second=45.25,
                               eta_seconds=1234.4, val_loss=0.9, val_accuracy=0.6, best=True)
    line = p.line()
    assert line == ("epoch 3/100 loss=0.8123 accuracy=0.6500 val_loss=0.9000 val_accuracy=0.6000 "
                    "images/s=45.2 eta=1234s best=true")
    parsed = progress.parse("2026-01-01T00:00:00 INFO " + line)
    assert parsed is not None
    assert (parsed.epoch, parsed.total_epochs, parsed.val_accuracy, parsed.best) == (3, 100, 0.6, True)
    plain = progress.parse(progress.EpochProgress(1, 2, 1.0, 0.5, 10.0, 5.0).line())
    assert plain is not None and plain.val_loss is None
    assert progress.parse("some other log line") is None


def test_classification_metrics_on_a_known_confusion() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1])
    logits = np.eye(3)[predicted] * 5.0
    m = evaluation.classification_metrics(labels, logits, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    expected_loss = -np.mean(np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[np.arange(6), labels])
    assert m["loss"] == pytest.approx(expected_loss)
    assert m["labels"] == ["a", "b", "c"]


def _tf_config(task_type: str, index: int, chief: bool = False) -> dict[str, str]:
    cluster: dict[str, list[str]] = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    if chief:
        cluster["chief"] = ["127.0.0.1:3"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_cluster_roles() -> None:
    single = distribute.from_env({})
    assert not single.multi_worker and single.is_chief
    w0, w1 = distribute.from_env(_tf_config("worker", 0)), distribute.from_env(_tf_config("worker", 1))
    assert w0.multi_worker and w0.num_workers == 2
    assert w0.is_chief and not w1.is_chief
    assert "worker 1 of 2 workers (non-chief)" in w1.describe()
    with_chief = distribute.from_env(_tf_config("worker", 0, chief=True))
    assert with_chief.num_workers == 3 and not with_chief.is_chief
    assert distribute.from_env(_tf_config("chief", 0, chief=True)).is_chief


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "TF_CONFIG is not valid"),
        (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}), "'ps' is not supported"),
        (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}), "not in the cluster"),
    ],
)
def test_bad_tf_config(raw: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        distribute.from_env({"TF_CONFIG": raw})
