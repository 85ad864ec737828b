"""Training phases and the learning rate of every step (plain Python, no TensorFlow).

From random weights a run is one phase, the whole network. With `--weights`
and `freeze_epochs` > 0 it is two: first the new head alone with the
pretrained backbone frozen (its batch-norm statistics too), then the whole
network at `learning_rate * fine_tune_lr_scale`; a fresh head's large
gradients would otherwise wreck the pretrained features in the first steps.

Within each phase the learning rate warms up linearly over `warmup_epochs`
(at most half the phase), then follows the recipe: cosine decay to 0 at the
phase's last step (`tuned`) or stays constant (`modelarts`).
"""

from __future__ import annotations

import dataclasses
import math

from ascend_mlops.api import catalog

from .params import Hyperparameters

HEAD = "head"  # the new classification head only; backbone frozen
FULL = "full"  # the whole network


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  # HEAD or FULL
    index: int  # 1-based
    count: int  # phases in the run
    first_epoch: int  # 1-based, inclusive
    last_epoch: int  # inclusive
    learning_rate: float  # peak, after warm-up
    warmup_epochs: float
    cosine: bool

    @property
    def trains_backbone(self) -> bool:
        return self.name == FULL

    @property
    def epochs(self) -> int:
        return self.last_epoch - self.first_epoch + 1

    def label(self) -> str:
        """`head` / `full`, as in the progress lines' `phase=` field."""
        return self.name

    def describe(self) -> str:
        what = (
            "the new classification head only, backbone frozen (batch-norm statistics too)"
            if self.name == HEAD
            else "the whole network"
        )
        shape = "then cosine decay to 0" if self.cosine else "then constant"
        warmup = f"warm-up {self.warmup_epochs:g} epoch(s), " if self.warmup_epochs else ""
        return (
            f"phase {self.index}/{self.count} ({self.name}): epochs {self.first_epoch}-{self.last_epoch}, "
            f"training {what}; learning rate {self.learning_rate:g} ({warmup}{shape})"
        )

    def learning_rate_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of the phase's `step`-th step (0-based)."""
        total = max(1, self.epochs * steps_per_epoch)
        warmup = min(round(self.warmup_epochs * steps_per_epoch), total // 2)
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        if not self.cosine:
            return self.learning_rate
        progress = (step - warmup) / max(1, total - warmup)
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def phases(hp: Hyperparameters, fine_tuning: bool) -> list[Phase]:
    """The run's phases: [full] from scratch or with freeze_epochs=0, [head, full] when fine-tuning."""
    cosine = hp.recipe == catalog.RECIPE_TUNED
    if not fine_tuning:
        return [Phase(FULL, 1, 1, 1, hp.epochs, hp.learning_rate, hp.warmup_epochs, cosine)]
    full_rate = hp.learning_rate * hp.fine_tune_lr_scale
    head_epochs = min(hp.freeze_epochs, hp.epochs)
    if head_epochs == 0:
        return [Phase(FULL, 1, 1, 1, hp.epochs, full_rate, hp.warmup_epochs, cosine)]
    if head_epochs == hp.epochs:  # freeze_epochs >= epochs: a linear probe of the pretrained features
        return [Phase(HEAD, 1, 1, 1, hp.epochs, hp.learning_rate, hp.warmup_epochs, cosine)]
    return [
        Phase(HEAD, 1, 2, 1, head_epochs, hp.learning_rate, hp.warmup_epochs, cosine),
        Phase(FULL, 2, 2, head_epochs + 1, hp.epochs, full_rate, hp.warmup_epochs, cosine),
    ]
