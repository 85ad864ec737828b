"""End to end: the real `ascend-mlops train` on a tiny generated dataset."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import numpy as np
import pytest

from ascend_mlops.api import catalog, contract
from ascend_mlops.workloads.trainer import versions
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.helpers import run_cli, wait_for

from .conftest import dataset_images, start_cli, summary, train_args

tf = pytest.importorskip("tensorflow")


def _frozen_logits(graph_file: Path, images: np.ndarray) -> np.ndarray:
    """Run the frozen graph the way a TF1/ATC user would: import the GraphDef, feed images:0, fetch logits:0."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_file.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return np.asarray(session.run(f"{contract.OUTPUT_NODE}:0", {f"{contract.INPUT_NODE}:0": images}))


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_trained_version_layout_graph_and_metrics(trained_model: Path, tiny_dataset: Path) -> None:
    version = trained_model.name
    output = trained_model.parent
    result = summary(output.parent / f"{output.name}.termination-log")
    assert result[contract.SUMMARY_VERSION] == version == "V001"
    assert contract.SUMMARY_ERROR not in result
    for key, rel in result[contract.SUMMARY_ARTIFACTS].items():
        assert rel.startswith(f"{version}/") and (output / rel).exists(), key
    assert set(result[contract.SUMMARY_METRICS]) == {"accuracy", "loss", "epochs"}
    assert result[contract.SUMMARY_METRICS]["epochs"] == 1
    assert sorted(p.name for p in output.iterdir()) == ["V001"]  # no staging left behind

    for rel in (f"{contract.FROZEN_GRAPH_DIR}/{contract.FROZEN_GRAPH_FILE}", contract.LABELS_FILE, contract.METRICS_FILE,
                f"{contract.MODEL_PACKAGE_DIR}/{contract.MODEL_CONFIG_FILE}", f"{contract.SAVED_MODEL_DIR}/saved_model.pb"):
        assert (trained_model / rel).is_file(), rel
    labels = (trained_model / contract.LABELS_FILE).read_text().splitlines()
    assert labels == sorted(TINY_CLASSES)

    # The graph interface ATC's seed options expect.
    graph_file = trained_model / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_file.read_bytes())
    nodes = {n.name: n for n in graph_def.node}
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    assert [p.name for p in placeholders] == [contract.INPUT_NODE]
    shape = [d.size for d in nodes[contract.INPUT_NODE].attr["shape"].shape.dim]
    assert shape == [-1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3]
    assert nodes[contract.INPUT_NODE].attr["dtype"].type == tf.float32.as_datatype_enum
    assert contract.OUTPUT_NODE in nodes
    assert not [n.name for n in graph_def.node if "Variable" in n.op or n.op == "NoOp"]

    images, _ = dataset_images(tiny_dataset, TINY_IMAGE_SIZE)
    frozen = _frozen_logits(graph_file, images)
    assert frozen.shape == (len(images), len(TINY_CLASSES)) and frozen.dtype == np.float32
    assert np.isfinite(frozen).all()
    assert _frozen_logits(graph_file, images[:1]).shape == (1, len(TINY_CLASSES))

    saved = tf.saved_model.load(str(trained_model / contract.SAVED_MODEL_DIR))
    serving = saved.signatures["serving_default"]
    saved_logits = serving(**{contract.INPUT_NODE: tf.constant(images)})[contract.OUTPUT_NODE].numpy()
    # Same weights, two graphs: oneDNN may order float32 sums differently (seen: 1.2e-4 on
    # logits of magnitude 5), so the bound is 1e-3, far below what a wrong export gives.
    np.testing.assert_allclose(frozen, saved_logits, rtol=1e-3, atol=1e-3)
    assert (frozen.argmax(1) == saved_logits.argmax(1)).all()

    metrics = json.loads((trained_model / contract.METRICS_FILE).read_text())
    for key in ("accuracy", "loss", "precision", "recall", "f1", "per_class", "confusion_matrix", "labels",
                "epochs", "best_epoch", "train_images", "validation_images", "skipped_files", "history"):
        assert key in metrics, key
    assert metrics["labels"] == labels
    assert set(metrics["per_class"]) == set(labels)
    assert all({"precision", "recall", "f1", "support"} <= set(v) for v in metrics["per_class"].values())
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == metrics["validation_images"] == 6
    assert metrics["train_images"] == 30 and metrics["skipped_files"]["count"] == 0
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert result[contract.SUMMARY_METRICS]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)

    config = json.loads((trained_model / contract.MODEL_PACKAGE_DIR / contract.MODEL_CONFIG_FILE).read_text())
    assert config["model_algorithm"] == "image_classification"
    assert set(config["metrics"]) == {"f1", "accuracy", "precision", "recall"}
    assert config["input"]["name"] == contract.INPUT_NODE and config["output"]["name"] == contract.OUTPUT_NODE
    assert "inside the graph" in config["input"]["preprocessing"]["normalization"]
    assert config["labels"] == labels


