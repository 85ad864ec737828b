"""The trainer's frozen graph converted by `ascend-mlops convert` with the ATC simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_mlops.api import catalog, contract
from ascend_mlops.ascend import simmodel
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.helpers import run_cli
from tests.workloads.converter.conftest import path_without_atc

pytestmark = pytest.mark.slow  # needs the session's trained model

SIZE = TINY_IMAGE_SIZE


def test_trained_graph_converts_with_inputs_and_outputs_matching_the_graph(
    trained_model: Path, converted_model: Path
) -> None:
    model = simmodel.read(converted_model / contract.OM_FILE)
    assert model.header["simulated"] is True and model.header["socVersion"] == "Ascend310"
    assert model.inputs == [
        {"name": "images", "dims": [1, SIZE, SIZE, 3], "dataType": "float32", "format": "NHWC", "tensorName": "images:0"}
    ]
    assert model.outputs == [
        {"name": "logits", "dims": [1, len(TINY_CLASSES)], "dataType": "float32", "format": "ND", "tensorName": "logits:0"}
    ]
    assert model.dynamic_batch_sizes == []
    frozen = trained_model / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE
    assert model.graph_def == frozen.read_bytes()
    config = json.loads((converted_model / contract.MODEL_CONFIG_FILE).read_text())
    assert config["simulated"] is True and config["template"] == catalog.TEMPLATE_SEED
    assert config["inputs"] == model.inputs and config["outputs"] == model.outputs
    assert config["graphChecked"] is True


def test_trained_graph_converts_with_dynamic_batch(trained_model: Path, tmp_path: Path) -> None:
    output, log = tmp_path / "om", tmp_path / "termination-log"
    result = run_cli(
        [
            contract.CMD_CONVERT,
            contract.FLAG_TEMPLATE, catalog.TEMPLATE_DYNAMIC_BATCH,
            contract.FLAG_INPUT, str(trained_model / contract.FROZEN_GRAPH_DIR),
            contract.FLAG_OUTPUT, str(output),
            contract.FLAG_SET, f"inputShape=images:-1,{SIZE},{SIZE},3",
            contract.FLAG_SET, "dynamicBatchSizes=1,2,4,8",
            contract.FLAG_TERMINATION_LOG, str(log),
        ],
        env={contract.ENV_SIMULATOR: "1", "PATH": path_without_atc()},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(log.read_text())[contract.SUMMARY_SIMULATED] is True
    model = simmodel.read(output / contract.OM_FILE)
    assert model.inputs[0]["dims"] == [-1, SIZE, SIZE, 3]
    assert model.outputs[0]["name"] == "logits" and model.outputs[0]["dims"] == [-1, len(TINY_CLASSES)]
    assert model.dynamic_batch_sizes == [1, 2, 4, 8]


def test_seed_default_shape_is_rejected_for_a_smaller_trained_model(trained_model: Path, tmp_path: Path) -> None:
    """The seed's 224x224 default does not fit a 32x32 model: caught before ATC runs, naming the option."""
    log = tmp_path / "termination-log"
    result = run_cli(
        [
            contract.CMD_CONVERT,
            contract.FLAG_INPUT, str(trained_model / contract.FROZEN_GRAPH_DIR),
            contract.FLAG_OUTPUT, str(tmp_path / "om"),
            contract.FLAG_TERMINATION_LOG, str(log),
        ],
        env={contract.ENV_SIMULATOR: "1", "PATH": path_without_atc()},
    )
    assert result.returncode == contract.EXIT_INVALID_MODEL
    error = json.loads(log.read_text())[contract.SUMMARY_ERROR]
    assert error.startswith("inputShape='images:1,224,224,3' does not fit the model")
    assert f"fixed to {SIZE}" in error
