"""The three algorithms: Keras Applications backbones with a classification head.

`resnet_v1_50` and `resnet_v1_101` are ResNet v1 (He et al. 2015, bottleneck
blocks, post-activation); `mobilenet_v1` is MobileNet v1 (Howard et al. 2017,
width 1.0). Each model takes raw RGB pixels in 0..255 and normalises them in
its first layer, the way that algorithm's Keras ImageNet weights expect, so a
warm start from those weights works and the exported graph needs no outside
preprocessing:

  resnet_v1_*:   RGB -> BGR, minus the ImageNet mean (103.939, 116.779, 123.68)
  mobilenet_v1:  x / 127.5 - 1  (range -1..1)
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ascend_mlops.api import contract

from .errors import ParameterError

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# Keras Applications' default of 0.99 needs hundreds of steps before the
# moving statistics (what inference uses) forget their initial values; the
# short runs on small datasets this trainer is for would export a model that
# behaves unlike the one that trained.
BATCH_NORM_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: str
    builder: str  # keras.applications attribute
    normalization: str  # "caffe" or "tf", see Normalize

    def describe_normalization(self) -> str:
        return NORMALIZATION_DOCS[self.normalization]


NORMALIZATION_DOCS = {
    "caffe": "RGB to BGR, then subtract the ImageNet mean (B 103.939, G 116.779, R 123.68); no scaling",
    "tf": "x / 127.5 - 1 (pixels 0..255 to -1..1)",
}

ALGORITHMS: dict[str, Algorithm] = {
    "resnet_v1_50": Algorithm("resnet_v1_50", "ResNet50", "caffe"),
    "resnet_v1_101": Algorithm("resnet_v1_101", "ResNet101", "caffe"),
    "mobilenet_v1": Algorithm("mobilenet_v1", "MobileNet", "tf"),
}


@keras.saving.register_keras_serializable(package="ascend_mlops")
class Normalize(keras.layers.Layer):  # type: ignore[misc]
    """Pixels 0..255 (RGB) -> what the backbone expects; part of the exported graph."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_DOCS:
            raise ValueError(f"unknown normalization {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        if self.mode == "caffe":
            return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(IMAGENET_MEAN_BGR, "float32")
        return x / 127.5 - 1.0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def build(algorithm: str, num_classes: int, image_size: int, seed: int | None = None) -> keras.Model:
    """images float32 [N, S, S, 3] in 0..255 -> logits float32 [N, num_classes]."""
    spec = ALGORITHMS[algorithm]
    if seed is not None:
        keras.utils.set_random_seed(seed)
    images = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name=contract.INPUT_NODE)
    x = Normalize(spec.normalization, name="normalize")(images)
    backbone = backbone_model(algorithm, image_size)
    x = backbone(x)
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(images, logits, name=algorithm)


def backbone_model(algorithm: str, image_size: int) -> keras.Model:
    """The feature extractor alone (globally average-pooled), as in Keras Applications with include_top=False."""
    spec = ALGORITHMS[algorithm]
    factory = getattr(keras.applications, spec.builder)
    kwargs: dict[str, Any] = {
        "include_top": False,
        "weights": None,  # never download; warm start is an explicit --weights file
        "input_shape": (image_size, image_size, 3),
        "pooling": "avg",
    }
    backbone: keras.Model = factory(**kwargs)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    return backbone


def backbone_of(model: keras.Model) -> keras.Model:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"model {model.name} has no backbone")


def _snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def warm_start(model: keras.Model, path: Path) -> int:
    """Load `path` into the model; return how many weight tensors it changed.

    Accepted: Keras Applications weights for this algorithm (with or without
    the 1000-class top, legacy `.h5` or Keras 3 `.weights.h5`), or weights of
    a whole model of this algorithm saved with `model.save_weights`. The
    classification head is kept as initialised when its shape differs.
    """
    backbone = backbone_of(model)
    before = _snapshot(backbone)
    name = path.name
    attempts: list[tuple[str, Any]] = []
    if name.endswith(".weights.h5"):
        attempts = [
            ("backbone", lambda: backbone.load_weights(path)),
            ("model", lambda: model.load_weights(path, skip_mismatch=True)),
        ]
    elif name.endswith((".h5", ".hdf5")):
        # Legacy files by layer name: the top (predictions) layer is simply not matched.
        attempts = [
            ("backbone", lambda: backbone.load_weights(path)),
            ("backbone by name", lambda: backbone.load_weights(path, by_name=True, skip_mismatch=True)),
        ]
    else:
        raise ParameterError(
            f"{contract.FLAG_WEIGHTS} {path}: expected a Keras weights file named *.h5 or *.weights.h5"
        )
    errors: list[str] = []
    for what, attempt in attempts:
        try:
            attempt()
        except Exception as exc:  # Keras raises ValueError, KeyError, OSError... for a foreign file
            errors.append(f"{what}: {exc}")
            continue
        changed = sum(not np.array_equal(a, b) for a, b in zip(before, _snapshot(backbone), strict=True))
        if changed:
            log.info("warm start: loaded %d of %d backbone weight tensors from %s (%s)", changed, len(before), path, what)
            return changed
        errors.append(f"{what}: no weight matched")
    raise ParameterError(
        f"{contract.FLAG_WEIGHTS} {path}: not weights of a {model.name} model "
        f"({'; '.join(e[:200] for e in errors)})"
    )


def recalibrate_batch_norm(model: keras.Model, batches: Any) -> int:
    """Recompute every batch-norm layer's moving statistics as the plain mean over `batches`.

    Moving averages lag behind the weights; after a short run they still
    remember their initial values and inference is far off what training
    measured. Averaging fresh batch statistics of the final weights ("precise
    BN") fixes that at the cost of a few forward passes. Returns the batch count.
    """
    import tensorflow as tf

    layers = [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    # Keras reads `momentum` inside call(); a variable lets one traced function
    # use momentum (k-1)/k at step k, which makes the moving value the running mean.
    momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)
    for layer in layers:
        layer.momentum = momentum

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def forward(images: Any) -> None:
        model(images, training=True)

    count = 0
    try:
        for images in batches:
            count += 1
            momentum.assign((count - 1) / count)
            forward(images)
    finally:
        for layer, value in zip(layers, saved, strict=True):
            layer.momentum = value
    return count
