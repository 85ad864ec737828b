"""Fine-tuning from a Keras ImageNet weights file: two phases, frozen batch norm (in process), and the
same through the real command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ascend_mlops.api import contract
from ascend_mlops.workloads.trainer import dataset, params, progress
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.helpers import run_cli

from .conftest import summary, train_args, write_keras_applications_h5

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ascend_mlops.workloads.trainer import networks, pipeline, train  # noqa: E402


def test_two_phases_with_the_backbone_frozen_first(tmp_path: Path, tiny_dataset: Path, caplog: pytest.LogCaptureFixture) -> None:
    size = TINY_IMAGE_SIZE
    network = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    for layer in network.layers:  # statistics unlike a fresh layer's 0 and 1, so "unchanged" means something
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype("float32"))
    weights = write_keras_applications_h5(network, tmp_path / "mobilenet_1_0_224_tf_no_top.h5")
    hp = params.hyperparameters(params.parse_assignments(
        [f"image_size={size}", "batch_size=8", "epochs=3", "freeze_epochs=2", "learning_rate=0.05"]))
    config = params.TrainConfig(algorithm="mobilenet_v1", data=tiny_dataset, output=tmp_path / "out",
                                train_ratio=0.8, hparams=hp, seed=0, weights=weights)
    split = dataset.split(dataset.scan(tiny_dataset, size), 0.8, 0)
    caplog.set_level(logging.INFO, logger="ascend_mlops")
    trainer = train.Trainer(config, len(TINY_CLASSES), tf.distribute.get_strategy())
    backbone = networks.backbone_of(trainer.model)
    pretrained = [np.array(w) for w in backbone.get_weights()]
    assert "warm start: loaded 135 of 135 backbone weight tensors" in caplog.text

    # Phase one alone: the head learns; the backbone, batch-norm moving statistics included, does not move.
    head, full = trainer.phases
    trainer.enter_phase(head)
    assert not backbone.trainable and trainer.model.trainable_variables == trainer.model.get_layer("classifier").trainable_variables
    batches = trainer.distribute(pipeline.training_dataset(split.train, size, 8, 0, True, crop_scale=0.35, color_jitter=0.2))
    classifier = trainer.model.get_layer("classifier").get_weights()[0].copy()
    trainer.run_steps(batches, 3, head)
    assert not np.array_equal(trainer.model.get_layer("classifier").get_weights()[0], classifier)
    for before, after in zip(pretrained, backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)

    # The whole run: both phases in the log and in the progress lines, which stay parseable.
    caplog.clear()
    result = trainer.fit(split)
    lines = [r.getMessage() for r in caplog.records]
    starts = [i for i, line in enumerate(lines) if line.startswith("phase ")]
    assert [lines[i].split(":")[0] for i in starts] == ["phase 1/2 (head)", "phase 2/2 (full)"]
    assert "epochs 1-2, training the new classification head only, backbone frozen" in lines[starts[0]]
    assert "epochs 3-3, training the whole network; learning rate 0.005" in lines[starts[1]]
    epochs = [line for line in lines if progress.parse(line)]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert [line.split("phase=")[1].split()[0] for line in epochs] == ["head", "head", "full"]
    assert starts[0] < lines.index(epochs[0]) < lines.index(epochs[1]) < starts[1] < lines.index(epochs[2])
    assert result.phases == ["head", "head", "full"]
    assert backbone.trainable
    assert any(not np.array_equal(a, b) for a, b in zip(pretrained, backbone.get_weights(), strict=True))


def test_fine_tuning_from_the_command_line(tmp_path: Path, tiny_dataset: Path) -> None:
    """The real `ascend-mlops train --weights <published notop file>`: two phases in the
    progress lines on stderr and in metrics.json, the head phase at the full rate."""
    size = TINY_IMAGE_SIZE
    keras.utils.set_random_seed(3)
    network = keras.applications.MobileNet(include_top=True, weights=None, input_shape=(size, size, 3))
    weights = write_keras_applications_h5(network, tmp_path / networks.ALGORITHMS["mobilenet_v1"].notop_file,
                                          last_layer="conv_pw_13_relu")
    log = tmp_path / "log"
    result = run_cli(train_args(tiny_dataset, tmp_path / "out", log, "mobilenet_v1", "epochs=3", "freeze_epochs=2",
                                "learning_rate=0.02", extra=[contract.FLAG_WEIGHTS, str(weights)]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warm start: loaded 135 of 135 backbone weight tensors" in result.stderr
    lines = result.stderr.splitlines()
    phase_lines = [i for i, line in enumerate(lines) if " INFO phase " in line]
    epoch_lines = [i for i, line in enumerate(lines) if progress.parse(line)]
    assert len(phase_lines) == 2 and len(epoch_lines) == 3
    assert phase_lines[0] < epoch_lines[0] < epoch_lines[1] < phase_lines[1] < epoch_lines[2]
    assert "phase 1/2 (head): epochs 1-2" in lines[phase_lines[0]]
    assert "phase 2/2 (full): epochs 3-3, training the whole network; learning rate 0.002" in lines[phase_lines[1]]
    assert [lines[i].split("phase=")[1].split()[0] for i in epoch_lines] == ["head", "head", "full"]
    metrics = json.loads((tmp_path / "out" / summary(log)[contract.SUMMARY_VERSION] / contract.METRICS_FILE).read_text())
    assert [e["phase"] for e in metrics["history"]] == ["head", "head", "full"]
    assert metrics["hyperparameters"]["freeze_epochs"] == 2
