"""Hyperparameters and run options: defaults, conversion, and errors that name the culprit."""

from __future__ import annotations

import pytest

from ascend_mlops.api import catalog, contract
from ascend_mlops.workloads.trainer import params
from ascend_mlops.workloads.trainer.errors import ParameterError


def test_defaults_are_the_default_recipes() -> None:
    hp = params.hyperparameters({})
    assert hp.as_dict() == catalog.HYPERPARAMETER_DEFAULTS
    assert hp.recipe == catalog.DEFAULT_RECIPE == "tuned"


def test_the_modelarts_recipe_is_the_presets_documented_defaults() -> None:
    hp = params.hyperparameters({"recipe": "modelarts"})
    assert hp.as_dict() == {"recipe": "modelarts", **catalog.RECIPE_DEFAULTS["modelarts"]}
    assert (hp.batch_size, hp.learning_rate, hp.momentum, hp.weight_decay, hp.epochs, hp.patience) == (
        32, 0.002, 0.9, 0.00004, 100, 8)
    # Nothing of the tuned recipe: no warm-up, smoothing, crops, jitter, frozen phase.
    assert (hp.warmup_epochs, hp.label_smoothing, hp.crop_scale, hp.color_jitter, hp.eval_crop) == (0, 0, 1, 0, 1)
    assert (hp.freeze_epochs, hp.fine_tune_lr_scale) == (0, 1)
    # A value set explicitly wins over the recipe's.
    assert params.hyperparameters({"recipe": "modelarts", "label_smoothing": "0.2"}).label_smoothing == 0.2


def test_an_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(ParameterError, match="recipe='fast': must be one of: tuned, modelarts"):
        params.hyperparameters({"recipe": "fast"})


def test_the_operator_accepts_every_hyperparameter_the_trainer_does() -> None:
    """spec.algorithm.hyperparameters is checked by the operator before any pod: every
    catalog name, at every recipe's default, must pass there too; bad values are named."""
    from ascend_mlops.api import specs

    for recipe, defaults in catalog.RECIPE_DEFAULTS.items():
        spec = {
            "algorithm": {"name": "mobilenet_v1", "hyperparameters": {"recipe": recipe, **defaults}},
            "dataset": {"uri": "pvc://data/flowers"},
            "output": {"uri": "pvc://data/out"},
        }
        parsed = specs.parse_training_job(spec)
        assert dict(parsed.hyperparameters) == {"recipe": recipe, **defaults}
        assert params.hyperparameters({k: str(v) for k, v in parsed.hyperparameters.items()}).recipe == recipe
    bad = {"algorithm": {"name": "mobilenet_v1", "hyperparameters": {"recipe": "fast", "eval_crop": 0.1}},
           "dataset": {"uri": "pvc://data/flowers"}, "output": {"uri": "pvc://data/out"}}
    with pytest.raises(specs.SpecError) as err:
        specs.parse_training_job(bad)
    assert "recipe: 'fast' is not one of: tuned, modelarts" in str(err.value)
    assert "eval_crop: 0.1 is outside [0.5, 1]" in str(err.value)


def test_values_are_converted_to_the_defaults_types() -> None:
    hp = params.hyperparameters(params.parse_assignments(["epochs=3", "batch_size=8.0", "learning_rate=1e-3", "image_size= 64"]))
    assert (hp.epochs, hp.batch_size, hp.learning_rate, hp.image_size) == (3, 8, 0.001, 64)
    assert isinstance(hp.batch_size, int) and isinstance(hp.learning_rate, float)


def test_later_assignment_wins() -> None:
    assert params.parse_assignments(["epochs=1", "epochs=2"]) == {"epochs": "2"}


def test_unknown_names_are_all_named() -> None:
    with pytest.raises(ParameterError) as err:
        params.hyperparameters({"epochs": "1", "lr": "0.1", "dropout": "0.5"})
    message = str(err.value)
    assert "dropout" in message and "lr" in message and "learning_rate" in message
    assert err.value.exit_code == contract.EXIT_INVALID_PARAMETERS


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("batch_size", "0", "batch_size='0': must be an integer >= 1"),
        ("batch_size", "2.5", "expected an integer"),
        ("epochs", "many", "expected an integer"),
        ("learning_rate", "-1", "must be a number > 0"),
        ("learning_rate", "nan", "expected a number"),
        ("momentum", "1", "in [0, 1)"),
        ("image_size", "16", "in [32, 1024]"),
        ("eval_every", "0", "eval_every"),
        ("label_smoothing", "0.6", "in [0, 0.5]"),
        ("crop_scale", "0", "in [0.05, 1]"),
        ("eval_crop", "1.5", "in [0.5, 1]"),
        ("freeze_epochs", "-1", "integer >= 0"),
        ("freeze_epochs", "1.5", "expected an integer"),
        ("fine_tune_lr_scale", "2", "in [0.001, 1]"),
    ],
)
def test_invalid_values_name_the_field_and_the_rule(name: str, value: str, expected: str) -> None:
    with pytest.raises(ParameterError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        params.hyperparameters({name: value})


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ParameterError) as err:
        params.hyperparameters({"batch_size": "0", "momentum": "2"})
    assert "batch_size" in str(err.value) and "momentum" in str(err.value)


@pytest.mark.parametrize("item", ["epochs", "=3", ""])
def test_malformed_set_is_an_error(item: str) -> None:
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        params.parse_assignments([item])


def test_algorithm_and_ratio_checks() -> None:
    assert params.algorithm("mobilenet_v1") == "mobilenet_v1"
    with pytest.raises(ParameterError, match="resnet_v1_50, resnet_v1_101, mobilenet_v1"):
        params.algorithm("resnet_v2_50")
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ParameterError, match="--train-ratio"):
            params.train_ratio(bad)
    assert params.train_ratio(0.8) == 0.8


def test_weights_file_must_exist(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert params.weights_file(None) is None
    with pytest.raises(ParameterError, match="--weights"):
        params.weights_file(str(tmp_path / "missing.h5"))


def test_the_crd_states_each_recipes_defaults() -> None:
    """The TrainingJob CRD's descriptions (and from them docs/resources.md) quote the defaults."""
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    crd = yaml.safe_load((Path(__file__).resolve().parents[3] / "crds" / "ascend.mlops.dev_trainingjobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["spec"]["properties"]["algorithm"]["properties"]["hyperparameters"]["properties"]
    tuned, modelarts = catalog.RECIPE_DEFAULTS[catalog.RECIPE_TUNED], catalog.RECIPE_DEFAULTS[catalog.RECIPE_MODELARTS]
    for name in catalog.RECIPE_DEFAULTS[catalog.RECIPE_TUNED]:
        description = " ".join(fields[name]["description"].split())
        if tuned[name] == modelarts[name]:
            assert f"Default {tuned[name]:g}." in description, (name, description)
        else:
            assert f"Default {tuned[name]:g} (recipe tuned), {modelarts[name]:g} (recipe modelarts)." in description, (
                name, description)
