"""Serving backends behind one small interface: load, describe, predict a batch, close.

`acl` runs an Ascend offline model (.om) through pyACL, or through the pyACL
simulator when the user opted in; `tensorflow` runs the trainer's frozen graph
or saved model on the CPU, for clusters without NPUs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BACKEND_ACL = "acl"
BACKEND_TENSORFLOW = "tensorflow"
BACKENDS = (BACKEND_ACL, BACKEND_TENSORFLOW)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the Open Inference Protocol describes it; -1 marks the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Backend(abc.ABC):
    """One model on one device. `load` and `close` are called once; `predict`
    may be called from any thread but the server calls it from one."""

    name: str = ""
    platform: str = ""
    simulated: bool = False

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self.input_size: tuple[int, int] = (0, 0)  # (height, width)
        self.num_classes = 0
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model and fill input_size, num_classes, inputs, outputs."""

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, 3] RGB in [0, 255] -> float32 logits [N, classes]."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every resource; safe to call twice and after a failed load."""

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch one device call takes, or None when any size works."""
        return None

    def parameters(self) -> dict[str, Any]:
        """Extra facts for /v2/models/<name> metadata and the logs."""
        return {"backend": self.name, "simulated": self.simulated}

    def warm_up(self) -> None:
        """One prediction at load time, so the first request is not the slow one."""
        h, w = self.input_size
        self.predict(np.zeros((1, h, w, 3), dtype=np.float32))


def create_backend(name: str, model: Path, device_id: int = 0, env: dict[str, str] | None = None) -> Backend:
    """The backend for `--backend NAME`. Raises ToolkitMissing when acl has no pyACL."""
    if name == BACKEND_ACL:
        from ascend_mlops.workloads.server.backends.acl_backend import AclBackend, import_acl

        acl, simulated = import_acl(env)
        return AclBackend(model, acl, simulated, device_id)
    if name == BACKEND_TENSORFLOW:
        from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend

        return TensorFlowBackend(model)
    raise ValueError(f"--backend {name!r} is not one of {', '.join(BACKENDS)}")
