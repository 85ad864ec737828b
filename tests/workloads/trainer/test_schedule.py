"""Phases and learning rates (plain Python: no TensorFlow)."""

from __future__ import annotations

import math

import pytest

from ascend_mlops.workloads.trainer import params, schedule


def hp(**values: object) -> params.Hyperparameters:
    return params.hyperparameters({k: str(v) for k, v in values.items()})


def test_from_scratch_is_one_phase_of_the_whole_network() -> None:
    [phase] = schedule.phases(hp(epochs=10, freeze_epochs=3, learning_rate=0.1), fine_tuning=False)
    assert (phase.name, phase.first_epoch, phase.last_epoch, phase.learning_rate) == ("full", 1, 10, 0.1)
    assert phase.trains_backbone and phase.cosine


def test_fine_tuning_is_head_then_whole_network_at_a_lower_rate() -> None:
    head, full = schedule.phases(hp(epochs=10, freeze_epochs=3, learning_rate=0.1, fine_tune_lr_scale=0.1), fine_tuning=True)
    assert (head.name, head.first_epoch, head.last_epoch, head.learning_rate, head.trains_backbone) == ("head", 1, 3, 0.1, False)
    assert (full.name, full.first_epoch, full.last_epoch, full.trains_backbone) == ("full", 4, 10, True)
    assert full.learning_rate == pytest.approx(0.01)
    assert "phase 1/2 (head): epochs 1-3" in head.describe() and "backbone frozen" in head.describe()
    assert "phase 2/2 (full): epochs 4-10" in full.describe()
    # No frozen phase, or nothing but the frozen phase.
    [only] = schedule.phases(hp(epochs=5, freeze_epochs=0, learning_rate=0.1), fine_tuning=True)
    assert only.name == "full" and only.learning_rate == pytest.approx(0.01)
    [probe] = schedule.phases(hp(epochs=2, freeze_epochs=5), fine_tuning=True)
    assert probe.name == "head" and probe.last_epoch == 2


def test_warm_up_then_cosine_to_zero() -> None:
    [phase] = schedule.phases(hp(epochs=4, warmup_epochs=1, learning_rate=0.2), fine_tuning=False)
    rates = [phase.learning_rate_at(step, 10) for step in range(40)]
    assert rates[:10] == pytest.approx([0.02 * (i + 1) for i in range(10)])  # linear warm-up to the peak
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))  # then never rising
    assert rates[10] == pytest.approx(0.2) and rates[10 + 15] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert rates[-1] < 0.002


def test_modelarts_recipe_is_constant() -> None:
    [phase] = schedule.phases(hp(recipe="modelarts", epochs=3), fine_tuning=False)
    assert {phase.learning_rate_at(step, 7) for step in range(21)} == {0.002}
    assert not phase.cosine and "then constant" in phase.describe()
