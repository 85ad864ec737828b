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
import re
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
    # The published Keras Applications ImageNet files (legacy HDF5), without and with the top.
    notop_file: str
    top_file: str
    weights_url: str  # the folder they are published in

    def describe_normalization(self) -> str:
        return NORMALIZATION_DOCS[self.normalization]


NORMALIZATION_DOCS = {
    "caffe": "RGB to BGR, then subtract the ImageNet mean (B 103.939, G 116.779, R 123.68); no scaling",
    "tf": "x / 127.5 - 1 (pixels 0..255 to -1..1)",
}

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
ALGORITHMS: dict[str, Algorithm] = {
    "resnet_v1_50": Algorithm(
        "resnet_v1_50", "ResNet50", "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        _KERAS_WEIGHTS + "resnet/",
    ),
    "resnet_v1_101": Algorithm(
        "resnet_v1_101", "ResNet101", "caffe",
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
        _KERAS_WEIGHTS + "resnet/",
    ),
    # Published for inputs 128, 160, 192 and 224 (mobilenet_1_0_<size>_tf*.h5): the
    # same tensors trained at different sizes; any of them loads at any image_size.
    "mobilenet_v1": Algorithm(
        "mobilenet_v1", "MobileNet", "tf",
        "mobilenet_1_0_224_tf_no_top.h5",
        "mobilenet_1_0_224_tf.h5",
        _KERAS_WEIGHTS + "mobilenet/",
    ),
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


@keras.saving.register_keras_serializable(package="ascend_mlops")
class CentreCrop(keras.layers.Layer):  # type: ignore[misc]
    """At inference only: keep the central `fraction` of each side, resized back to the input size.

    Training sees random resized crops (objects larger than in the whole
    photo); looking at the centre at inference shows objects at a similar
    scale. Inside the graph, so what the validation measures is what the
    served model (fed the whole image resized) computes.
    """

    def __init__(self, fraction: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"centre crop fraction {fraction!r} is not in (0, 1]")
        self.fraction = fraction

    def call(self, inputs: Any, training: Any = None) -> Any:
        if training:
            return inputs
        size = inputs.shape[1]
        keep = max(1, round(size * self.fraction))
        start = (size - keep) // 2
        crop = inputs[:, start:start + keep, start:start + keep, :]
        return keras.ops.image.resize(crop, (size, size), interpolation="bilinear")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fraction": self.fraction}


def build(
    algorithm: str, num_classes: int, image_size: int, seed: int | None = None, eval_crop: float = 1.0
) -> keras.Model:
    """images float32 [N, S, S, 3] in 0..255 -> logits float32 [N, num_classes].

    `eval_crop` < 1 adds a CentreCrop layer (inference only) before the backbone.
    """
    spec = ALGORITHMS[algorithm]
    if seed is not None:
        keras.utils.set_random_seed(seed)
    images = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name=contract.INPUT_NODE)
    x = Normalize(spec.normalization, name="normalize")(images)
    if eval_crop < 1.0:
        x = CentreCrop(eval_crop, name="centre_crop")(x)
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


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze the backbone. Frozen batch-norm layers also run in
    inference mode (Keras: `training and self.trainable`), so their moving
    statistics stay the pretrained ones."""
    backbone_of(model).trainable = trainable


def _snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def _layer_variables(layer: keras.layers.Layer) -> list[Any]:
    # The order Keras' HDF5 files store a layer's weights in (kernel, bias;
    # gamma, beta, moving_mean, moving_variance).
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path: Path) -> dict[str, list[np.ndarray]] | None:
    """Layer name -> weight arrays of a legacy Keras HDF5 weights file (the layout of the
    published Keras Applications files: a `layer_names` attribute, one group per layer
    with a `weight_names` attribute); None if the file is HDF5 but not in that layout."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ParameterError(f"{contract.FLAG_WEIGHTS} {path}: not an HDF5 file ({exc})") from None
    with handle as f:
        group = f["model_weights"] if "model_weights" in f else f  # a whole-model .h5 keeps them there
        if "layer_names" not in group.attrs:
            return None
        layers: dict[str, list[np.ndarray]] = {}
        for raw_name in group.attrs["layer_names"]:
            name = _text(raw_name)
            if name not in group:
                continue
            layer_group = group[name]
            names = [_text(n) for n in layer_group.attrs.get("weight_names", [])]
            if names:
                layers[name] = [np.asarray(layer_group[n]) for n in names]
        return layers


def _weight_layers(backbone: keras.Model) -> dict[str, keras.layers.Layer]:
    return {layer.name: layer for layer in backbone.layers if layer.weights}


def _identify(names: set[str]) -> str | None:
    """Which algorithm's Keras Applications network has these layer names, from their
    telltale ones: MobileNet's `conv_pw_13`, ResNet's number of conv4 blocks (6 or 23)."""
    if {"conv1", "conv_pw_13"} <= names:
        return "mobilenet_v1"
    blocks = {int(m.group(1)) for n in names if (m := re.match(r"conv4_block(\d+)_", n))}
    if "conv1_conv" in names and blocks:
        return {6: "resnet_v1_50", 23: "resnet_v1_101"}.get(max(blocks))
    return None


