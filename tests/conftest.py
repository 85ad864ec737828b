"""Session-wide fixtures: one tiny model trained by the real trainer and converted
by the real converter (ATC simulator), shared by the converter, server and
sandbox tests so that CI trains it once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from tests.helpers import make_dataset, run_cli

TINY_IMAGE_SIZE = 32
TINY_CLASSES = ("circle", "square", "stripes")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"), classes=TINY_CLASSES, per_class=12, size=TINY_IMAGE_SIZE)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A resnet_v1_50 trained for one epoch at 32x32 by `ascend-mlops train`; returns the version dir."""
    output = tmp_path_factory.mktemp("train-output")
    log = output.parent / f"{output.name}.termination-log"
    result = run_cli(
        [
            contract.CMD_TRAIN,
            contract.FLAG_ALGORITHM, "resnet_v1_50",
            contract.FLAG_DATA, str(tiny_dataset),
            contract.FLAG_OUTPUT, str(output),
            contract.FLAG_SET, "epochs=1",
            contract.FLAG_SET, "batch_size=8",
            contract.FLAG_SET, f"image_size={TINY_IMAGE_SIZE}",
            contract.FLAG_TERMINATION_LOG, str(log),
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(log.read_text())
    return output / summary[contract.SUMMARY_VERSION]


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Path:
    """The trained model converted by `ascend-mlops convert` with the ATC simulator; returns the dir holding model.om."""
    output = trained_model / contract.OM_OUTPUT_SUBDIR
    result = run_cli(
        [
            contract.CMD_CONVERT,
            contract.FLAG_TEMPLATE, "TF-FrozenGraph-To-Ascend-C32",
            contract.FLAG_INPUT, str(trained_model / contract.FROZEN_GRAPH_DIR),
            contract.FLAG_OUTPUT, str(output),
            contract.FLAG_SET, f"inputShape=images:1,{TINY_IMAGE_SIZE},{TINY_IMAGE_SIZE},3",
            contract.FLAG_TERMINATION_LOG, str(tmp_path_factory.mktemp("convert-log") / "termination-log"),
        ],
        env={contract.ENV_SIMULATOR: "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (output / contract.OM_FILE).is_file()
    return output
