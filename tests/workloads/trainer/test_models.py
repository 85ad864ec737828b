"""The networks, in process: in-graph normalisation, resizing like the server, warm start,
batch-norm recalibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ascend_mlops.workloads.trainer.errors import ParameterError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ascend_mlops.workloads.trainer import models, pipeline  # noqa: E402


def test_normalisation_is_part_of_the_model() -> None:
    pixel = np.array([[[[10.0, 100.0, 250.0]]]], dtype=np.float32)  # R, G, B
    caffe = models.Normalize("caffe")(pixel).numpy().ravel()
    np.testing.assert_allclose(caffe, [250 - 103.939, 100 - 116.779, 10 - 123.68], rtol=1e-6)
    scaled = models.Normalize("tf")(pixel).numpy().ravel()
    np.testing.assert_allclose(scaled, [10 / 127.5 - 1, 100 / 127.5 - 1, 250 / 127.5 - 1], rtol=1e-6)
    model = models.build("mobilenet_v1", 4, 32, seed=0)
    assert model.input.name == "images" and tuple(model.input.shape) == (None, 32, 32, 3)
    assert tuple(model.output.shape) == (None, 4)
    assert isinstance(model.layers[1], models.Normalize)


@pytest.mark.parametrize("size", [32, 57])
def test_training_resize_matches_pil_bilinear(tmp_path: Path, size: int) -> None:
    """The server resizes with PIL's bilinear filter; training must see (almost) the same pixels."""
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (20, 30, 3)), np.ones((5, 5, 1))).astype(np.uint8)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(noisy).save(path)
    ours = pipeline.load_image(tf.constant(str(path)), size).numpy().astype(np.float64)
    pil = np.asarray(Image.fromarray(noisy).resize((size, size), Image.BILINEAR), dtype=np.float64)
    assert ours.shape == pil.shape == (size, size, 3)
    assert np.abs(ours - pil).mean() < 1.0
    assert np.abs(ours - pil).max() <= 12


def test_recalibrated_statistics_are_the_batch_statistics() -> None:
    """After recalibrating on one batch, inference mode equals training mode on that batch."""
    model = models.build("mobilenet_v1", 3, 32, seed=0)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    assert models.recalibrate_batch_norm(model, [images]) == 1
    inference = model(images, training=False).numpy()
    training = model(images, training=True).numpy()
    np.testing.assert_allclose(inference, training, rtol=1e-3, atol=1e-3)
    bn = next(layer for layer in models.backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization))
    assert bn.momentum == models.BATCH_NORM_MOMENTUM  # restored


def test_warm_start_from_keras_application_files(tmp_path: Path) -> None:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    # A legacy .h5 of the full Keras Applications MobileNet (with its 1000-class top),
    # the format of the files Keras publishes.
    full = keras.applications.MobileNet(include_top=True, weights=None, input_shape=(32, 32, 3), classes=1000)
    legacy = tmp_path / "mobilenet_1_0_224_tf.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, full)
    model = models.build("mobilenet_v1", 3, 32, seed=1)
    head_before = model.get_layer("classifier").get_weights()[0].copy()
    assert models.warm_start(model, legacy) > 0
    np.testing.assert_array_equal(
        models.backbone_of(model).get_layer("conv1").get_weights()[0], full.get_layer("conv1").get_weights()[0]
    )
    np.testing.assert_array_equal(model.get_layer("classifier").get_weights()[0], head_before)

    # The weights of another algorithm are refused with a message naming the option.
    other = models.backbone_model("resnet_v1_50", 32)
    wrong = tmp_path / "resnet50_notop.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(ParameterError, match="--weights .*not weights of a mobilenet_v1 model"):
        models.warm_start(models.build("mobilenet_v1", 3, 32), wrong)