def _examples(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_keras_applications_weights(model: keras.Model, path: Path, algorithm: str, layers: dict[str, list[np.ndarray]]) -> int:
    """Copy `layers` (from read_keras_h5) into the backbone, strictly: every weight
    layer of the backbone must be in the file with the same shapes; the file may
    have more (the 1000-class ImageNet top), which are ignored. Returns the
    number of tensors loaded; raises ParameterError naming the file and the mismatch."""
    spec = ALGORITHMS[algorithm]
    backbone = backbone_of(model)
    expected = _weight_layers(backbone)
    wanted = (
        f"Keras ImageNet weights of {spec.builder} ({spec.notop_file} or {spec.top_file} from {spec.weights_url})"
    )
    missing = [name for name in expected if name not in layers]
    if missing:
        other = _identify(set(layers))
        if other is not None and other != algorithm:
            hint = f"; the file holds {ALGORITHMS[other].builder} weights: use --algorithm {other}, or {wanted}"
        else:
            hint = f"; the file's layers are {_examples(sorted(layers))}; expected {wanted}"
        raise ParameterError(
            f"{contract.FLAG_WEIGHTS} {path}: not weights of a {algorithm} network: "
            f"{len(missing)} of its {len(expected)} weight layers are not in the file "
            f"({_examples(missing)}){hint}"
        )
    mismatched: list[str] = []
    for name, layer in expected.items():
        want = [tuple(v.shape) for v in _layer_variables(layer)]
        have = [tuple(a.shape) for a in layers[name]]
        if want != have:
            mismatched.append(f"{name}: file {have}, network {want}")
    if mismatched:
        hint = " (a MobileNet of another width, alpha != 1.0?)" if algorithm == "mobilenet_v1" else ""
        raise ParameterError(
            f"{contract.FLAG_WEIGHTS} {path}: weight shapes do not match the {algorithm} network{hint}: "
            f"{'; '.join(mismatched[:3])}" + (f"; and {len(mismatched) - 3} more layers" if len(mismatched) > 3 else "")
        )
    count = 0
    for name, layer in expected.items():
        for variable, value in zip(_layer_variables(layer), layers[name], strict=True):
            variable.assign(value.astype(variable.dtype))
            count += 1
    extra = sorted(set(layers) - set(expected))
    log.info(
        "warm start: loaded %d of %d backbone weight tensors from %s (Keras HDF5, %d layers)%s",
        count, len(backbone.weights), path, len(expected),
        f"; ignored the file's {_examples(extra)} (the ImageNet classification top)" if extra else "",
    )
    return count


def warm_start(model: keras.Model, path: Path) -> int:
    """Load `path` into the model; return how many weight tensors it loaded.

    Accepted: Keras Applications ImageNet weights for this algorithm (with or
    without the 1000-class top: legacy HDF5 `.h5`, matched strictly by layer
    name and shape), or a Keras 3 `.weights.h5` of this backbone or of a
    whole model of this algorithm saved with `model.save_weights`. The
    classification head is kept as initialised.
    """
    algorithm = model.name
    backbone = backbone_of(model)
    name = path.name
    if not name.endswith((".h5", ".hdf5")):
        raise ParameterError(
            f"{contract.FLAG_WEIGHTS} {path}: expected a Keras weights file named *.h5 or *.weights.h5"
        )
    layers = read_keras_h5(path)
    if layers is not None:
        return load_keras_applications_weights(model, path, algorithm, layers)
    # Keras 3 `.weights.h5` layout: Keras' own loader, which refuses a file that does not fit.
    before = _snapshot(backbone)
    errors: list[str] = []
    for what, attempt in (
        ("as a backbone", lambda: backbone.load_weights(path)),
        ("as a whole model", lambda: model.load_weights(path, skip_mismatch=True)),
    ):
        try:
            attempt()
        except Exception as exc:  # Keras raises ValueError, KeyError, OSError... for a foreign file
            errors.append(f"{what}: {str(exc).splitlines()[0][:200]}")
            continue
        changed = sum(not np.array_equal(a, b) for a, b in zip(before, _snapshot(backbone), strict=True))
        if changed:
            log.info("warm start: loaded %d of %d backbone weight tensors from %s (%s)", changed, len(before), path, what)
            return changed
        errors.append(f"{what}: no weight matched")
    raise ParameterError(
        f"{contract.FLAG_WEIGHTS} {path}: not weights of a {algorithm} model ({'; '.join(errors)})"
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

    # Statistics of what the backbone sees at inference: the centre crop if the model has one
    # (in training mode the crop layer passes images through).
    crops = [layer for layer in model.layers if isinstance(layer, CentreCrop)]

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def forward(images: Any) -> None:
        for crop in crops:
            images = crop(images, training=False)
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
