"""Write a version: frozen graph (for ATC), SavedModel, labels, metrics, ModelArts config.json.

The export model is a fresh, undistributed copy of the trained network, so
exporting never involves the other workers of a multi-worker run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from ascend_mlops.api import contract

from . import networks

log = logging.getLogger(__name__)


class ExportModule(tf.Module):  # type: ignore[misc]
    """What the SavedModel holds: the model and a `serving_default` images -> logits signature."""

    def __init__(self, model: keras.Model, image_size: int) -> None:
        super().__init__(name="classifier")
        self.model = model
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=contract.INPUT_NODE)

        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
        def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
            logits = self.model(images, training=False)
            return {contract.OUTPUT_NODE: tf.identity(logits, name=contract.OUTPUT_NODE)}

        self.serve = serve


def export_model(
    algorithm: str, num_classes: int, image_size: int, weights: Sequence[np.ndarray], eval_crop: float = 1.0
) -> keras.Model:
    model = networks.build(algorithm, num_classes, image_size, eval_crop=eval_crop)
    model.set_weights(list(weights))
    return model


def frozen_graph_def(module: ExportModule) -> Any:
    """A GraphDef with the variables folded in: `images` placeholder -> `logits` node."""
    concrete = module.serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    # Keep only what `logits` needs: drops the NoOp/Identity that tf.function
    # appends for its control dependencies, which converters need not see.
    graph_def = _needed_by(frozen.graph.as_graph_def(), contract.OUTPUT_NODE)
    nodes = {node.name: node for node in graph_def.node}
    placeholder = nodes.get(contract.INPUT_NODE)
    if placeholder is None or placeholder.op != "Placeholder":
        raise RuntimeError(f"frozen graph has no '{contract.INPUT_NODE}' placeholder")
    if contract.OUTPUT_NODE not in nodes:
        raise RuntimeError(f"frozen graph has no '{contract.OUTPUT_NODE}' node")
    leftover = sorted({n.op for n in graph_def.node if "Variable" in n.op})
    if leftover:
        raise RuntimeError(f"frozen graph still reads variables: {leftover}")
    return graph_def


def write_frozen_graph(module: ExportModule, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    graph_def = frozen_graph_def(module)
    path = directory / contract.FROZEN_GRAPH_FILE
    path.write_bytes(graph_def.SerializeToString())
    return path


def write_saved_model(module: ExportModule, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def write_labels(classes: Sequence[str], path: Path) -> Path:
    path.write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    return path


def write_json(data: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def model_config(
    *,
    algorithm: str,
    classes: Sequence[str],
    image_size: int,
    metrics: dict[str, Any],
    hyperparameters: dict[str, Any],
    eval_crop: float = 1.0,
) -> dict[str, Any]:
    """`model/config.json` in the ModelArts model-package shape, plus the graph interface."""
    spec = networks.ALGORITHMS[algorithm]
    return {
        "model_algorithm": "image_classification",
        "model_type": "TensorFlow",
        "metrics": {k: round(float(metrics[k]), 6) for k in ("f1", "accuracy", "precision", "recall")},
        # ModelArts' "built-in image processing" API for classification.
        "apis": [
            {
                "protocol": "http",
                "url": "/",
                "method": "post",
                "request": {
                    "Content-type": "multipart/form-data",
                    "data": {"type": "object", "properties": {"images": {"type": "file"}}},
                },
                "response": {
                    "Content-type": "application/json",
                    "data": {
                        "type": "object",
                        "properties": {
                            "predicted_label": {"type": "string"},
                            "scores": {
                                "type": "array",
                                "items": [
                                    {
                                        "type": "array",
                                        "minItems": 2,
                                        "maxItems": 2,
                                        "items": [{"type": "string"}, {"type": "number"}],
                                    }
                                ],
                            },
                        },
                    },
                },
            }
        ],
        "algorithm": algorithm,
        "labels": list(classes),
        "input": {
            "name": contract.INPUT_NODE,
            "dtype": "float32",
            "format": "NHWC",
            "shape": [-1, image_size, image_size, 3],
            "preprocessing": {
                "color": "RGB",
                "range": [0, 255],
                "resize": f"bilinear to {image_size}x{image_size} (antialiased, like PIL Image.resize BILINEAR)",
                "normalization": f"inside the graph: {spec.describe_normalization()}",
                **(
                    {"centre_crop": f"inside the graph: the central {eval_crop:g} of each side, resized back to "
                     f"{image_size}x{image_size} (bilinear)"}
                    if eval_crop < 1.0 else {}
                ),
            },
        },
        "output": {
            "name": contract.OUTPUT_NODE,
            "dtype": "float32",
            "shape": [-1, len(classes)],
            "meaning": "pre-softmax logits, index = line of labels.txt",
        },
        "hyperparameters": hyperparameters,
    }


def _needed_by(graph_def: Any, output: str) -> Any:
    """The nodes `output` depends on (data and control inputs), in their original order."""
    by_name = {node.name: node for node in graph_def.node}
    keep: set[str] = set()
    pending = [output]
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep.add(name)
        pending.extend(inp.lstrip("^").split(":")[0] for inp in by_name[name].input)
    pruned = tf.compat.v1.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.library.CopyFrom(graph_def.library)
    pruned.node.extend(node for node in graph_def.node if node.name in keep)
    return pruned
