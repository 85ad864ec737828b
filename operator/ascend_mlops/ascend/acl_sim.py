"""A SIMULATOR of the subset of pyACL (`import acl`) that the inference server uses.

It lets the `acl` serving backend run where there is no Ascend NPU (laptops, CI,
the sandbox). It is only used when the user opts in with ASCEND_MLOPS_SIMULATOR=1
and the real `acl` module is not importable; everything that runs on it says so.

What it mirrors from the real module: names (`acl.init`, `acl.rt.malloc`,
`acl.mdl.execute`, ...), argument order, return conventions (a bare code, or a
value followed by a code), constants and error codes (`acl_constants`).

What it simulates:
- "device memory" is a table of allocations (address -> size, kind, bytes);
  copies are bounds-checked, and a copy that overflows, a use after free, a
  double free, an execute before load or with wrongly sized buffers return the
  code the real library returns for that misuse (see `docs/server.md`);
- contexts are per thread, as in the real runtime: a thread that never called
  `acl.rt.set_context` (or `create_context`) gets ACL_ERROR_RT_CONTEXT_NULL;
- models are the SIMULATED .om files of the ATC simulator (`simmodel`); their
  embedded frozen TensorFlow graph runs on the CPU at `acl.mdl.execute`.
  A real .om cannot be loaded here (ACL_ERROR_PARSE_MODEL).

Pointers from `acl.util.bytes_to_ptr` stay valid for the last
`EXTERNAL_POINTER_SLOTS` conversions; the real pointer is valid while the bytes
object lives, which the simulator cannot observe.

Devices: the container sees the devices named by ASCEND_VISIBLE_DEVICES (as
the device plugin and Ascend Docker Runtime set it: physical ids, "2" or
"1,3"), numbered 0..n-1 in that order, as on a real node; read at `acl.init`.
Unset, the simulator has one device, physical 0. `sim_devices()` tells which
physical device each simulated one stands for.

`sim_*` functions do not exist in the real module: they let tests inspect and
reset the simulator.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from ascend_mlops.ascend import acl_constants as c
from ascend_mlops.ascend import simmodel
from ascend_mlops.ascend.deviceplugin import visible

log = logging.getLogger(__name__)

SIMULATED: Final = True  # the real module has no such attribute
DEVICE_COUNT: Final = 1  # without ASCEND_VISIBLE_DEVICES
DEVICE_MEMORY_BYTES: Final = 8 * 1024**3  # an Ascend 310 card has 8 GiB
EXTERNAL_POINTER_SLOTS: Final = 256
_ALIGN: Final = 32  # device allocations are 32-byte aligned
_GAP: Final = 4096  # unmapped space between allocations so overruns never land in a neighbour

_DTYPES: Final[dict[str, tuple[int, Any]]] = {
    "float32": (c.ACL_FLOAT, np.float32),
    "float16": (c.ACL_FLOAT16, np.float16),
    "int32": (c.ACL_INT32, np.int32),
    "int64": (c.ACL_INT64, np.int64),
    "uint8": (c.ACL_UINT8, np.uint8),
}
_FORMATS: Final[dict[str, int]] = {"NCHW": c.ACL_FORMAT_NCHW, "NHWC": c.ACL_FORMAT_NHWC, "ND": c.ACL_FORMAT_ND}
_NPY_TYPES: Final[dict[int, Any]] = {11: np.float32, 23: np.float16, 5: np.int32, 7: np.int64, 2: np.uint8}

DEVICE: Final = "device"
HOST: Final = "host"
EXTERNAL: Final = "external"  # host memory owned by a Python bytes/ndarray


@dataclass
class _Allocation:
    base: int
    size: int
    kind: str
    data: bytearray | memoryview


@dataclass
class _TensorDesc:
    name: str
    dims: list[int]  # -1 for a dynamic batch
    dtype_name: str
    format_name: str
    max_batch: int

    @property
    def numpy_dtype(self) -> Any:
        return _DTYPES[self.dtype_name][1]

    @property
    def acl_dtype(self) -> int:
        return _DTYPES[self.dtype_name][0]

    def concrete_dims(self, batch: int) -> list[int]:
        return [batch if d < 0 else d for d in self.dims]

    @property
    def size(self) -> int:
        return int(np.prod(self.concrete_dims(self.max_batch))) * np.dtype(self.numpy_dtype).itemsize


@dataclass
class _Model:
    path: str
    inputs: list[_TensorDesc]  # includes the dynamic-batch input, last, when present
    outputs: list[_TensorDesc]
    batches: list[int]
    run: Callable[[list[np.ndarray]], list[np.ndarray]]
    cur_output_dims: list[list[int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dynamic_index(self) -> int:
        return len(self.inputs) - 1 if self.batches else -1


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.initialized = False
        self.visible: list[int] = list(range(DEVICE_COUNT))  # physical id of each device id, from acl.init
        self.devices: dict[int, int] = {}  # device id -> set_device count
        self.contexts: dict[int, int] = {}  # context -> device id
        self.allocations: dict[int, _Allocation] = {}
        self.bases: list[int] = []  # sorted bases of live allocations
        self.freed: dict[int, int] = {}  # base -> size, to tell a use after free from a wild pointer
        self.external: OrderedDict[int, _Allocation] = OrderedDict()
        self.device_bytes = 0
        self.next_device = 0x1_0000_0000
        self.next_host = 0x7F00_0000_0000
        self.models: dict[int, _Model] = {}
        self.descs: dict[int, int | None] = {}  # desc -> model id it describes
        self.datasets: dict[int, list[int]] = {}
        self.data_buffers: dict[int, tuple[int, int]] = {}
        self.handles = itertools.count(0x10)
        self.model_ids = itertools.count(1)
        self.recent_error = ""
        self.calls: list[str] = []


_state = _State()
_thread = threading.local()


def _fail(code: int, message: str) -> int:
    _state.recent_error = f"{c.error_name(code)}: {message}"
    log.debug("acl_sim: %s", _state.recent_error)
    return code


def _record(name: str) -> None:
    _state.calls.append(name)
    if len(_state.calls) > 10_000:
        del _state.calls[:5_000]


def _current_context() -> int | None:
    ctx: int | None = getattr(_thread, "context", None)
    if ctx is not None and ctx not in _state.contexts:
        return None
    return ctx


def _needs_context() -> int:
    if not _state.initialized:
        return _fail(c.ACL_ERROR_UNINITIALIZE, "acl.init has not been called")
    if _current_context() is None:
        return _fail(
            c.ACL_ERROR_RT_CONTEXT_NULL,
            "this thread has no current context: call acl.rt.set_device and "
            "acl.rt.create_context (or acl.rt.set_context in a new thread)",
        )
    return c.ACL_SUCCESS


def _add_allocation(alloc: _Allocation) -> None:
    _state.allocations[alloc.base] = alloc
    bisect.insort(_state.bases, alloc.base)
    _state.freed.pop(alloc.base, None)


def _find(ptr: int) -> tuple[_Allocation | None, int]:
    """The live allocation holding `ptr` and the offset in it."""
    external = _state.external.get(ptr)
    if external is not None:
        return external, 0
    i = bisect.bisect_right(_state.bases, ptr) - 1
    if i >= 0:
        alloc = _state.allocations[_state.bases[i]]
        if ptr < alloc.base + alloc.size:
            return alloc, ptr - alloc.base
    for alloc in _state.external.values():
        if alloc.base <= ptr < alloc.base + alloc.size:
            return alloc, ptr - alloc.base
    return None, 0


def _was_freed(ptr: int) -> bool:
    return any(base <= ptr < base + size for base, size in _state.freed.items())


def _resolve(ptr: int, count: int, what: str) -> tuple[int, _Allocation | None, int]:
    alloc, offset = _find(ptr)
    if alloc is None:
        if _was_freed(ptr):
            return _fail(c.ACL_ERROR_RT_PARAM_INVALID, f"{what} {ptr:#x} was already freed (use after free)"), None, 0
        return _fail(c.ACL_ERROR_RT_PARAM_INVALID, f"{what} {ptr:#x} is not an allocated address"), None, 0
    if offset + count > alloc.size:
        return (
            _fail(
                c.ACL_ERROR_RT_PARAM_INVALID,
                f"{what} {ptr:#x}: {count} bytes overrun its {alloc.size}-byte allocation at offset {offset}",
            ),
            None,
            0,
        )
    return c.ACL_SUCCESS, alloc, offset


# ---------------------------------------------------------------------------
# acl.*
# ---------------------------------------------------------------------------
def init(config_path: str | None = None) -> int:
    with _state.lock:
        _record("acl.init")
        if _state.initialized:
            return _fail(c.ACL_ERROR_REPEAT_INITIALIZE, "acl.init was already called in this process")
        raw = os.environ.get(visible.ENV_VISIBLE_DEVICES)
        try:
            physical = list(range(DEVICE_COUNT)) if raw is None else visible.parse(raw)
        except ValueError as exc:
            return _fail(c.ACL_ERROR_INVALID_PARAM, str(exc))
        _state.visible = physical
        _state.initialized = True
        log.warning(
            "pyACL SIMULATOR initialised: models run on the CPU with TensorFlow, not on an Ascend NPU; %s",
            _describe_devices(raw),
        )
        return c.ACL_SUCCESS


def _describe_devices(raw: str | None) -> str:
    mapping = ", ".join(f"device {i} = simulated physical device {p}" for i, p in enumerate(_state.visible))
    source = f"{visible.ENV_VISIBLE_DEVICES}={raw}" if raw is not None else f"{visible.ENV_VISIBLE_DEVICES} unset"
    return f"{mapping or 'no devices'} ({source})"


def finalize() -> int:
    with _state.lock:
        _record("acl.finalize")
        if not _state.initialized:
            return _fail(c.ACL_ERROR_REPEAT_FINALIZE, "acl.finalize without a matching acl.init")
        _state.initialized = False
        return c.ACL_SUCCESS


def get_recent_err_msg() -> str:
    return _state.recent_error


def create_data_buffer(data: int, size: int) -> int:
    with _state.lock:
        _record("acl.create_data_buffer")
        if size < 0:
            _fail(c.ACL_ERROR_INVALID_PARAM, f"data buffer size {size} is negative")
            return 0
        handle = next(_state.handles)
        _state.data_buffers[handle] = (int(data), int(size))
        return handle


def destroy_data_buffer(data_buffer: int) -> int:
    with _state.lock:
        _record("acl.destroy_data_buffer")
        if _state.data_buffers.pop(data_buffer, None) is None:
            return _fail(c.ACL_ERROR_INVALID_PARAM, f"data buffer {data_buffer:#x} does not exist")
        return c.ACL_SUCCESS


def get_data_buffer_addr(data_buffer: int) -> int:
    with _state.lock:
        return _state.data_buffers.get(data_buffer, (0, 0))[0]


def get_data_buffer_size_v2(data_buffer: int) -> int:
    with _state.lock:
        return _state.data_buffers.get(data_buffer, (0, 0))[1]


# ---------------------------------------------------------------------------
# acl.rt
# ---------------------------------------------------------------------------
class _Rt:
    @staticmethod
    def get_device_count() -> tuple[int, int]:
        if not _state.initialized:
            return 0, _fail(c.ACL_ERROR_UNINITIALIZE, "acl.init has not been called")
        return len(_state.visible), c.ACL_SUCCESS

    @staticmethod
    def get_run_mode() -> tuple[int, int]:
        return c.ACL_HOST, c.ACL_SUCCESS

    @staticmethod
    def set_device(device_id: int) -> int:
        with _state.lock:
            _record("acl.rt.set_device")
            if not _state.initialized:
                return _fail(c.ACL_ERROR_UNINITIALIZE, "acl.init has not been called")
            if not 0 <= device_id < len(_state.visible):
                return _fail(
                    c.ACL_ERROR_RT_INVALID_DEVICEID,
                    f"device {device_id} does not exist: this container sees {len(_state.visible)} simulated "
                    f"device(s) ({visible.ENV_VISIBLE_DEVICES}={','.join(map(str, _state.visible)) or '(none)'})",
                )
            _state.devices[device_id] = _state.devices.get(device_id, 0) + 1
            return c.ACL_SUCCESS

    @staticmethod
    def reset_device(device_id: int) -> int:
        with _state.lock:
            _record("acl.rt.reset_device")
            if _state.devices.get(device_id, 0) <= 0:
                return _fail(c.ACL_ERROR_RT_INVALID_DEVICEID, f"device {device_id} was not set")
            _state.devices[device_id] -= 1
            if not _state.devices[device_id]:
                del _state.devices[device_id]
            return c.ACL_SUCCESS

    @staticmethod
    def create_context(device_id: int) -> tuple[int, int]:
        with _state.lock:
            _record("acl.rt.create_context")
            if not _state.initialized:
                return 0, _fail(c.ACL_ERROR_UNINITIALIZE, "acl.init has not been called")
            if device_id not in _state.devices:
                return 0, _fail(c.ACL_ERROR_RT_INVALID_DEVICEID, f"call acl.rt.set_device({device_id}) first")
            ctx = next(_state.handles)
            _state.contexts[ctx] = device_id
            _thread.context = ctx
            return ctx, c.ACL_SUCCESS

    @staticmethod
    def set_context(context: int) -> int:
        with _state.lock:
            if context not in _state.contexts:
                return _fail(c.ACL_ERROR_RT_PARAM_INVALID, f"context {context:#x} does not exist")
            _thread.context = context
            return c.ACL_SUCCESS

    @staticmethod
    def get_context() -> tuple[int, int]:
        ctx = _current_context()
        if ctx is None:
            return 0, _fail(c.ACL_ERROR_RT_CONTEXT_NULL, "this thread has no current context")
        return ctx, c.ACL_SUCCESS

    @staticmethod
    def destroy_context(context: int) -> int:
        with _state.lock:
            _record("acl.rt.destroy_context")
            if _state.contexts.pop(context, None) is None:
                return _fail(c.ACL_ERROR_RT_PARAM_INVALID, f"context {context:#x} does not exist")
            if getattr(_thread, "context", None) == context:
                _thread.context = None
            return c.ACL_SUCCESS

    @staticmethod
    def malloc(size: int, policy: int) -> tuple[int, int]:
        with _state.lock:
            _record("acl.rt.malloc")
            code = _needs_context()
            if code:
                return 0, code
            if size <= 0:
                return 0, _fail(c.ACL_ERROR_INVALID_PARAM, f"acl.rt.malloc size must be > 0, got {size}")
            if policy not in (c.ACL_MEM_MALLOC_HUGE_FIRST, c.ACL_MEM_MALLOC_HUGE_ONLY, c.ACL_MEM_MALLOC_NORMAL_ONLY):
                return 0, _fail(c.ACL_ERROR_RT_INVALID_MALLOC_TYPE, f"unknown malloc policy {policy}")
            if _state.device_bytes + size > DEVICE_MEMORY_BYTES:
                return 0, _fail(c.ACL_ERROR_RT_MEMORY_ALLOCATION, f"out of device memory allocating {size} bytes")
            base = _state.next_device
            _state.next_device += -(-size // _ALIGN) * _ALIGN + _GAP
            _add_allocation(_Allocation(base, size, DEVICE, bytearray(size)))
            _state.device_bytes += size
            return base, c.ACL_SUCCESS

    @staticmethod
    def malloc_host(size: int) -> tuple[int, int]:
        with _state.lock:
            _record("acl.rt.malloc_host")
            code = _needs_context()
            if code:
                return 0, code
            if size <= 0:
                return 0, _fail(c.ACL_ERROR_INVALID_PARAM, f"acl.rt.malloc_host size must be > 0, got {size}")
            base = _state.next_host
            _state.next_host += -(-size // _ALIGN) * _ALIGN + _GAP
            _add_allocation(_Allocation(base, size, HOST, bytearray(size)))
            return base, c.ACL_SUCCESS

    @staticmethod
    def _free(ptr: int, kind: str, call: str) -> int:
        with _state.lock:
            _record(call)
            alloc = _state.allocations.get(ptr)
            if alloc is None or alloc.kind != kind:
                if ptr in _state.freed:
                    return _fail(c.ACL_ERROR_RT_MEMORY_FREE, f"{call}({ptr:#x}): already freed (double free)")
                return _fail(c.ACL_ERROR_RT_MEMORY_FREE, f"{call}({ptr:#x}): not an address {call} can free")
            del _state.allocations[ptr]
            _state.bases.remove(ptr)
            _state.freed[ptr] = alloc.size
            if kind == DEVICE:
                _state.device_bytes -= alloc.size
            return c.ACL_SUCCESS

    @staticmethod
    def free(dev_ptr: int) -> int:
        return _Rt._free(dev_ptr, DEVICE, "acl.rt.free")

    @staticmethod
    def free_host(host_ptr: int) -> int:
        return _Rt._free(host_ptr, HOST, "acl.rt.free_host")

    @staticmethod
    def memcpy(dst: int, dest_max: int, src: int, count: int, kind: int) -> int:
        with _state.lock:
            _record("acl.rt.memcpy")
            code = _needs_context()
            if code:
                return code
            if count < 0 or dest_max < 0:
                return _fail(c.ACL_ERROR_INVALID_PARAM, "negative size")
            if count > dest_max:
                return _fail(
                    c.ACL_ERROR_INVALID_PARAM,
                    f"acl.rt.memcpy count {count} exceeds the destination's max {dest_max} (overflow)",
                )
            expected = {
                c.ACL_MEMCPY_HOST_TO_HOST: (HOST, HOST),
                c.ACL_MEMCPY_HOST_TO_DEVICE: (HOST, DEVICE),
                c.ACL_MEMCPY_DEVICE_TO_HOST: (DEVICE, HOST),
                c.ACL_MEMCPY_DEVICE_TO_DEVICE: (DEVICE, DEVICE),
            }.get(kind)
            if expected is None:
                return _fail(c.ACL_ERROR_INVALID_PARAM, f"unknown memcpy kind {kind}")
            code, src_alloc, src_off = _resolve(src, count, "source")
            if code:
                return code
            code, dst_alloc, dst_off = _resolve(dst, dest_max, "destination")
            if code:
                return code
            assert src_alloc is not None and dst_alloc is not None
            src_kind = HOST if src_alloc.kind == EXTERNAL else src_alloc.kind
            dst_kind = HOST if dst_alloc.kind == EXTERNAL else dst_alloc.kind
            if (src_kind, dst_kind) != expected:
                return _fail(
                    c.ACL_ERROR_RT_INVALID_MEMORY_TYPE,
                    f"memcpy kind {kind} expects {expected[0]} -> {expected[1]}, got {src_kind} -> {dst_kind}",
                )
            if isinstance(dst_alloc.data, memoryview) and dst_alloc.data.readonly:
                return _fail(c.ACL_ERROR_RT_PARAM_INVALID, "destination is read-only host memory (a bytes object)")
            dst_alloc.data[dst_off : dst_off + count] = src_alloc.data[src_off : src_off + count]
            return c.ACL_SUCCESS


# ---------------------------------------------------------------------------
# acl.util
# ---------------------------------------------------------------------------
class _Util:
    @staticmethod
    def _register_external(view: memoryview) -> int:
        with _state.lock:
            base = _state.next_host
            _state.next_host += -(-max(view.nbytes, 1) // _ALIGN) * _ALIGN + _GAP
            _state.external[base] = _Allocation(base, view.nbytes, EXTERNAL, view)
            while len(_state.external) > EXTERNAL_POINTER_SLOTS:
                old, alloc = _state.external.popitem(last=False)
                _state.freed[old] = alloc.size
            return base

    @staticmethod
    def bytes_to_ptr(data: bytes | bytearray) -> int:
        return _Util._register_external(memoryview(data).cast("B"))

    @staticmethod
    def numpy_to_ptr(array: np.ndarray) -> int:
        contiguous = np.ascontiguousarray(array)
        return _Util._register_external(contiguous.data.cast("B"))

    @staticmethod
    def ptr_to_bytes(ptr: int, size: int) -> bytes:
        with _state.lock:
            code, alloc, offset = _resolve(ptr, size, "pointer")
            if code or alloc is None or alloc.kind == DEVICE:
                # The real call would read garbage or crash; refuse loudly instead.
                raise ValueError(f"acl.util.ptr_to_bytes: {_state.recent_error or 'not host memory'}")
            return bytes(alloc.data[offset : offset + size])

    @staticmethod
    def ptr_to_numpy(ptr: int, shape: Sequence[int], np_type: int) -> np.ndarray:
        dtype = np.dtype(_NPY_TYPES[np_type])
        size = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(_Util.ptr_to_bytes(ptr, size), dtype=dtype).reshape(tuple(shape)).copy()


# ---------------------------------------------------------------------------
# acl.mdl
# ---------------------------------------------------------------------------
def _tensor_descs(specs: list[dict[str, Any]], batches: list[int]) -> list[_TensorDesc]:
    max_batch = max(batches) if batches else 1
    out = []
    for spec in specs:
        dims = [int(d) for d in spec.get("dims", [])]
        dtype_name = str(spec.get("dataType", "float32"))
        if dtype_name not in _DTYPES:
            raise ValueError(f"unsupported dataType {dtype_name!r}")
        out.append(_TensorDesc(str(spec["name"]), dims, dtype_name, str(spec.get("format", "ND")), max_batch))
    return out


def _build_runner(
    graph_def: bytes, input_names: list[str], output_names: list[str]
) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(graph_def)

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    pruned = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(n) for n in input_names],
        fetches=[wrapped.graph.get_tensor_by_name(n) for n in output_names],
    )

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        results = pruned(*[tf.constant(a) for a in arrays])
        return [np.asarray(r) for r in results]

    return run


def _tensor_name(spec: dict[str, Any]) -> str:
    name = str(spec.get("tensorName") or spec["name"])
    return name if ":" in name else f"{name}:0"


class _Mdl:
    @staticmethod
    def load_from_file(model_path: str) -> tuple[int, int]:
        _record("acl.mdl.load_from_file")
        with _state.lock:
            code = _needs_context()
            if code:
                return 0, code
        try:
            data = Path(model_path).read_bytes()
        except OSError as exc:
            return 0, _fail(c.ACL_ERROR_READ_MODEL_FAILURE, f"cannot read model file {model_path}: {exc}")
        return _Mdl._load(data, model_path)

    @staticmethod
    def load_from_mem(model: bytes | int, model_size: int) -> tuple[int, int]:
        _record("acl.mdl.load_from_mem")
        with _state.lock:
            code = _needs_context()
            if code:
                return 0, code
            if isinstance(model, int):
                code, alloc, offset = _resolve(model, model_size, "model")
                if code or alloc is None:
                    return 0, code
                data = bytes(alloc.data[offset : offset + model_size])
            else:
                data = bytes(model[:model_size])
        return _Mdl._load(data, "<memory>")

    @staticmethod
    def _load(data: bytes, path: str) -> tuple[int, int]:
        try:
            sim = simmodel.loads(data)
        except simmodel.NotASimulatedModel as exc:
            return 0, _fail(c.ACL_ERROR_PARSE_MODEL, f"{path}: {exc}")
        try:
            batches = sorted(sim.dynamic_batch_sizes)
            inputs = _tensor_descs(sim.inputs, batches)
            outputs = _tensor_descs(sim.outputs, batches)
            if not inputs or not outputs:
                raise ValueError("the model declares no inputs or no outputs")
            runner = _build_runner(
                sim.graph_def, [_tensor_name(s) for s in sim.inputs], [_tensor_name(s) for s in sim.outputs]
            )
        except Exception as exc:  # TensorFlow raises many types for a bad graph
            return 0, _fail(c.ACL_ERROR_PARSE_MODEL, f"{path}: cannot build the simulated model: {exc}")
        if batches:
            inputs.append(_TensorDesc(c.DYNAMIC_BATCH_INPUT_NAME, [1], "int64", "ND", 1))
        with _state.lock:
            model_id = next(_state.model_ids)
            _state.models[model_id] = _Model(path, inputs, outputs, batches, runner)
            log.info("acl_sim: loaded simulated model %s as id %d", path, model_id)
            return model_id, c.ACL_SUCCESS

    @staticmethod
    def unload(model_id: int) -> int:
        with _state.lock:
            _record("acl.mdl.unload")
            if _state.models.pop(model_id, None) is None:
                return _fail(c.ACL_ERROR_INVALID_MODEL_ID, f"model {model_id} is not loaded")
            return c.ACL_SUCCESS

    @staticmethod
    def create_desc() -> int:
        with _state.lock:
            _record("acl.mdl.create_desc")
            handle = next(_state.handles)
            _state.descs[handle] = None
            return handle

    @staticmethod
    def destroy_desc(model_desc: int) -> int:
        with _state.lock:
            _record("acl.mdl.destroy_desc")
            if model_desc not in _state.descs:
                return _fail(c.ACL_ERROR_INVALID_PARAM, f"model description {model_desc:#x} does not exist")
            del _state.descs[model_desc]
            return c.ACL_SUCCESS

    @staticmethod
    def get_desc(model_desc: int, model_id: int) -> int:
        with _state.lock:
            if model_desc not in _state.descs:
                return _fail(c.ACL_ERROR_INVALID_PARAM, f"model description {model_desc:#x} does not exist")
            if model_id not in _state.models:
                return _fail(c.ACL_ERROR_INVALID_MODEL_ID, f"model {model_id} is not loaded")
            _state.descs[model_desc] = model_id
            return c.ACL_SUCCESS

    @staticmethod
    def _described(model_desc: int) -> _Model | None:
        model_id = _state.descs.get(model_desc)
        return _state.models.get(model_id) if model_id is not None else None

    @staticmethod
    def _tensor(model_desc: int, index: int, outputs: bool) -> _TensorDesc | None:
        model = _Mdl._described(model_desc)
        if model is None:
            return None
        tensors = model.outputs if outputs else model.inputs
        return tensors[index] if 0 <= index < len(tensors) else None

    @staticmethod
    def get_num_inputs(model_desc: int) -> int:
        model = _Mdl._described(model_desc)
        return len(model.inputs) if model else 0

    @staticmethod
    def get_num_outputs(model_desc: int) -> int:
        model = _Mdl._described(model_desc)
        return len(model.outputs) if model else 0

    @staticmethod
    def get_input_size_by_index(model_desc: int, index: int) -> int:
        t = _Mdl._tensor(model_desc, index, False)
        return t.size if t else 0

    @staticmethod
    def get_output_size_by_index(model_desc: int, index: int) -> int:
        t = _Mdl._tensor(model_desc, index, True)
        return t.size if t else 0

    @staticmethod
    def _dims(t: _TensorDesc | None, dims: list[int] | None = None) -> tuple[dict[str, Any], int]:
        if t is None:
            return {}, _fail(c.ACL_ERROR_INVALID_PARAM, "no such tensor (bad description or index)")
        values = list(dims if dims is not None else t.dims)
        return {"name": t.name, "dimCount": len(values), "dims": values}, c.ACL_SUCCESS

    @staticmethod
    def get_input_dims(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
        return _Mdl._dims(_Mdl._tensor(model_desc, index, False))

    @staticmethod
    def get_output_dims(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
        return _Mdl._dims(_Mdl._tensor(model_desc, index, True))

    @staticmethod
    def get_cur_output_dims(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
        t = _Mdl._tensor(model_desc, index, True)
        model = _Mdl._described(model_desc)
        current = None
        if t is not None and model is not None:
            current = model.cur_output_dims[index] if index < len(model.cur_output_dims) else t.concrete_dims(t.max_batch)
        return _Mdl._dims(t, current)

    @staticmethod
    def get_input_name_by_index(model_desc: int, index: int) -> str:
        t = _Mdl._tensor(model_desc, index, False)
        return t.name if t else ""

    @staticmethod
    def get_output_name_by_index(model_desc: int, index: int) -> str:
        t = _Mdl._tensor(model_desc, index, True)
        return t.name if t else ""

    @staticmethod
    def get_input_index_by_name(model_desc: int, name: str) -> tuple[int, int]:
        model = _Mdl._described(model_desc)
        for i, t in enumerate(model.inputs if model else []):
            if t.name == name:
                return i, c.ACL_SUCCESS
        return 0, _fail(c.ACL_ERROR_INVALID_PARAM, f"the model has no input named {name!r}")

    @staticmethod
    def get_input_data_type(model_desc: int, index: int) -> int:
        t = _Mdl._tensor(model_desc, index, False)
        return t.acl_dtype if t else c.ACL_DT_UNDEFINED

    @staticmethod
    def get_output_data_type(model_desc: int, index: int) -> int:
        t = _Mdl._tensor(model_desc, index, True)
        return t.acl_dtype if t else c.ACL_DT_UNDEFINED

    @staticmethod
    def get_input_format(model_desc: int, index: int) -> int:
        t = _Mdl._tensor(model_desc, index, False)
        return _FORMATS.get(t.format_name, c.ACL_FORMAT_ND) if t else c.ACL_FORMAT_UNDEFINED

    @staticmethod
    def get_output_format(model_desc: int, index: int) -> int:
        t = _Mdl._tensor(model_desc, index, True)
        return _FORMATS.get(t.format_name, c.ACL_FORMAT_ND) if t else c.ACL_FORMAT_UNDEFINED

    @staticmethod
    def get_dynamic_batch(model_desc: int) -> tuple[dict[str, Any], int]:
        model = _Mdl._described(model_desc)
        if model is None:
            return {}, _fail(c.ACL_ERROR_INVALID_PARAM, f"model description {model_desc:#x} is not filled")
        return {"batchCount": len(model.batches), "batch": list(model.batches)}, c.ACL_SUCCESS

    @staticmethod
    def create_dataset() -> int:
        with _state.lock:
            _record("acl.mdl.create_dataset")
            handle = next(_state.handles)
            _state.datasets[handle] = []
            return handle

    @staticmethod
    def destroy_dataset(dataset: int) -> int:
        with _state.lock:
            _record("acl.mdl.destroy_dataset")
            if _state.datasets.pop(dataset, None) is None:
                return _fail(c.ACL_ERROR_INVALID_PARAM, f"dataset {dataset:#x} does not exist")
            return c.ACL_SUCCESS

    @staticmethod
    def add_dataset_buffer(dataset: int, data_buffer: int) -> tuple[int, int]:
        with _state.lock:
            buffers = _state.datasets.get(dataset)
            if buffers is None:
                return dataset, _fail(c.ACL_ERROR_INVALID_PARAM, f"dataset {dataset:#x} does not exist")
            if data_buffer not in _state.data_buffers:
                return dataset, _fail(c.ACL_ERROR_INVALID_PARAM, f"data buffer {data_buffer:#x} does not exist")
            buffers.append(data_buffer)
            return dataset, c.ACL_SUCCESS

    @staticmethod
    def get_dataset_num_buffers(dataset: int) -> int:
        return len(_state.datasets.get(dataset, []))

    @staticmethod
    def get_dataset_buffer(dataset: int, index: int) -> int:
        buffers = _state.datasets.get(dataset, [])
        return buffers[index] if 0 <= index < len(buffers) else 0

    @staticmethod
    def set_dynamic_batch_size(model_id: int, dataset: int, index: int, batch_size: int) -> int:
        with _state.lock:
            _record("acl.mdl.set_dynamic_batch_size")
            model = _state.models.get(model_id)
            if model is None:
                return _fail(c.ACL_ERROR_INVALID_MODEL_ID, f"model {model_id} is not loaded")
            if not model.batches:
                return _fail(c.ACL_ERROR_MODEL_NOT_DYNAMIC, "the model was not converted with --dynamic_batch_size")
            if index != model.dynamic_index:
                return _fail(
                    c.ACL_ERROR_INVALID_PARAM,
                    f"index {index} is not the {c.DYNAMIC_BATCH_INPUT_NAME} input ({model.dynamic_index})",
                )
            if batch_size not in model.batches:
                return _fail(
                    c.ACL_ERROR_GE_DYNAMIC_BATCH_SIZE_INVALID,
                    f"batch size {batch_size} is not one of the model's {model.batches}",
                )
            buffers = _state.datasets.get(dataset)
            if buffers is None or index >= len(buffers):
                return _fail(c.ACL_ERROR_INVALID_PARAM, f"dataset {dataset:#x} has no buffer at index {index}")
            ptr, size = _state.data_buffers.get(buffers[index], (0, 0))
            code, alloc, offset = _resolve(ptr, 8, "dynamic batch buffer")
            if code or alloc is None:
                return code
            alloc.data[offset : offset + 8] = int(batch_size).to_bytes(8, "little", signed=True)
            return c.ACL_SUCCESS

    @staticmethod
    def _read_dataset(
        dataset: int, tensors: list[_TensorDesc], batch: int, mismatch: int, what: str
    ) -> tuple[int, list[tuple[_Allocation, int, int]]]:
        buffers = _state.datasets.get(dataset)
        if buffers is None:
            return _fail(c.ACL_ERROR_INVALID_PARAM, f"{what} dataset {dataset:#x} does not exist"), []
        if len(buffers) != len(tensors):
            return _fail(mismatch, f"the model has {len(tensors)} {what}s, the dataset holds {len(buffers)} buffers"), []
        views = []
        for i, (buf, t) in enumerate(zip(buffers, tensors, strict=True)):
            if buf not in _state.data_buffers:
                return _fail(c.ACL_ERROR_INVALID_PARAM, f"{what} {i}: data buffer was destroyed"), []
            ptr, size = _state.data_buffers[buf]
            need = t.size
            if size < need:
                return _fail(mismatch, f"{what} {i} ({t.name}) needs {need} bytes, its buffer holds {size}"), []
            code, alloc, offset = _resolve(ptr, need, f"{what} {i} ({t.name}) buffer")
            if code or alloc is None:
                return code, []
            if alloc.kind != DEVICE:
                return _fail(c.ACL_ERROR_RT_INVALID_MEMORY_TYPE, f"{what} {i} buffer is not device memory"), []
            views.append((alloc, offset, need))
        return c.ACL_SUCCESS, views

    @staticmethod
    def execute(model_id: int, input_dataset: int, output_dataset: int) -> int:
        with _state.lock:
            _record("acl.mdl.execute")
            code = _needs_context()
            if code:
                return code
            model = _state.models.get(model_id)
            if model is None:
                return _fail(c.ACL_ERROR_INVALID_MODEL_ID, f"model {model_id} is not loaded (load it before execute)")
            batch = 1
            if model.batches:
                dyn = _state.datasets.get(input_dataset, [])
                if len(dyn) == len(model.inputs):
                    ptr, _ = _state.data_buffers.get(dyn[model.dynamic_index], (0, 0))
                    code, alloc, offset = _resolve(ptr, 8, "dynamic batch buffer")
                    if code or alloc is None:
                        return code
                    batch = int.from_bytes(alloc.data[offset : offset + 8], "little", signed=True)
                    if batch not in model.batches:
                        return _fail(
                            c.ACL_ERROR_GE_DYNAMIC_BATCH_SIZE_INVALID,
                            f"call acl.mdl.set_dynamic_batch_size before execute (one of {model.batches})",
                        )
            code, in_views = _Mdl._read_dataset(
                input_dataset, model.inputs, batch, c.ACL_ERROR_MODEL_INPUT_NOT_MATCH, "input"
            )
            if code:
                return code
            code, out_views = _Mdl._read_dataset(
                output_dataset, model.outputs, batch, c.ACL_ERROR_MODEL_OUTPUT_NOT_MATCH, "output"
            )
            if code:
                return code
            arrays = []
            data_inputs = model.inputs[:-1] if model.batches else model.inputs
            for t, (alloc, offset, _need) in zip(data_inputs, in_views, strict=False):
                dims = t.concrete_dims(batch)
                nbytes = int(np.prod(dims)) * np.dtype(t.numpy_dtype).itemsize
                raw = bytes(alloc.data[offset : offset + nbytes])
                arrays.append(np.frombuffer(raw, dtype=t.numpy_dtype).reshape(dims))
        # TensorFlow runs outside the global lock, so other threads' copies proceed;
        # the per-model lock keeps one execution per model at a time, like one stream.
        with model.lock:
            try:
                results = model.run(arrays)
            except Exception as exc:
                return _fail(c.ACL_ERROR_RT_MODEL_EXECUTE, f"model {model_id} failed: {exc}")
        with _state.lock:
            current = []
            for t, result, (alloc, offset, need) in zip(model.outputs, results, out_views, strict=True):
                data = np.ascontiguousarray(result, dtype=t.numpy_dtype).tobytes()
                if len(data) > need:
                    return _fail(c.ACL_ERROR_MODEL_OUTPUT_NOT_MATCH, f"output {t.name} produced {len(data)} bytes > {need}")
                if alloc.base not in _state.allocations:
                    return _fail(c.ACL_ERROR_RT_PARAM_INVALID, f"output {t.name} buffer was freed during execute")
                alloc.data[offset : offset + len(data)] = data
                current.append(list(result.shape))
            model.cur_output_dims = current
            return c.ACL_SUCCESS


rt = _Rt()
mdl = _Mdl()
util = _Util()


# ---------------------------------------------------------------------------
# Simulator-only helpers (not in the real module).
# ---------------------------------------------------------------------------
def sim_stats() -> dict[str, int]:
    """Live resources, so tests can check that a teardown released everything."""
    with _state.lock:
        return {
            "initialized": int(_state.initialized),
            "devices": sum(_state.devices.values()),
            "contexts": len(_state.contexts),
            "device_allocations": sum(1 for a in _state.allocations.values() if a.kind == DEVICE),
            "host_allocations": sum(1 for a in _state.allocations.values() if a.kind == HOST),
            "models": len(_state.models),
            "descs": len(_state.descs),
            "datasets": len(_state.datasets),
            "data_buffers": len(_state.data_buffers),
        }


def sim_devices() -> dict[int, int]:
    """Device id (what `acl.rt.set_device` takes) -> the simulated physical device it stands for."""
    with _state.lock:
        return dict(enumerate(_state.visible))


def sim_active_devices() -> list[int]:
    """Physical ids of the simulated devices set now (`acl.rt.set_device` without its reset)."""
    with _state.lock:
        return sorted(_state.visible[d] for d in _state.devices)


def sim_calls() -> list[str]:
    """The resource-changing calls made so far, oldest first (bounded)."""
    with _state.lock:
        return list(_state.calls)


def sim_reset() -> None:
    """Forget everything (tests only): as if the process had restarted."""
    global _state
    _state = _State()
    _thread.context = None
