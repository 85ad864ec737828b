"""A tiny frozen graph with the trainer's interface, for fast server tests.

`images` float32 [N, H, W, 3] RGB in [0, 255] -> `logits` [N, 3]: the mean of
each colour channel, scaled. A red image is class 0 ("red"), green 1, blue 2,
so tests know the right answer without training anything.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ascend_mlops.api import contract
from ascend_mlops.ascend import simmodel

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def frozen_graph_bytes(size: int = 8) -> bytes:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name=contract.INPUT_NODE)
        mean = tf.reduce_mean(images / 255.0, axis=[1, 2])
        weights = tf.constant(np.eye(3, dtype=np.float32) * 10.0)
        tf.identity(tf.matmul(mean, weights), name=contract.OUTPUT_NODE)
    return graph.as_graph_def().SerializeToString()


def write_version_dir(root: Path, size: int = 8) -> Path:
    """A trainer-shaped version dir: frozen_graph/frozen_graph.pb and labels.txt."""
    (root / contract.FROZEN_GRAPH_DIR).mkdir(parents=True, exist_ok=True)
    (root / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE).write_bytes(frozen_graph_bytes(size))
    (root / contract.LABELS_FILE).write_text("\n".join(CLASSES) + "\n")
    return root


def write_simulated_om(path: Path, size: int = 8, dynamic_batches: Sequence[int] = ()) -> Path:
    batch = -1 if dynamic_batches else 1
    header = {
        "socVersion": "Ascend310",
        "framework": 3,
        "inputs": [
            {"name": "images", "dims": [batch, size, size, 3], "dataType": "float32", "format": "NHWC", "tensorName": "images:0"}
        ],
        "outputs": [
            {"name": "logits", "dims": [batch, len(CLASSES)], "dataType": "float32", "format": "ND", "tensorName": "logits:0"}
        ],
        "dynamicBatchSizes": list(dynamic_batches),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    simmodel.write(path, simmodel.SimulatedModel(header=header, graph_def=frozen_graph_bytes(size)))
    return path


def image_bytes(colour: str, size: int = 24, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), COLOURS[colour]).save(buf, fmt)
    return buf.getvalue()
