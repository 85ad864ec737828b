"""Hyperparameters (`--set NAME=VALUE`) and the other run options, validated before TensorFlow loads."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ascend_mlops.api import catalog, contract

from .errors import ParameterError

# Keras Applications' backbones refuse inputs smaller than 32x32 (five stride-2 stages).
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """One run's hyperparameters: the recipe's defaults (catalog.RECIPE_DEFAULTS) with the user's values over them."""

    recipe: str
    batch_size: int
    learning_rate: float
    momentum: float
    weight_decay: float
    epochs: int
    patience: int
    image_size: int
    eval_every: int
    warmup_epochs: float
    label_smoothing: float
    crop_scale: float
    color_jitter: float
    eval_crop: float
    freeze_epochs: int
    fine_tune_lr_scale: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# name -> (check, what the check requires); all checks see already-converted values.
_RULES: dict[str, tuple[Any, str]] = {
    "recipe": (lambda v: v in catalog.RECIPES, f"one of: {', '.join(catalog.RECIPES)}"),
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "learning_rate": (lambda v: 0 < v < math.inf, "a number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a number >= 0"),
    "epochs": (lambda v: v >= 1, "an integer >= 1"),
    "patience": (lambda v: v >= 0, "an integer >= 0 (0 turns early stopping off)"),
    "image_size": (
        lambda v: MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE,
        f"an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]",
    ),
    "eval_every": (lambda v: v >= 1, "an integer >= 1"),
    "warmup_epochs": (lambda v: 0 <= v <= 1000, "a number in [0, 1000] (0 turns warm-up off)"),
    "label_smoothing": (lambda v: 0 <= v <= 0.5, "a number in [0, 0.5] (0 turns it off)"),
    "crop_scale": (lambda v: 0.05 <= v <= 1, "a number in [0.05, 1] (1 turns random crops off)"),
    "color_jitter": (lambda v: 0 <= v <= 0.5, "a number in [0, 0.5] (0 turns colour jitter off)"),
    "eval_crop": (lambda v: 0.5 <= v <= 1, "a number in [0.5, 1] (1 looks at the whole image)"),
    "freeze_epochs": (lambda v: v >= 0, "an integer >= 0 (0 trains the whole network from the start)"),
    "fine_tune_lr_scale": (lambda v: 0.001 <= v <= 1, "a number in [0.001, 1]"),
}
assert set(_RULES) == set(catalog.HYPERPARAMETERS), "every catalog hyperparameter needs a rule"
assert [f.name for f in dataclasses.fields(Hyperparameters)] == list(catalog.HYPERPARAMETERS)


def parse_assignments(items: Iterable[str] | None) -> dict[str, str]:
    """`["epochs=3", "batch_size=8"]` -> `{"epochs": "3", ...}`; a later value wins, as in Helm."""
    values: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(
                f"{contract.FLAG_SET} {item!r}: expected NAME=VALUE, for example "
                f"{contract.FLAG_SET} epochs=10"
            )
        values[name] = value.strip()
    return values


def _convert(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, str):
        return str(raw).strip()
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise ParameterError(f"hyperparameter {name}={raw!r}: expected an integer") from None
        if not number.is_integer():
            raise ParameterError(f"hyperparameter {name}={raw!r}: expected an integer")
        return int(number)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ParameterError(f"hyperparameter {name}={raw!r}: expected a number") from None
    if math.isnan(value):
        raise ParameterError(f"hyperparameter {name}={raw!r}: expected a number")
    return value


def hyperparameters(values: Mapping[str, Any]) -> Hyperparameters:
    """Merge `values` over the recipe's defaults; unknown names are one error naming them all.

    The recipe (`recipe=`, default catalog.DEFAULT_RECIPE) is read first: it
    decides the defaults of every hyperparameter that `values` leaves out.
    """
    unknown = sorted(set(values) - set(catalog.HYPERPARAMETERS))
    if unknown:
        raise ParameterError(
            f"unknown hyperparameter(s): {', '.join(unknown)}; "
            f"known: {', '.join(catalog.HYPERPARAMETERS)}"
        )
    recipe = str(values.get("recipe", catalog.DEFAULT_RECIPE)).strip()
    if recipe not in catalog.RECIPES:
        raise ParameterError(
            f"hyperparameter recipe={values['recipe']!r}: must be one of: {', '.join(catalog.RECIPES)}"
        )
    defaults = {"recipe": recipe, **catalog.RECIPE_DEFAULTS[recipe]}
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for name, default in defaults.items():
        if name not in values:
            merged[name] = default
            continue
        try:
            value = _convert(name, values[name], default)
        except ParameterError as exc:
            problems.append(str(exc))
            continue
        check, requirement = _RULES[name]
        if not check(value):
            problems.append(f"hyperparameter {name}={values[name]!r}: must be {requirement}")
        merged[name] = value
    if problems:
        raise ParameterError("; ".join(problems))
    return Hyperparameters(**merged)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs, validated."""

    algorithm: str
    data: Path
    output: Path
    train_ratio: float
    hparams: Hyperparameters
    seed: int
    weights: Path | None


def algorithm(name: str) -> str:
    if name not in catalog.ALGORITHMS:
        raise ParameterError(
            f"{contract.FLAG_ALGORITHM} {name!r} is not supported; choose one of: "
            f"{', '.join(catalog.ALGORITHMS)}"
        )
    return name


def train_ratio(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ParameterError(
            f"{contract.FLAG_TRAIN_RATIO} {value!r}: must be between 0 and 1 (exclusive), for "
            f"example {catalog.DEFAULT_TRAIN_RATIO}; the rest of each class is the validation split"
        )
    return value


def weights_file(path: str | None) -> Path | None:
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise ParameterError(
            f"{contract.FLAG_WEIGHTS} {path!r}: no such file; give a Keras weights file "
            "(.h5 or .weights.h5) readable inside the container"
        )
    return file
