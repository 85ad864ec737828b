"""Tiny frozen graphs with the trainer's interface, for tests that must not wait for training."""

from __future__ import annotations

from pathlib import Path

from ascend_mlops.api import contract


def write_tiny_frozen_graph(directory: Path, size: int = 8, classes: int = 3, batch: int | None = None) -> Path:
    """`<directory>/frozen_graph.pb`: images float32 [batch,size,size,3] -> conv -> mean -> logits [batch,classes]."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    kernel = tf.Variable(np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype("float32"))
    dense = tf.Variable(np.random.default_rng(1).normal(size=(4, classes)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([batch, size, size, 3], tf.float32, name=contract.INPUT_NODE)])
    def model(images: tf.Tensor) -> tf.Tensor:
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")), axis=[1, 2])
        return tf.identity(tf.matmul(features, dense), name=contract.OUTPUT_NODE)

    frozen = convert_variables_to_constants_v2(model.get_concrete_function())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / contract.FROZEN_GRAPH_FILE
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path
