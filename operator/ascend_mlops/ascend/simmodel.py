"""The SIMULATED offline-model file written by `atc_sim` and loaded by `acl_sim`.

This is NOT Huawei's .om format: real ATC output can only be loaded by real
pyACL on an NPU, and this file can only be loaded by the simulator. Layout:

    8 bytes   MAGIC  b"AMSIMOM1"
    4 bytes   header length N (big-endian unsigned)
    N bytes   UTF-8 JSON header (see `SimulatedModel.header`)
    rest      the TensorFlow frozen GraphDef (serialized bytes)

Header fields:
    simulated: true, format: "ascend-mlops-simulated-om", formatVersion: 1,
    socVersion: "Ascend310", framework: 3,
    inputs:  [{"name": "images", "dims": [1, 224, 224, 3], "dataType": "float32",
               "format": "NHWC", "tensorName": "images:0"}],
    outputs: [{"name": "logits", "dims": [1, 5], "dataType": "float32",
               "format": "ND", "tensorName": "logits:0"}],
    dynamicBatchSizes: [] or [1, 2, 4, 8]   (inputs[0].dims[0] is -1 when set)
    atcArguments: [...], precisionMode, createdAt, note
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

MAGIC: Final = b"AMSIMOM1"
FORMAT_NAME: Final = "ascend-mlops-simulated-om"
FORMAT_VERSION: Final = 1
NOTE: Final = (
    "SIMULATED Ascend offline model written by the ascend-mlops ATC simulator; "
    "it runs only on the ascend-mlops pyACL simulator, never on an NPU."
)


class NotASimulatedModel(ValueError):
    """The file is not a simulated model (a real .om, or something else)."""


@dataclass
class SimulatedModel:
    header: dict[str, Any]
    graph_def: bytes = field(repr=False)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.header.get("inputs", []))

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.header.get("outputs", []))

    @property
    def dynamic_batch_sizes(self) -> list[int]:
        return [int(b) for b in self.header.get("dynamicBatchSizes", [])]


def dumps(model: SimulatedModel) -> bytes:
    header = dict(model.header)
    header.setdefault("simulated", True)
    header.setdefault("format", FORMAT_NAME)
    header.setdefault("formatVersion", FORMAT_VERSION)
    header.setdefault("note", NOTE)
    raw = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw + model.graph_def


def loads(data: bytes) -> SimulatedModel:
    if not data.startswith(MAGIC):
        raise NotASimulatedModel(
            "not a simulated model file (bad magic): a real .om needs real pyACL on an Ascend NPU"
        )
    if len(data) < len(MAGIC) + 4:
        raise NotASimulatedModel("simulated model file is truncated")
    (length,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if len(data) < start + length:
        raise NotASimulatedModel("simulated model file is truncated (header)")
    try:
        header = json.loads(data[start : start + length].decode())
    except ValueError as exc:
        raise NotASimulatedModel(f"simulated model header is not JSON: {exc}") from exc
    return SimulatedModel(header=header, graph_def=data[start + length :])


def write(path: str | Path, model: SimulatedModel) -> None:
    """Write atomically (temporary file + rename), so a crash leaves no half file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(dumps(model))
    tmp.replace(target)


def read(path: str | Path) -> SimulatedModel:
    return loads(Path(path).read_bytes())


def is_simulated(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
