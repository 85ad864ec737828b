"""The pyACL simulator: the real call sequence works, and each misuse returns the real error code."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ascend_mlops.ascend import acl_constants as c

H2D = c.ACL_MEMCPY_HOST_TO_DEVICE
D2H = c.ACL_MEMCPY_DEVICE_TO_HOST


def red_blue_batch(n: int) -> np.ndarray:
    """n 8x8 images alternating pure red and pure blue."""
    images = np.zeros((n, 8, 8, 3), dtype=np.float32)
    images[0::2, ..., 0] = 255
    images[1::2, ..., 2] = 255
    return images


class Session:
    """The documented sequence, step by step, so tests can stop or deviate anywhere."""

    def __init__(self, acl: Any) -> None:
        self.acl = acl

    def open(self) -> Session:
        assert self.acl.init() == c.ACL_SUCCESS
        assert self.acl.rt.set_device(0) == c.ACL_SUCCESS
        self.context, ret = self.acl.rt.create_context(0)
        assert ret == c.ACL_SUCCESS
        return self

    def load(self, path: Path) -> Session:
        acl = self.acl
        self.model_id, ret = acl.mdl.load_from_file(str(path))
        assert ret == c.ACL_SUCCESS, acl.get_recent_err_msg()
        self.desc = acl.mdl.create_desc()
        assert acl.mdl.get_desc(self.desc, self.model_id) == c.ACL_SUCCESS
        self.in_sizes = [acl.mdl.get_input_size_by_index(self.desc, i) for i in range(acl.mdl.get_num_inputs(self.desc))]
        self.out_sizes = [acl.mdl.get_output_size_by_index(self.desc, i) for i in range(acl.mdl.get_num_outputs(self.desc))]
        return self

    def datasets(self, in_sizes: list[int] | None = None, out_sizes: list[int] | None = None) -> Session:
        acl = self.acl
        self.in_ptrs, self.out_ptrs = [], []
        self.in_ds, self.out_ds = acl.mdl.create_dataset(), acl.mdl.create_dataset()
        for sizes, ptrs, ds in ((in_sizes or self.in_sizes, self.in_ptrs, self.in_ds), (out_sizes or self.out_sizes, self.out_ptrs, self.out_ds)):
            for size in sizes:
                ptr, ret = acl.rt.malloc(size, c.ACL_MEM_MALLOC_HUGE_FIRST)
                assert ret == c.ACL_SUCCESS
                ptrs.append(ptr)
                _, ret = acl.mdl.add_dataset_buffer(ds, acl.create_data_buffer(ptr, size))
                assert ret == c.ACL_SUCCESS
        return self

    def copy_in(self, images: np.ndarray) -> int:
        data = images.tobytes()
        return int(self.acl.rt.memcpy(self.in_ptrs[0], self.in_sizes[0], self.acl.util.bytes_to_ptr(data), len(data), H2D))

    def read_logits(self, n: int) -> np.ndarray:
        host, ret = self.acl.rt.malloc_host(self.out_sizes[0])
        assert ret == c.ACL_SUCCESS
        assert self.acl.rt.memcpy(host, self.out_sizes[0], self.out_ptrs[0], n * 3 * 4, D2H) == c.ACL_SUCCESS
        logits = np.frombuffer(self.acl.util.ptr_to_bytes(host, n * 3 * 4), dtype=np.float32).reshape(n, 3)
        assert self.acl.rt.free_host(host) == c.ACL_SUCCESS
        return logits


def test_full_sequence_runs_the_embedded_graph_and_teardown_releases_everything(sim: Any, tiny_om: Path) -> None:
    s = Session(sim).open().load(tiny_om).datasets()
    dims, ret = sim.mdl.get_input_dims(s.desc, 0)
    assert ret == c.ACL_SUCCESS and dims == {"name": "images", "dimCount": 4, "dims": [1, 8, 8, 3]}
    assert s.in_sizes == [8 * 8 * 3 * 4] and s.out_sizes == [3 * 4]
    assert sim.mdl.get_input_data_type(s.desc, 0) == c.ACL_FLOAT
    assert s.copy_in(red_blue_batch(2)[1:]) == c.ACL_SUCCESS  # one blue image
    assert sim.mdl.execute(s.model_id, s.in_ds, s.out_ds) == c.ACL_SUCCESS
    logits = s.read_logits(1)
    assert int(np.argmax(logits[0])) == 2 and logits[0, 2] == pytest.approx(10.0)

    for ds in (s.in_ds, s.out_ds):
        for i in range(sim.mdl.get_dataset_num_buffers(ds)):
            assert sim.destroy_data_buffer(sim.mdl.get_dataset_buffer(ds, i)) == c.ACL_SUCCESS
        assert sim.mdl.destroy_dataset(ds) == c.ACL_SUCCESS
    for ptr in s.in_ptrs + s.out_ptrs:
        assert sim.rt.free(ptr) == c.ACL_SUCCESS
    assert sim.mdl.unload(s.model_id) == c.ACL_SUCCESS
    assert sim.mdl.destroy_desc(s.desc) == c.ACL_SUCCESS
    assert sim.rt.destroy_context(s.context) == c.ACL_SUCCESS
    assert sim.rt.reset_device(0) == c.ACL_SUCCESS
    assert sim.finalize() == c.ACL_SUCCESS
    assert all(v == 0 for v in sim.sim_stats().values()), sim.sim_stats()


def test_memcpy_past_dest_max_is_invalid_param(sim: Any, tiny_om: Path) -> None:
    s = Session(sim).open().load(tiny_om).datasets()
    data = red_blue_batch(2).tobytes()  # two images into a one-image buffer
    ret = sim.rt.memcpy(s.in_ptrs[0], s.in_sizes[0], sim.util.bytes_to_ptr(data), len(data), H2D)
    assert ret == c.ACL_ERROR_INVALID_PARAM
    assert "overflow" in sim.get_recent_err_msg()


def test_memcpy_past_the_allocation_is_rt_param_invalid(sim: Any, tiny_om: Path) -> None:
    s = Session(sim).open().load(tiny_om).datasets()
    data = red_blue_batch(2).tobytes()
    # dest_max lies about the buffer's size: the runtime's bounds check catches it.
    ret = sim.rt.memcpy(s.in_ptrs[0], len(data), sim.util.bytes_to_ptr(data), len(data), H2D)
    assert ret == c.ACL_ERROR_RT_PARAM_INVALID


def test_use_after_free_and_double_free(sim: Any, tiny_om: Path) -> None:
    s = Session(sim).open().load(tiny_om).datasets()
    assert sim.rt.free(s.in_ptrs[0]) == c.ACL_SUCCESS
    assert s.copy_in(red_blue_batch(1)) == c.ACL_ERROR_RT_PARAM_INVALID
    assert "use after free" in sim.get_recent_err_msg()
    assert sim.mdl.execute(s.model_id, s.in_ds, s.out_ds) == c.ACL_ERROR_RT_PARAM_INVALID
    assert sim.rt.free(s.in_ptrs[0]) == c.ACL_ERROR_RT_MEMORY_FREE


def test_execute_before_load_and_after_unload_is_invalid_model_id(sim: Any, tiny_om: Path) -> None:
    s = Session(sim).open()
    ds_in, ds_out = sim.mdl.create_dataset(), sim.mdl.create_dataset()
    assert sim.mdl.execute(1, ds_in, ds_out) == c.ACL_ERROR_INVALID_MODEL_ID
    s.load(tiny_om).datasets()
    assert sim.mdl.unload(s.model_id) == c.ACL_SUCCESS
    assert sim.mdl.execute(s.model_id, s.in_ds, s.out_ds) == c.ACL_ERROR_INVALID_MODEL_ID
    assert sim.mdl.unload(s.model_id) == c.ACL_ERROR_INVALID_MODEL_ID


def test_wrongly_sized_buffers_are_input_and_output_mismatch(sim: Any, tiny_om: Path) -> None:
    s = Session(sim).open().load(tiny_om)
    small_in = Session(sim)
    small_in.__dict__.update(s.__dict__)
    small_in.datasets(in_sizes=[s.in_sizes[0] - 4])
    assert sim.mdl.execute(s.model_id, small_in.in_ds, small_in.out_ds) == c.ACL_ERROR_MODEL_INPUT_NOT_MATCH
    small_out = Session(sim)
    small_out.__dict__.update(s.__dict__)
    small_out.datasets(out_sizes=[s.out_sizes[0] - 4])
    assert sim.mdl.execute(s.model_id, small_out.in_ds, small_out.out_ds) == c.ACL_ERROR_MODEL_OUTPUT_NOT_MATCH
    # Too many buffers is a mismatch too.
    extra = Session(sim)
    extra.__dict__.update(s.__dict__)
    extra.datasets(in_sizes=[s.in_sizes[0], 16])
    assert sim.mdl.execute(s.model_id, extra.in_ds, extra.out_ds) == c.ACL_ERROR_MODEL_INPUT_NOT_MATCH


def test_calls_need_init_and_a_context_in_the_calling_thread(sim: Any, tiny_om: Path) -> None:
    assert sim.rt.set_device(0) == c.ACL_ERROR_UNINITIALIZE
    assert sim.init() == c.ACL_SUCCESS
    assert sim.init() == c.ACL_ERROR_REPEAT_INITIALIZE
    assert sim.rt.set_device(7) == c.ACL_ERROR_RT_INVALID_DEVICEID
    _, ret = sim.rt.malloc(64, c.ACL_MEM_MALLOC_HUGE_FIRST)
    assert ret == c.ACL_ERROR_RT_CONTEXT_NULL
    assert sim.rt.set_device(0) == c.ACL_SUCCESS
    context, ret = sim.rt.create_context(0)
    assert ret == c.ACL_SUCCESS

    results: dict[str, int] = {}

    def other_thread() -> None:
        results["before"] = sim.rt.malloc(64, c.ACL_MEM_MALLOC_HUGE_FIRST)[1]
        sim.rt.set_context(context)
        results["after"] = sim.rt.malloc(64, c.ACL_MEM_MALLOC_HUGE_FIRST)[1]

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert results == {"before": c.ACL_ERROR_RT_CONTEXT_NULL, "after": c.ACL_SUCCESS}
    assert sim.finalize() == c.ACL_SUCCESS
    assert sim.finalize() == c.ACL_ERROR_REPEAT_FINALIZE


def test_a_file_that_is_not_a_simulated_model_is_a_parse_error(sim: Any, tmp_path: Path) -> None:
    Session(sim).open()
    fake = tmp_path / "real.om"
    fake.write_bytes(b"IMOD" + bytes(64))  # what a real .om would look like to the simulator
    _, ret = sim.mdl.load_from_file(str(fake))
    assert ret == c.ACL_ERROR_PARSE_MODEL
    assert "real pyACL" in sim.get_recent_err_msg()
    _, ret = sim.mdl.load_from_file(str(tmp_path / "missing.om"))
    assert ret == c.ACL_ERROR_READ_MODEL_FAILURE


def test_dynamic_batch(sim: Any, tiny_dynamic_om: Path, tiny_om: Path) -> None:
    s = Session(sim).open().load(tiny_dynamic_om).datasets()
    index, ret = sim.mdl.get_input_index_by_name(s.desc, c.DYNAMIC_BATCH_INPUT_NAME)
    assert ret == c.ACL_SUCCESS and index == 1
    batches, ret = sim.mdl.get_dynamic_batch(s.desc)
    assert ret == c.ACL_SUCCESS and batches == {"batchCount": 4, "batch": [1, 2, 4, 8]}
    dims, _ = sim.mdl.get_input_dims(s.desc, 0)
    assert dims["dims"] == [-1, 8, 8, 3]
    assert s.in_sizes[0] == 8 * 8 * 8 * 3 * 4  # sized for the largest batch

    images = red_blue_batch(3)
    assert s.copy_in(images) == c.ACL_SUCCESS
    # Executing without choosing a batch size fails; an unsupported size is refused.
    assert sim.mdl.execute(s.model_id, s.in_ds, s.out_ds) == c.ACL_ERROR_GE_DYNAMIC_BATCH_SIZE_INVALID
    assert sim.mdl.set_dynamic_batch_size(s.model_id, s.in_ds, index, 3) == c.ACL_ERROR_GE_DYNAMIC_BATCH_SIZE_INVALID
    assert sim.mdl.set_dynamic_batch_size(s.model_id, s.in_ds, 0, 4) == c.ACL_ERROR_INVALID_PARAM
    assert sim.mdl.set_dynamic_batch_size(s.model_id, s.in_ds, index, 4) == c.ACL_SUCCESS
    assert sim.mdl.execute(s.model_id, s.in_ds, s.out_ds) == c.ACL_SUCCESS
    out_dims, _ = sim.mdl.get_cur_output_dims(s.desc, 0)
    assert out_dims["dims"] == [4, 3]
    assert list(np.argmax(s.read_logits(4)[:3], axis=1)) == [0, 2, 0]

    static = Session(sim).load(tiny_om).datasets()
    _, ret = sim.mdl.get_input_index_by_name(static.desc, c.DYNAMIC_BATCH_INPUT_NAME)
    assert ret != c.ACL_SUCCESS
    assert sim.mdl.set_dynamic_batch_size(static.model_id, static.in_ds, 1, 1) == c.ACL_ERROR_MODEL_NOT_DYNAMIC
