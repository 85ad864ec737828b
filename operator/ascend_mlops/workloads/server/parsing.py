"""The request-parsing boundary: every byte a client sends is read and checked here.

Everything that can go wrong with a request's bytes — a declared or streamed
body over the limit, a malformed multipart part, a body that is not valid in
its Content-Encoding, JSON nested too deep or holding NaN, a number too large
for a float, a field of the wrong type — leaves this module as a
`ServerError` with a 4xx status (or `ClientClosed` when the client went
away), never as a bare exception that the REST layer would have to call a
500. An inference request is parsed whole, outputs included, into an
`InferRequest` before anything runs on the model.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ascend_mlops.api import contract
from ascend_mlops.workloads.server.errors import (
    ClientClosed,
    InvalidInput,
    PayloadTooLarge,
    ServerError,
)

HEADER_INFERENCE_LENGTH = "Inference-Header-Content-Length"
# Deepest JSON an inference request needs: {inputs: [{data: [N [H [W [3]]]]}]} is 7 levels.
MAX_JSON_DEPTH = 32
PIXEL_RANGE = (0.0, 255.0)
OUTPUT_NAME = "logits"
_CHUNK = 64 * 1024
_SCAN_WINDOW = 1 << 20
# A JSON string (its escapes included): brackets inside strings do not nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


# -- reading bodies -----------------------------------------------------------------------------------
def check_declared_length(request: web.BaseRequest, limit: int) -> None:
    """413 from the headers alone, before a byte of the body is read."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"the request body is {length} bytes, over the {limit}-byte limit ({contract.FLAG_MAX_BODY_BYTES})"
        )


def _too_large(limit: int) -> NoReturn:
    raise PayloadTooLarge(f"the request body is over the {limit}-byte limit ({contract.FLAG_MAX_BODY_BYTES})")


