"""The networks, in process: in-graph normalisation, resizing like the server, warm start,
batch-norm recalibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ascend_mlops.workloads.trainer.errors import ParameterError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ascend_mlops.workloads.trainer import networks as nets  # noqa: E402
from ascend_mlops.workloads.trainer import pipeline  # noqa: E402

from .conftest import write_keras_applications_h5  # noqa: E402


def test_normalisation_is_part_of_the_model() -> None:
    pixel = np.array([[[[10.0, 100.0, 250.0]]]], dtype=np.float32)  # R, G, B
    caffe = nets.Normalize("caffe")(pixel).numpy().ravel()
    np.testing.assert_allclose(caffe, [250 - 103.939, 100 - 116.779, 10 - 123.68], rtol=1e-6)
    scaled = nets.Normalize("tf")(pixel).numpy().ravel()
    np.testing.assert_allclose(scaled, [10 / 127.5 - 1, 100 / 127.5 - 1, 250 / 127.5 - 1], rtol=1e-6)
    model = nets.build("mobilenet_v1", 4, 32, seed=0)
    assert model.input.name == "images" and tuple(model.input.shape) == (None, 32, 32, 3)
    assert tuple(model.output.shape) == (None, 4)
    assert isinstance(model.layers[1], nets.Normalize)


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
    model = nets.build("mobilenet_v1", 3, 32, seed=0)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    assert nets.recalibrate_batch_norm(model, [images]) == 1
    inference = model(images, training=False).numpy()
    training = model(images, training=True).numpy()
    np.testing.assert_allclose(inference, training, rtol=1e-3, atol=1e-3)
    bn = next(layer for layer in nets.backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization))
    assert bn.momentum == nets.BATCH_NORM_MOMENTUM  # restored


# algorithm -> (Keras Applications builder, the last layer of the network without its top)
KERAS_APPLICATIONS = {
    "resnet_v1_50": ("ResNet50", "conv5_block3_out"),
    "resnet_v1_101": ("ResNet101", "conv5_block3_out"),
    "mobilenet_v1": ("MobileNet", "conv_pw_13_relu"),
}


@pytest.fixture(scope="module")
def networks() -> dict[str, Any]:
    """One of our models per algorithm (32x32, three classes), shared: building them is what costs."""
    return {algorithm: nets.build(algorithm, 3, 32, seed=1) for algorithm in KERAS_APPLICATIONS}


@pytest.fixture(scope="module")
def published_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], tuple[Path, Any]]:
    """(algorithm, with top) -> a file in the layout and under the name of the published Keras
    ImageNet weights, with random values, and the Keras model it was written from."""
    folder = tmp_path_factory.mktemp("keras-applications")
    files = {}
    for algorithm, (builder, last_notop_layer) in KERAS_APPLICATIONS.items():
        spec = nets.ALGORITHMS[algorithm]
        keras.utils.set_random_seed(7)
        network = getattr(keras.applications, builder)(include_top=True, weights=None, input_shape=(32, 32, 3))
        files[algorithm, True] = (write_keras_applications_h5(network, folder / spec.top_file), network)
        notop = write_keras_applications_h5(network, folder / spec.notop_file, last_layer=last_notop_layer)
        files[algorithm, False] = (notop, network)
    return files


@pytest.mark.parametrize("top", [False, True], ids=["notop", "top"])
@pytest.mark.parametrize("algorithm", list(KERAS_APPLICATIONS))
def test_warm_start_from_published_keras_files(
    published_files: dict[tuple[str, bool], tuple[Path, Any]], networks: dict[str, Any], algorithm: str, top: bool
) -> None:
    path, network = published_files[algorithm, top]
    model = networks[algorithm]
    nets.backbone_of(model).set_weights([np.zeros_like(w) for w in nets.backbone_of(model).get_weights()])
    head_before = model.get_layer("classifier").get_weights()[0].copy()
    backbone = nets.backbone_of(model)
    assert nets.warm_start(model, path) == len(backbone.weights)
    for layer in backbone.layers:
        if layer.weights:  # every tensor, batch-norm moving statistics included
            for ours, theirs in zip(layer.get_weights(), network.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(model.get_layer("classifier").get_weights()[0], head_before)


def test_mismatched_weight_files_are_rejected_naming_file_and_mismatch(
    published_files: dict[tuple[str, bool], tuple[Path, Any]], networks: dict[str, Any], tmp_path: Path
) -> None:
    resnet50, _ = published_files["resnet_v1_50", False]
    with pytest.raises(ParameterError) as err:
        nets.warm_start(networks["resnet_v1_101"], resnet50)
    message = str(err.value)
    assert message.startswith(f"--weights {resnet50}: not weights of a resnet_v1_101 network")
    assert "conv4_block7_1_conv" in message  # the first layer ResNet50 does not have
    assert "the file holds ResNet50 weights: use --algorithm resnet_v1_50" in message

    mobilenet, _ = published_files["mobilenet_v1", True]
    with pytest.raises(ParameterError, match=r"not weights of a resnet_v1_50 network: \d+ of its 106 weight layers.*"
                       r"use --algorithm mobilenet_v1"):
        nets.warm_start(networks["resnet_v1_50"], mobilenet)

    # The right layer names, other shapes: a MobileNet of width 0.5.
    half = write_keras_applications_h5(
        keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.5),
        tmp_path / "mobilenet_5_0_224_tf_no_top.h5",
    )
    with pytest.raises(ParameterError, match=r"weight shapes do not match the mobilenet_v1 network \(a MobileNet of "
                       r"another width.*conv1: file \[\(3, 3, 3, 16\)\], network \[\(3, 3, 3, 32\)\]"):
        nets.warm_start(networks["mobilenet_v1"], half)

    not_hdf5 = tmp_path / "weights.h5"
    not_hdf5.write_text("<html>404</html>")
    with pytest.raises(ParameterError, match=f"--weights {not_hdf5}: not an HDF5 file"):
        nets.warm_start(networks["mobilenet_v1"], not_hdf5)

    # Keras 3 `.weights.h5` of another network: Keras' own loader refuses it.
    wrong = tmp_path / "resnet50_notop.weights.h5"
    nets.backbone_of(networks["resnet_v1_50"]).save_weights(wrong)
    with pytest.raises(ParameterError, match="--weights .*not weights of a mobilenet_v1 model"):
        nets.warm_start(networks["mobilenet_v1"], wrong)


def test_centre_crop_only_at_inference() -> None:
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    crop = nets.CentreCrop(0.5)
    np.testing.assert_array_equal(np.asarray(crop(images, training=True)), images)
    inference = np.asarray(crop(images, training=False))
    assert inference.shape == images.shape
    expected = tf.image.resize(images[:, 8:24, 8:24, :], (32, 32), method="bilinear").numpy()
    np.testing.assert_allclose(inference, expected, atol=1e-3)
    model = nets.build("mobilenet_v1", 3, 32, eval_crop=0.875)
    assert isinstance(model.get_layer("centre_crop"), nets.CentreCrop)
    assert "centre_crop" not in [layer.name for layer in nets.build("mobilenet_v1", 3, 32).layers]


def test_augmentation_keeps_shape_and_range_and_can_be_turned_off() -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    out = pipeline.augment(tf.constant(images), crop_scale=0.35, color_jitter=0.2).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    # crop_scale=1 and color_jitter=0 (the modelarts recipe): flips only.
    flipped = pipeline.augment(tf.constant(images)).numpy()
    for image, result in zip(images, flipped, strict=True):
        assert np.array_equal(result, image) or np.array_equal(result, image[:, ::-1])
