"""The trainer's progress line: one per epoch, easy for people to read and for tools to parse.

The trainer prints it (in its log); the operator reads the chief pod's log tail
and shows the last one in TrainingJob status.progress. Both sides use this
module, so the format lives only here.

    epoch 3/100 loss=0.8123 accuracy=0.6500 val_loss=0.9001 val_accuracy=0.6000 images/s=45.2 eta=1234s

`val_*` appear on evaluation epochs only; `eta` assumes the run goes to the
last epoch (early stopping can end it sooner).
"""

from __future__ import annotations

import dataclasses
import re

_LINE_RE = re.compile(r"(?:^|\s)epoch (?P<epoch>\d+)/(?P<total>\d+)(?P<rest>(?: \S+=\S+)*)")


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    epoch: int
    total_epochs: int
    loss: float
    accuracy: float
    images_per_second: float
    eta_seconds: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    best: bool = False

    def line(self) -> str:
        parts = [f"epoch {self.epoch}/{self.total_epochs}", f"loss={self.loss:.4f}", f"accuracy={self.accuracy:.4f}"]
        if self.val_loss is not None and self.val_accuracy is not None:
            parts += [f"val_loss={self.val_loss:.4f}", f"val_accuracy={self.val_accuracy:.4f}"]
        parts += [f"images/s={self.images_per_second:.1f}", f"eta={self.eta_seconds:.0f}s"]
        if self.best:
            parts.append("best=true")
        return " ".join(parts)

    def to_status(self) -> dict[str, int | float]:
        """The TrainingJob's status.progress for this epoch (camelCase, as in the CRD schema)."""
        found: dict[str, int | float] = {
            "epoch": self.epoch,
            "totalEpochs": self.total_epochs,
            "loss": round(self.loss, 4),
            "accuracy": round(self.accuracy, 4),
        }
        if self.val_accuracy is not None:
            found["valAccuracy"] = round(self.val_accuracy, 4)
        found["imagesPerSecond"] = round(self.images_per_second, 1)
        found["etaSeconds"] = int(round(self.eta_seconds))
        return found


def parse(line: str) -> EpochProgress | None:
    """The progress in a log line, or None if the line is something else."""
    match = _LINE_RE.search(line.strip())
    if not match:
        return None
    fields = dict(item.split("=", 1) for item in match.group("rest").split())
    try:
        return EpochProgress(
            epoch=int(match.group("epoch")),
            total_epochs=int(match.group("total")),
            loss=float(fields["loss"]),
            accuracy=float(fields["accuracy"]),
            images_per_second=float(fields["images/s"]),
            eta_seconds=float(fields["eta"].rstrip("s")),
            val_loss=float(fields["val_loss"]) if "val_loss" in fields else None,
            val_accuracy=float(fields["val_accuracy"]) if "val_accuracy" in fields else None,
            best=fields.get("best") == "true",
        )
    except (KeyError, ValueError):
        return None



# ---------------------------------------------------------------------------
# `ascend-mlops predict`: one line every few seconds and at the end of a shard.
#     predict 120/250 succeeded=118 failed=2 images/s=41.3
# (done/total of this shard's inputs; skipped results of an earlier attempt count as done.)
# ---------------------------------------------------------------------------
_PREDICT_RE = re.compile(
    r"(?:^|\s)predict (?P<done>\d+)/(?P<total>\d+) succeeded=(?P<ok>\d+) failed=(?P<bad>\d+) "
    r"images/s=(?P<rate>[0-9.]+)"
)


@dataclasses.dataclass(frozen=True)
class BatchProgress:
    done: int
    total: int
    succeeded: int
    failed: int
    images_per_second: float

    def line(self) -> str:
        return (
            f"predict {self.done}/{self.total} succeeded={self.succeeded} failed={self.failed} "
            f"images/s={self.images_per_second:.1f}"
        )


def parse_batch(line: str) -> BatchProgress | None:
    match = _PREDICT_RE.search(line.strip())
    if not match:
        return None
    return BatchProgress(
        int(match["done"]), int(match["total"]), int(match["ok"]), int(match["bad"]), float(match["rate"])
    )