@contextlib.contextmanager
def client_bytes(what: str) -> Iterator[None]:
    """Turn whatever reading the client's bytes raises into a 4xx (or ClientClosed).

    aiohttp raises HttpProcessingError subclasses for malformed part headers
    (no colon, too many, a line too long), RequestPayloadError for a body that
    does not decode in its Content-Encoding, ValueError/AssertionError/
    RuntimeError/LookupError from the multipart reader's own checks, and
    ConnectionError when the client disconnects mid-upload.
    """
    try:
        yield
    except ServerError:
        raise
    except ConnectionError as exc:
        raise ClientClosed(f"the client closed the connection while sending {what}") from exc
    except HttpProcessingError as exc:
        raise InvalidInput(f"malformed {what}: {exc.message}") from exc
    except web.RequestPayloadError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else None
        raise InvalidInput(f"malformed {what}: {cause.message if cause else exc}") from exc
    except (ValueError, AssertionError, RuntimeError, LookupError) as exc:
        raise InvalidInput(f"malformed {what}: {exc}") from exc


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole (decoded) body, refused with 413 as soon as it passes `limit`."""
    check_declared_length(request, limit)
    body = bytearray()
    with client_bytes("request body"):
        async for chunk in request.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                _too_large(limit)
    return bytes(body)


async def read_form_file(request: web.BaseRequest, field: str, limit: int) -> bytes | None:
    """The first part named `field` of a multipart/form-data body (None when there is none).

    Every part is read (and counted against `limit`), so that the whole body is
    checked; only the wanted one is kept.
    """
    check_declared_length(request, limit)
    total = 0
    found: bytes | None = None
    with client_bytes("multipart/form-data body"):
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue  # nested multipart: not ours, but its bytes were still counted by the reader
            keep = part.name == field and found is None
            chunks = bytearray()
            while chunk := await part.read_chunk(_CHUNK):
                total += len(chunk)
                if total > limit:
                    _too_large(limit)
                if keep:
                    chunks += chunk
            if keep:
                found = bytes(chunks)
    return found


# -- JSON ----------------------------------------------------------------------------------------------
def json_depth(data: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings excluded)."""
    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    deepest = level = 0
    for start in range(0, len(codes), _SCAN_WINDOW):
        window = codes[start : start + _SCAN_WINDOW]
        steps = np.isin(window, _OPEN).astype(np.int32) - np.isin(window, _CLOSE)
        levels = level + np.cumsum(steps)
        if len(levels):
            deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(data: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity) nested at most `max_depth` levels, or InvalidInput."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: it is not UTF-8 ({exc})") from exc
    depth = json_depth(data)
    if depth > max_depth:
        raise InvalidInput(f"{what} nests {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc


def dumps_json(value: Any) -> str:
    """JSON for a response; NaN or Infinity here is a server bug, never sent as invalid JSON."""
    return json.dumps(value, allow_nan=False)


# -- the Open Inference Protocol request ------------------------------------------------------------------
@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool
    classification: int  # top-k as Triton's classification extension; 0: the raw logits


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    pixels: np.ndarray | None  # FP32 [N, H, W, 3], checked finite and in PIXEL_RANGE
    files: list[bytes] | None  # BYTES: encoded image files, decoded later like POST /
    outputs: tuple[OutputRequest, ...]

    @property
    def count(self) -> int:
        return len(self.pixels) if self.pixels is not None else len(self.files or [])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object, got {type(value).__name__} {_short(value)}")
    return value


def _flag(params: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}.{key} must be true or false, got {_short(value)}")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def split_binary(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data that follows it (binary tensor extension)."""
    if header_length is None:
        return raw, b""
    try:
        split = int(header_length)
    except ValueError:
        split = -1
    if not 0 < split <= len(raw):
        raise InvalidInput(f"{HEADER_INFERENCE_LENGTH} {_short(header_length)} does not fit a {len(raw)}-byte body")
    return raw[:split], raw[split:]


def deserialize_bytes(data: bytes) -> list[bytes]:
    """The Open Inference Protocol's binary BYTES layout: 4-byte little-endian length, then the bytes."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInput("BYTES tensor data is truncated (a 4-byte length prefix is cut off)")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInput("BYTES tensor data is truncated (an element is shorter than its length prefix)")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def serialize_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def parse_infer_request(
    raw: bytes, header_length: str | None, input_size: tuple[int, int], max_images: int
) -> InferRequest:
    """Everything about a `/v2/.../infer` request, checked before the model sees any of it."""
    header, binary = split_binary(raw, header_length)
    body = loads_json(header, "the inference request")
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise InvalidInput(
            'the request needs "inputs" with exactly one tensor: "images" as FP32 [N,H,W,3] or as BYTES [N] image files'
        )
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f'"id" must be a string, got {_short(request_id)}')
    params = _object(body.get("parameters"), '"parameters"')
    outputs = _parse_outputs(body.get("outputs"), _flag(params, "binary_data_output", '"parameters"', False))
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise InvalidInput("inputs[0] must be an object with name, datatype, shape and data")
    pixels, files = _parse_input(tensor, binary, input_size, max_images)
    return InferRequest(request_id, pixels, files, outputs)


def _parse_outputs(requested: object, binary_default: bool) -> tuple[OutputRequest, ...]:
    if requested is None:
        return (OutputRequest(OUTPUT_NAME, binary_default, 0),)
    if not isinstance(requested, list):
        raise InvalidInput(f'"outputs" must be a list, got {_short(requested)}')
    outputs: list[OutputRequest] = []
    for index, spec in enumerate(requested):
        where = f"outputs[{index}]"
        name = spec.get("name") if isinstance(spec, dict) else None
        if name != OUTPUT_NAME:
            raise InvalidInput(f"unknown output {_short(name)} in {where}; the model's output is {OUTPUT_NAME!r}")
        if any(o.name == name for o in outputs):
            raise InvalidInput(f"{where} asks for {name!r} a second time")
        params = _object(spec.get("parameters"), f"{where}.parameters")
        classes = params.get("classification", 0)
        if not _is_int(classes) or classes < 0:
            raise InvalidInput(f"{where}.parameters.classification must be a non-negative integer, got {_short(classes)}")
        outputs.append(OutputRequest(name, _flag(params, "binary_data", f"{where}.parameters", binary_default), classes))
    return tuple(outputs)


def _parse_input(
    tensor: dict[str, Any], binary: bytes, input_size: tuple[int, int], max_images: int
) -> tuple[np.ndarray | None, list[bytes] | None]:
    datatype = tensor.get("datatype", "")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(_is_int(d) and d >= 0 for d in shape):
        raise InvalidInput(f"inputs[0].shape must be a list of non-negative integers, got {_short(shape)}")
    params = _object(tensor.get("parameters"), "inputs[0].parameters")
    binary_size = params.get("binary_data_size")
    count = shape[0]
    if not 1 <= count <= max_images:
        raise InvalidInput(f"inputs[0] must hold 1..{max_images} images, got {count}")
    if binary_size is not None and (not _is_int(binary_size) or binary_size != len(binary)):
        raise InvalidInput(f"binary_data_size {_short(binary_size)} does not match the {len(binary)} bytes after the JSON header")
    if binary and binary_size is None:
        raise InvalidInput(f"{len(binary)} bytes follow the JSON header but inputs[0] has no binary_data_size")
    if datatype == "FP32":
        h, w = input_size
        if shape[1:] != [h, w, 3]:
            raise InvalidInput(f"FP32 images must have shape [N, {h}, {w}, 3] (NHWC RGB in [0, 255]), got {shape}")
        size = math.prod(shape)
        if binary_size is not None and len(binary) != 4 * size:
            raise InvalidInput(f"binary FP32 data for shape {shape} must be {4 * size} bytes, got {len(binary)}")
        data: np.ndarray = (
            np.frombuffer(binary, dtype="<f4") if binary_size is not None else _json_numbers(tensor.get("data"))
        )
        if data.size != size:
            raise InvalidInput(f"inputs[0].data does not hold {size} FP32 values for shape {shape}: it holds {data.size}")
        return check_pixels(data.reshape(shape)), None
    if datatype == "BYTES":
        if math.prod(shape) != count:
            raise InvalidInput(f"BYTES images must have shape [N] or [N, 1], got {shape}")
        if binary_size is not None:
            files = deserialize_bytes(binary)
        else:
            encoded = tensor.get("data")
            if not isinstance(encoded, list) or not all(isinstance(d, str) for d in encoded):
                raise InvalidInput("BYTES data in JSON must be a list of base64 strings (or use binary data)")
            try:
                files = [base64.b64decode(d, validate=True) for d in encoded]
            except ValueError as exc:
                raise InvalidInput(f"BYTES data is not valid base64: {exc}") from exc
        if len(files) != count:
            raise InvalidInput(f"shape says {count} images but the data holds {len(files)}")
        return None, files
    raise InvalidInput(f"inputs[0].datatype must be FP32 (pixels) or BYTES (image files), got {_short(datatype)}")


def _json_numbers(data: object) -> np.ndarray:
    """FP32 `data` from JSON (flat or nested lists of numbers) as a flat float32 array."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise InvalidInput(f"inputs[0].data must be a (nested) list of numbers: {exc}") from exc
    if array.dtype.kind not in "iuf" or array.ndim == 0:
        # Strings, booleans, nulls, objects, and integers too large for any float (dtype object).
        raise InvalidInput("inputs[0].data must be a (nested) list of numbers, each a float32 pixel value")
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(np.float32).reshape(-1)


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    """Pixels are finite and in [0, 255]: the range the model normalises from (NaN fails every comparison)."""
    low, high = PIXEL_RANGE
    inside = (pixels >= low) & (pixels <= high)
    if not inside.all():
        bad = float(pixels[~inside].flat[0])
        raise InvalidInput(f"inputs[0].data must be finite pixel values in [{low:g}, {high:g}] (RGB), got {bad!r}")
    return np.ascontiguousarray(pixels, dtype=np.float32)
