"""Fine-tuning from a Keras ImageNet weights file, in process: two phases, frozen batch norm."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ascend_mlops.workloads.trainer import dataset, params, progress
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE

from .conftest import write_keras_applications_h5

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ascend_mlops.workloads.trainer import models, pipeline, train  # noqa: E402


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
    backbone = models.backbone_of(trainer.model)
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
