"""TensorFlow on the CPU: the trainer's frozen graph (or saved model), for clusters without NPUs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ascend_mlops.api import contract
from ascend_mlops.workloads.server.backends import BACKEND_TENSORFLOW, Backend, TensorInfo
from ascend_mlops.workloads.server.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 224  # the seed's input shape, for graphs that leave H and W open


def resolve_model(path: Path) -> tuple[str, Path]:
    """("frozen", file.pb) or ("saved", dir) for the paths users pass to --model.

    Accepted: a .pb file; a frozen_graph dir; a saved_model dir; a training
    version dir (uses its frozen_graph).
    """
    if path.is_file():
        return "frozen", path
    if not path.is_dir():
        raise ModelLoadError(f"--model {path}: no such file or directory")
    if (path / "saved_model.pb").is_file():
        return "saved", path
    if (path / contract.FROZEN_GRAPH_FILE).is_file():
        return "frozen", path / contract.FROZEN_GRAPH_FILE
    nested = path / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE
    if nested.is_file():
        return "frozen", nested
    graphs = sorted(path.glob("*.pb"))
    if len(graphs) == 1:
        return "frozen", graphs[0]
    raise ModelLoadError(
        f"--model {path}: expected a frozen graph (.pb file or a dir holding {contract.FROZEN_GRAPH_FILE}) "
        "or a saved_model dir (holding saved_model.pb) for --backend tensorflow"
    )


class TensorFlowBackend(Backend):
    name = BACKEND_TENSORFLOW

    def __init__(self, model_path: Path) -> None:
        super().__init__(model_path)
        self._fn: Callable[[np.ndarray], np.ndarray] | None = None
        self._kind = ""

    def load(self) -> None:
        import tensorflow as tf

        self._kind, path = resolve_model(self.model_path)
        try:
            if self._kind == "frozen":
                self.platform = "tensorflow_graphdef"
                shape = self._load_frozen(tf, path)
            else:
                self.platform = "tensorflow_savedmodel"
                shape = self._load_saved(tf, path)
        except ModelLoadError:
            raise
        except Exception as exc:  # TensorFlow raises many types for a bad file
            raise ModelLoadError(f"--model {path}: TensorFlow cannot load it: {exc}") from exc
        height, width = shape[1], shape[2]
        if height is None or width is None:
            log.warning("the graph's input has no fixed size; resizing images to %d", DEFAULT_INPUT_SIZE)
            height = width = DEFAULT_INPUT_SIZE
        self.input_size = (int(height), int(width))
        logits = self.predict(np.zeros((1, *self.input_size, 3), dtype=np.float32))
        if logits.ndim != 2:
            raise ModelLoadError(f"--model {path}: `{contract.OUTPUT_NODE}` must be [batch, classes], got {logits.shape}")
        self.num_classes = int(logits.shape[1])
        self.inputs = [TensorInfo(contract.INPUT_NODE, "FP32", (-1, *self.input_size, 3))]
        self.outputs = [TensorInfo(contract.OUTPUT_NODE, "FP32", (-1, self.num_classes))]
        log.info("tensorflow backend: loaded %s (%s), input %s, %d classes", path, self.platform, self.input_size, self.num_classes)

    def _load_frozen(self, tf: Any, path: Path) -> list[int | None]:
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except Exception as exc:
            raise ModelLoadError(f"--model {path}: not a TensorFlow GraphDef: {exc}") from exc

        def _import() -> None:
            tf.compat.v1.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(_import, [])
        try:
            images = wrapped.graph.get_tensor_by_name(f"{contract.INPUT_NODE}:0")
            logits = wrapped.graph.get_tensor_by_name(f"{contract.OUTPUT_NODE}:0")
        except KeyError as exc:
            raise ModelLoadError(
                f"--model {path}: the graph needs an input `{contract.INPUT_NODE}` and an output "
                f"`{contract.OUTPUT_NODE}` (as the trainer exports): {exc}"
            ) from exc
        pruned = wrapped.prune(feeds=[images], fetches=[logits])
        self._fn = lambda batch: np.asarray(pruned(tf.constant(batch))[0])
        return list(images.shape.as_list())

    def _load_saved(self, tf: Any, path: Path) -> list[int | None]:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures.get("serving_default")
        if signature is None:
            raise ModelLoadError(f"--model {path}: the saved model has no serving_default signature")
        _, kwargs = signature.structured_input_signature
        if len(kwargs) != 1:
            raise ModelLoadError(f"--model {path}: the signature must take one image input, has {sorted(kwargs)}")
        (input_name, spec), = kwargs.items()
        output_name = contract.OUTPUT_NODE if contract.OUTPUT_NODE in signature.structured_outputs else next(
            iter(signature.structured_outputs)
        )
        self._saved = loaded  # keep the trackable objects alive while the signature is used
        self._fn = lambda batch: np.asarray(signature(**{input_name: tf.constant(batch)})[output_name])
        return list(spec.shape.as_list())

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self._fn is None:
            raise RuntimeError("predict before load")
        return self._fn(np.ascontiguousarray(images, dtype=np.float32))

    def close(self) -> None:
        self._fn = None

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "format": self._kind}
