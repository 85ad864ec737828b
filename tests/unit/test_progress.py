"""The progress line shared by the trainer (prints it) and the operator (reads it into status.progress)."""

from __future__ import annotations

import pytest

from ascend_mlops.api import progress
from ascend_mlops.api.progress import EpochProgress


def test_line_round_trips_with_validation_and_best() -> None:
    p = EpochProgress(epoch=3, total_epochs=100, loss=0.81234, accuracy=0.65, images_per_second=45.25,
                      eta_seconds=1234.4, val_loss=0.9, val_accuracy=0.6, best=True)
    line = p.line()
    assert line == (
        "epoch 3/100 loss=0.8123 accuracy=0.6500 val_loss=0.9000 val_accuracy=0.6000 images/s=45.2 eta=1234s best=true"
    )
    # Log formatters put a timestamp and level in front; the parser finds the line anyway.
    parsed = progress.parse("2026-01-01T00:00:00 INFO ascend_mlops.workloads.trainer: " + line)
    assert parsed == EpochProgress(3, 100, 0.8123, 0.65, 45.2, 1234.0, val_loss=0.9, val_accuracy=0.6, best=True)
    assert parsed is not None and parsed.line() == line


def test_line_without_validation_round_trips() -> None:
    p = EpochProgress(epoch=1, total_epochs=2, loss=1.0, accuracy=0.5, images_per_second=10.0, eta_seconds=5.0)
    parsed = progress.parse(p.line())
    assert parsed == p
    assert parsed is not None and parsed.val_accuracy is None and not parsed.best


@pytest.mark.parametrize("line", [
    "",
    "some other log line",
    "epoch 3/100",  # no metrics
    "epoch 3/100 loss=0.5 accuracy=0.5 images/s=1.0",  # no eta
    "epoch 3/100 loss=nan? accuracy=0.5 images/s=1.0 eta=3s",  # not a number
    "epoch x/100 loss=0.5 accuracy=0.5 images/s=1.0 eta=3s",
    "repoch 3/100 loss=0.5 accuracy=0.5 images/s=1.0 eta=3s",  # "epoch" inside another word
])
def test_other_lines_are_not_progress(line: str) -> None:
    assert progress.parse(line) is None


def test_to_status_is_the_crd_shape() -> None:
    with_val = EpochProgress(7, 20, 0.123456, 0.876543, 33.33, 99.6, val_loss=0.2, val_accuracy=0.81234)
    assert with_val.to_status() == {
        "epoch": 7, "totalEpochs": 20, "loss": 0.1235, "accuracy": 0.8765, "valAccuracy": 0.8123,
        "imagesPerSecond": 33.3, "etaSeconds": 100,
    }
    assert "valAccuracy" not in EpochProgress(1, 2, 1.0, 0.5, 10.0, 5.0).to_status()


def test_the_trainer_uses_the_shared_format() -> None:
    from ascend_mlops.workloads.trainer import progress as trainer_progress

    assert trainer_progress.EpochProgress is EpochProgress
    assert trainer_progress.parse is progress.parse
