"""Session-wide fixtures: one tiny model trained by the real trainer and converted
by the real converter (ATC simulator), shared by the converter, server and
sandbox tests so that CI trains it once.

The fast subset, `python -m pytest -m "not slow"` (about 3 minutes on two cores): no
container engine, no real cluster, no Kubernetes binaries. `slow` marks, besides the
tests that carry it themselves, what `pytest_collection_modifyitems` below adds it to:
tests/cluster, the `[real]` runs of the integration tests (a kube-apiserver and etcd),
every test of the session's trained model, and the long tests of SLOW_TESTS. The full
run, `python -m pytest`, runs them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from tests.helpers import make_dataset, run_cli

HERE = Path(__file__).resolve().parent
# Fixtures whose first use trains (TensorFlow, about a minute on two cores): every test taking one is slow.
SLOW_FIXTURES = frozenset({"trained_model", "converted_model"})
# Tests slow for a reason of their own, by node id (a module's: all of its tests).
SLOW_TESTS = {
    "tests/workloads/server/test_fuzz.py": "10000 generated requests, about 2 minutes",
    "tests/workloads/server/test_upload_page.py": "a real Chromium",
    "tests/workloads/trainer/test_fine_tuning.py": "two trainings each",
    "tests/workloads/trainer/test_train_cli.py::test_versions_kill_and_warm_start": "three trainings, one killed",
    # These two share module fixtures that build every Keras Applications network.
    "tests/workloads/trainer/test_networks.py::test_warm_start_from_published_keras_files": "every network built",
    "tests/workloads/trainer/test_networks.py::test_mismatched_weight_files_are_rejected_naming_file_and_mismatch": "every network built",
    "tests/sandbox/test_traffic_split.py": "four real model servers (TensorFlow) under load",
}

TINY_IMAGE_SIZE = 32
TINY_CLASSES = ("circle", "square", "stripes")


def _is_slow(item: pytest.Item) -> bool:
    path = Path(item.path)
    if path.is_relative_to(HERE / "cluster"):
        return True  # the real cluster of ../shared/k8s
    if item.get_closest_marker("real_api") is not None:
        return True  # upstream kube-apiserver and etcd (tests/integration/controlplane.py)
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    return any(item.nodeid == prefix or item.nodeid.startswith((prefix + "::", prefix + "[")) for prefix in SLOW_TESTS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add `slow` where the module docstring says (it changes no test, only `-m "not slow"`)."""
    for item in items:
        if item.get_closest_marker("slow") is None and _is_slow(item):
            item.add_marker(pytest.mark.slow)


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
