"""pyACL: an Ascend offline model (.om) on an Ascend 310, or on the pyACL simulator.

The call sequence follows CANN's samples: init, set_device, create_context,
load_from_file, model description, device buffers sized from the description,
datasets, then per batch memcpy in, (set_dynamic_batch_size,) execute, memcpy
out; teardown in reverse. Every return code is checked and a non-zero one
raises `AclError` naming the call.

Concurrency: pyACL contexts are per thread and one model runs one batch at a
time here, so `predict` holds a lock and binds the context to whichever
thread calls it. The server calls it from a single inference thread anyway.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ascend_mlops.api import contract
from ascend_mlops.ascend import acl_constants as c
from ascend_mlops.ascend import simmodel
from ascend_mlops.workloads.server.backends import BACKEND_ACL, Backend, TensorInfo
from ascend_mlops.workloads.server.errors import ModelLoadError, ToolkitMissing

log = logging.getLogger(__name__)

PAD_LIMIT = 1.25  # run a padded batch when it is at most this much larger than the images
_NUMPY_TYPES: dict[int, Any] = {c.ACL_FLOAT: np.float32, c.ACL_FLOAT16: np.float16}


class AclError(RuntimeError):
    """A pyACL call returned a non-zero code."""

    def __init__(self, call: str, code: int, detail: str = "") -> None:
        message = f"{call} failed with code {code} ({c.error_name(code)})"
        if detail:
            message += f": {detail}"
        super().__init__(message)
        self.call = call
        self.code = code


def import_acl(env: dict[str, str] | None = None) -> tuple[ModuleType, bool]:
    """(the acl module, simulated?): the real pyACL wins whenever it is importable."""
    try:
        return importlib.import_module("acl"), False
    except ImportError as exc:
        reason = str(exc)
    if contract.simulator_enabled(env if env is not None else dict(os.environ)):
        from ascend_mlops.ascend import acl_sim

        return acl_sim, True
    raise ToolkitMissing(
        f"--backend acl needs pyACL (the `acl` module of the CANN toolkit), which is not importable ({reason}). "
        "Run the server in an image with CANN's runtime installed and its set_env.sh sourced, "
        f"or set {contract.ENV_SIMULATOR}=1 to run on the CPU simulator, or use --backend tensorflow."
    )


def resolve_om(path: Path) -> Path:
    """A .om file, or a directory holding model.om (the ModelArts model package layout)."""
    if path.is_dir():
        candidate = path / contract.OM_FILE
        if candidate.is_file():
            return candidate
        oms = sorted(path.glob("*.om"))
        if len(oms) == 1:
            return oms[0]
        raise ModelLoadError(f"--model {path}: the directory holds no {contract.OM_FILE} (or more than one .om)")
    if not path.is_file():
        raise ModelLoadError(f"--model {path}: no such file or directory")
    return path


class AclBackend(Backend):
    name = BACKEND_ACL
    platform = "ascend_om"

    def __init__(self, model_path: Path, acl: ModuleType, simulated: bool, device_id: int = 0) -> None:
        super().__init__(model_path)
        self.acl = acl
        self.simulated = simulated
        self.device_id = device_id
        self._lock = threading.Lock()
        # Which threads have this backend's context current. Thread-local, not a
        # set of thread idents: Python reuses the ident of a finished thread, and a
        # new thread with a recycled ident has no context yet.
        self._bound = threading.local()
        self._generation = 0
        self._owns_init = False
        self._device_set = False
        self._context: int | None = None
        self._model_id: int | None = None
        self._desc: int | None = None
        self._input_ds: int | None = None
        self._output_ds: int | None = None
        self._data_buffers: list[int] = []
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._input_sizes: list[int] = []
        self._input_ptrs: list[int] = []
        self._image_index = 0
        self._input_dtype: Any = np.float32
        self._output_size = 0
        self._output_ptr = 0
        self._output_dtype: Any = np.float32
        self._host_output = 0
        self._dynamic_index = -1
        self._batches: list[int] = []
        self._static_batch = 1
        self._om_path: Path | None = None

    # -- helpers ---------------------------------------------------------------
    def _check(self, call: str, ret: int) -> None:
        if ret != c.ACL_SUCCESS:
            detail = ""
            recent = getattr(self.acl, "get_recent_err_msg", None)
            if recent is not None:
                try:
                    detail = str(recent() or "")
                except Exception:  # the message is a nicety; never hide the real error
                    detail = ""
            raise AclError(call, ret, detail)

    def _bind_thread(self) -> None:
        if self._context is not None and getattr(self._bound, "generation", None) != self._generation:
            self._check("acl.rt.set_context", self.acl.rt.set_context(self._context))
            self._bound.generation = self._generation

    # -- lifecycle -------------------------------------------------------------
    def load(self) -> None:
        acl = self.acl
        om = resolve_om(self.model_path)
        self._om_path = om
        if not self.simulated and simmodel.is_simulated(om):
            raise ModelLoadError(
                f"--model {om} is a SIMULATED model written by the ATC simulator; it cannot run on a real "
                "Ascend NPU. Convert the model with the real ATC (without "
                f"{contract.ENV_SIMULATOR}=1) or serve this one with {contract.ENV_SIMULATOR}=1 on a machine without pyACL."
            )
        if self.simulated:
            log.warning("acl backend is using the pyACL SIMULATOR: %s runs on the CPU, not on an Ascend NPU", om)
        try:
            ret = acl.init()
            if ret == c.ACL_ERROR_REPEAT_INITIALIZE:
                log.info("acl.init: already initialised in this process; leaving finalize to its owner")
            else:
                self._check("acl.init", ret)
                self._owns_init = True
            self._check("acl.rt.set_device", acl.rt.set_device(self.device_id))
            self._device_set = True
            context, ret = acl.rt.create_context(self.device_id)
            self._check("acl.rt.create_context", ret)
            self._context = context
            self._generation += 1
            self._bound.generation = self._generation
            try:
                self._load_model(om)
            except AclError as exc:
                raise ModelLoadError(f"--model {om}: {exc}") from exc
            self.warm_up()
        except BaseException:
            self.close()
            raise

    def _load_model(self, om: Path) -> None:
        acl = self.acl
        model_id, ret = acl.mdl.load_from_file(str(om))
        self._check("acl.mdl.load_from_file", ret)
        self._model_id = model_id
        self._desc = acl.mdl.create_desc()
        self._check("acl.mdl.get_desc", acl.mdl.get_desc(self._desc, model_id))

        dyn_index, ret = acl.mdl.get_input_index_by_name(self._desc, c.DYNAMIC_BATCH_INPUT_NAME)
        if ret == c.ACL_SUCCESS:
            batch_info, ret = acl.mdl.get_dynamic_batch(self._desc)
            self._check("acl.mdl.get_dynamic_batch", ret)
            count = int(batch_info.get("batchCount", 0))
            self._batches = sorted(int(b) for b in batch_info.get("batch", [])[:count])
            self._dynamic_index = int(dyn_index) if self._batches else -1

        num_inputs = acl.mdl.get_num_inputs(self._desc)
        data_inputs = [i for i in range(num_inputs) if i != self._dynamic_index]
        if len(data_inputs) != 1:
            raise ModelLoadError(f"--model {om}: expected one image input, the model has {len(data_inputs)}")
        self._image_index = data_inputs[0]
        dims, ret = acl.mdl.get_input_dims(self._desc, self._image_index)
        self._check("acl.mdl.get_input_dims", ret)
        shape = [int(d) for d in dims["dims"]]
        if len(shape) != 4 or shape[3] != 3:
            raise ModelLoadError(
                f"--model {om}: the input must be NHWC with 3 channels (convert with --input_format=NHWC), got {shape}"
            )
        dtype = acl.mdl.get_input_data_type(self._desc, self._image_index)
        if dtype not in _NUMPY_TYPES:
            raise ModelLoadError(f"--model {om}: input data type {dtype} is not float32/float16")
        self._input_dtype = _NUMPY_TYPES[dtype]
        self._static_batch = shape[0] if shape[0] > 0 else 1
        self.input_size = (shape[1], shape[2])

        if acl.mdl.get_num_outputs(self._desc) < 1:
            raise ModelLoadError(f"--model {om}: the model has no outputs")
        out_dims, ret = acl.mdl.get_output_dims(self._desc, 0)
        self._check("acl.mdl.get_output_dims", ret)
        out_shape = [int(d) for d in out_dims["dims"]]
        if len(out_shape) != 2:
            raise ModelLoadError(f"--model {om}: output 0 must be [batch, classes], got {out_shape}")
        self.num_classes = out_shape[1]
        out_type = acl.mdl.get_output_data_type(self._desc, 0)
        if out_type not in _NUMPY_TYPES:
            raise ModelLoadError(f"--model {om}: output data type {out_type} is not float32/float16 (convert with --output_type=FP32)")
        self._output_dtype = _NUMPY_TYPES[out_type]

        # Device buffers sized from the description, allocated once and reused.
        self._input_ds = acl.mdl.create_dataset()
        for i in range(num_inputs):
            size = acl.mdl.get_input_size_by_index(self._desc, i)
            ptr = self._malloc(size)
            self._input_sizes.append(size)
            self._input_ptrs.append(ptr)
            self._add_buffer(self._input_ds, ptr, size)
        self._output_ds = acl.mdl.create_dataset()
        for i in range(acl.mdl.get_num_outputs(self._desc)):
            size = acl.mdl.get_output_size_by_index(self._desc, i)
            ptr = self._malloc(size)
            self._add_buffer(self._output_ds, ptr, size)
            if i == 0:
                self._output_ptr, self._output_size = ptr, size
        host, ret = acl.rt.malloc_host(self._output_size)
        self._check("acl.rt.malloc_host", ret)
        self._host_ptrs.append(host)
        self._host_output = host

        self.inputs = [TensorInfo("images", "FP32", (-1, *self.input_size, 3))]
        self.outputs = [TensorInfo("logits", "FP32", (-1, self.num_classes))]
        log.info(
            "acl backend: loaded %s as model %s: input %s, %d classes, %s%s",
            om, self._model_id, shape, self.num_classes,
            f"dynamic batch {self._batches}" if self._batches else f"static batch {self._static_batch}",
            " [SIMULATED]" if self.simulated else "",
        )

    def _malloc(self, size: int) -> int:
        ptr, ret = self.acl.rt.malloc(size, c.ACL_MEM_MALLOC_HUGE_FIRST)
        self._check("acl.rt.malloc", ret)
        self._device_ptrs.append(ptr)
        return int(ptr)

    def _add_buffer(self, dataset: int, ptr: int, size: int) -> None:
        buffer = self.acl.create_data_buffer(ptr, size)
        if not buffer:
            raise AclError("acl.create_data_buffer", c.ACL_ERROR_INVALID_PARAM, f"returned a null buffer for {size} bytes")
        self._data_buffers.append(buffer)
        _, ret = self.acl.mdl.add_dataset_buffer(dataset, buffer)
        self._check("acl.mdl.add_dataset_buffer", ret)

    def close(self) -> None:
        """Teardown in the reverse order of load; log failures and keep going."""
        acl = self.acl
        with self._lock:
            if self._context is not None:
                try:
                    self._bind_thread()
                except AclError as exc:
                    log.warning("%s", exc)

            def attempt(call: str, ret: int) -> None:
                if ret != c.ACL_SUCCESS:
                    log.warning("teardown: %s failed with code %s (%s)", call, ret, c.error_name(ret))

            for buffer in self._data_buffers:
                attempt("acl.destroy_data_buffer", acl.destroy_data_buffer(buffer))
            self._data_buffers = []
            for name in ("_input_ds", "_output_ds"):
                dataset = getattr(self, name)
                if dataset is not None:
                    attempt("acl.mdl.destroy_dataset", acl.mdl.destroy_dataset(dataset))
                    setattr(self, name, None)
            for ptr in self._device_ptrs:
                attempt("acl.rt.free", acl.rt.free(ptr))
            self._device_ptrs = []
            for ptr in self._host_ptrs:
                attempt("acl.rt.free_host", acl.rt.free_host(ptr))
            self._host_ptrs = []
            if self._model_id is not None:
                attempt("acl.mdl.unload", acl.mdl.unload(self._model_id))
                self._model_id = None
            if self._desc is not None:
                attempt("acl.mdl.destroy_desc", acl.mdl.destroy_desc(self._desc))
                self._desc = None
            if self._context is not None:
                attempt("acl.rt.destroy_context", acl.rt.destroy_context(self._context))
                self._context = None
            if self._device_set:
                attempt("acl.rt.reset_device", acl.rt.reset_device(self.device_id))
                self._device_set = False
            if self._owns_init:
                attempt("acl.finalize", acl.finalize())
                self._owns_init = False
            self._generation += 1
            log.info("acl backend: released all ACL resources")

    # -- inference -------------------------------------------------------------
    @property
    def max_batch_size(self) -> int | None:
        return max(self._batches) if self._batches else self._static_batch

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        """(images taken, batch the device runs) pieces covering n images.

        Dynamic models: one call padded up to the next converted size when
        that wastes at most a quarter (31 -> 32), else the largest size that
        is full and the rest again (17 -> 16 + 1, not 32 with 15 blanks).
        """
        pieces = []
        while n > 0:
            if self._batches:
                fits = [b for b in self._batches if b >= n]
                full = [b for b in self._batches if b <= n]
                if fits and (fits[0] <= n * PAD_LIMIT or not full):
                    run = fits[0]
                else:
                    run = full[-1]
            else:
                run = self._static_batch
            take = min(n, run)
            pieces.append((take, run))
            n -= take
        return pieces

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self._model_id is None or self._input_ds is None or self._output_ds is None:
            raise RuntimeError("acl backend: predict before load (or after close)")
        acl = self.acl
        results = []
        with self._lock:
            self._bind_thread()
            start = 0
            per_image = int(np.prod(images.shape[1:])) * np.dtype(self._input_dtype).itemsize
            out_per_image = self.num_classes * np.dtype(self._output_dtype).itemsize
            for take, run in self._chunks(len(images)):
                chunk = images[start : start + take]
                start += take
                if take < run:
                    pad = np.zeros((run - take, *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                data = np.ascontiguousarray(chunk, dtype=self._input_dtype).tobytes()
                if len(data) != run * per_image or len(data) > self._input_sizes[self._image_index]:
                    raise ValueError(f"input batch of {len(data)} bytes does not fit the model input")
                ptr = acl.util.bytes_to_ptr(data)
                self._check(
                    "acl.rt.memcpy",
                    acl.rt.memcpy(
                        self._input_ptrs[self._image_index], self._input_sizes[self._image_index],
                        ptr, len(data), c.ACL_MEMCPY_HOST_TO_DEVICE,
                    ),
                )
                if self._dynamic_index >= 0:
                    self._check(
                        "acl.mdl.set_dynamic_batch_size",
                        acl.mdl.set_dynamic_batch_size(self._model_id, self._input_ds, self._dynamic_index, run),
                    )
                self._check("acl.mdl.execute", acl.mdl.execute(self._model_id, self._input_ds, self._output_ds))
                nbytes = run * out_per_image
                self._check(
                    "acl.rt.memcpy",
                    acl.rt.memcpy(self._host_output, self._output_size, self._output_ptr, nbytes, c.ACL_MEMCPY_DEVICE_TO_HOST),
                )
                raw = acl.util.ptr_to_bytes(self._host_output, nbytes)
                out = np.frombuffer(raw, dtype=self._output_dtype).reshape(run, self.num_classes)[:take]
                results.append(out.astype(np.float32))
        return np.concatenate(results) if results else np.zeros((0, self.num_classes), np.float32)

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            **super().parameters(),
            "device_id": self.device_id,
            "batch_sizes": list(self._batches) if self._batches else [self._static_batch],
        }
        if self.simulated:
            params["note"] = "pyACL SIMULATOR: the model runs on the CPU with TensorFlow, not on an Ascend NPU"
        return params
