"""Helpers for the trainer's end-to-end tests (they run the real `ascend-mlops train`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ascend_mlops.api import contract


def train_args(data: Path, output: Path, log: Path, algorithm: str = "mobilenet_v1", *sets: str, extra: Sequence[str] = ()) -> list[str]:
    args = [contract.CMD_TRAIN, contract.FLAG_ALGORITHM, algorithm, contract.FLAG_DATA, str(data),
            contract.FLAG_OUTPUT, str(output), contract.FLAG_TERMINATION_LOG, str(log)]
    for item in ("image_size=32", "batch_size=8", "epochs=1", *sets):
        args += [contract.FLAG_SET, item]
    return [*args, *extra]


def start_cli(args: Sequence[str], stderr: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `ascend-mlops ARGS` with stdout+stderr going to a file the test can poll."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    with stderr.open("wb") as sink:
        return subprocess.Popen([sys.executable, "-m", "ascend_mlops", *args], stdout=sink, stderr=subprocess.STDOUT, env=full_env)


def summary(log: Path) -> dict[str, Any]:
    return json.loads(log.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dataset_images(root: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Every image of a dataset resized like the server does (PIL bilinear), float32 0..255, and its class."""
    images, classes = [], []
    for path in sorted(root.glob("*/*")):
        with Image.open(path) as img:
            images.append(np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32))
        classes.append(path.parent.name)
    return np.stack(images), classes


def write_keras_applications_h5(model: Any, path: Path, last_layer: str | None = None) -> Path:
    """Write `model`'s weights in the layout of the published Keras Applications ImageNet files
    (`model.save_weights("x.h5")` of Keras 2): root attributes `layer_names` (every layer,
    weightless ones too), `backend`, `keras_version`; one group per layer with a
    `weight_names` attribute ("conv1/kernel:0", ...) and one dataset per weight under it.
    With `last_layer`, only the layers up to it: the file without the top, from the network
    with it (the same layers under the same names)."""
    import h5py

    layers = list(model.layers)
    if last_layer is not None:
        layers = layers[: [layer.name for layer in layers].index(last_layer) + 1]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            group = f.create_group(layer.name)
            variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [f"{layer.name}/{v.name}:0" for v in variables]
            group.attrs["weight_names"] = [n.encode("utf8") for n in names]
            for name, variable in zip(names, variables, strict=True):
                group.create_dataset(name, data=np.asarray(variable))
    return path