def test_versions_kill_and_warm_start(tmp_path: Path, tiny_dataset: Path) -> None:
    """mobilenet_v1: V001; a run stopped by SIGTERM and one killed by SIGKILL mid-training leave
    no version; a warm-started run then writes V002 and leaves V001 untouched."""
    output = tmp_path / "out"
    first = run_cli(train_args(tiny_dataset, output, tmp_path / "log1"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert summary(tmp_path / "log1")[contract.SUMMARY_VERSION] == "V001"
    graph_file = output / "V001" / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE
    images, _ = dataset_images(tiny_dataset, TINY_IMAGE_SIZE)
    assert _frozen_logits(graph_file, images[:5]).shape == (5, 3)
    v001 = _tree_digest(output / "V001")

    def interrupted(sig: int, name: str) -> int:
        log_file = tmp_path / f"{name}.out"
        proc = start_cli(train_args(tiny_dataset, output, tmp_path / name, "mobilenet_v1", "epochs=500"), log_file)
        try:
            # Mid-training: the first epoch is done, the version is being staged.
            wait_for(lambda: "epoch 1/500" in log_file.read_text(errors="replace"), timeout=300, what="first epoch")
            assert any(p.name.endswith(versions.STAGE_SUFFIX) for p in output.iterdir())
            proc.send_signal(sig)
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert interrupted(signal.SIGTERM, "term") == 143
    term = summary(tmp_path / "term")
    assert term[contract.SUMMARY_EXIT_CODE] == 143 and "SIGTERM" in term[contract.SUMMARY_ERROR]
    assert sorted(p.name for p in output.iterdir()) == ["V001"]  # cleaned up on the way out

    assert interrupted(signal.SIGKILL, "kill") == -signal.SIGKILL
    assert versions.existing_versions(output) == ["V001"]
    assert any(p.name.endswith(versions.STAGE_SUFFIX) for p in output.iterdir())  # abandoned, not a version

    # A backbone weights file (what Keras Applications ships, here with known random values).
    from ascend_mlops.workloads.trainer import networks

    backbone = networks.backbone_model("mobilenet_v1", TINY_IMAGE_SIZE)
    weights = tmp_path / "mobilenet_notop.weights.h5"
    backbone.save_weights(weights)
    conv1 = backbone.get_layer("conv1").get_weights()[0]

    third = run_cli(train_args(tiny_dataset, output, tmp_path / "log3", "mobilenet_v1", "learning_rate=1e-9",
                               extra=[contract.FLAG_WEIGHTS, str(weights)]))
    assert third.returncode == 0, third.stderr[-3000:]
    assert "warm start: loaded" in third.stderr
    assert summary(tmp_path / "log3")[contract.SUMMARY_VERSION] == "V002"
    assert sorted(p.name for p in output.iterdir()) == ["V001", "V002"]  # the killed run's staging is gone
    assert _tree_digest(output / "V001") == v001
    reader = tf.train.load_checkpoint(str(output / "V002" / contract.SAVED_MODEL_DIR / "variables" / "variables"))
    kernels = [reader.get_tensor(name) for name, shape in reader.get_variable_to_shape_map().items()
               if tuple(shape) == conv1.shape]
    assert len(kernels) == 1
    np.testing.assert_allclose(kernels[0], conv1, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["resnet_v1_101"])
def test_other_algorithms_build_and_export(tmp_path: Path, tiny_dataset: Path, algorithm: str) -> None:
    """One step (batch 32 > 30 training images) is enough to prove the network trains and exports."""
    assert algorithm in catalog.ALGORITHMS
    result = run_cli(train_args(tiny_dataset, tmp_path / "out", tmp_path / "log", algorithm, "batch_size=32"))
    assert result.returncode == 0, result.stderr[-3000:]
    version = tmp_path / "out" / summary(tmp_path / "log")[contract.SUMMARY_VERSION]
    images, _ = dataset_images(tiny_dataset, TINY_IMAGE_SIZE)
    logits = _frozen_logits(version / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE, images[:4])
    assert logits.shape == (4, 3) and np.isfinite(logits).all()
    assert "epoch 1/1 " in result.stderr
