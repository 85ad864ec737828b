"""The acl backend on the pyACL simulator and the tensorflow backend, against the same tiny graph."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ascend_mlops.api import contract
from ascend_mlops.ascend import acl_constants as c
from ascend_mlops.workloads.server.backends import create_backend
from ascend_mlops.workloads.server.backends.acl_backend import AclBackend, AclError, import_acl
from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend
from ascend_mlops.workloads.server.errors import ModelLoadError, ToolkitMissing


def colour_batch(order: list[int]) -> np.ndarray:
    images = np.zeros((len(order), 8, 8, 3), dtype=np.float32)
    for i, channel in enumerate(order):
        images[i, ..., channel] = 255
    return images


def test_import_acl_picks_the_simulator_only_when_opted_in() -> None:
    try:
        import acl  # type: ignore[import-not-found]  # noqa: F401

        pytest.skip("the real pyACL is installed here; it always wins")
    except ImportError:
        pass
    with pytest.raises(ToolkitMissing, match=contract.ENV_SIMULATOR):
        import_acl({})
    module, simulated = import_acl({contract.ENV_SIMULATOR: "1"})
    assert simulated and module.SIMULATED


def test_acl_backend_static_batch_splits_a_batch_into_device_calls(sim: Any, tiny_om: Path) -> None:
    backend = AclBackend(tiny_om.parent, sim, simulated=True)
    backend.load()
    try:
        assert backend.input_size == (8, 8) and backend.num_classes == 3 and backend.max_batch_size == 1
        order = [2, 0, 1, 2, 0]
        logits = backend.predict(colour_batch(order))
        assert list(np.argmax(logits, axis=1)) == order
        assert sim.sim_calls().count("acl.mdl.execute") == 1 + len(order)  # warm-up + one per image
        assert backend.parameters()["simulated"] is True
    finally:
        backend.close()
    assert all(v == 0 for v in sim.sim_stats().values()), sim.sim_stats()
    # Teardown runs in the reverse order of setup.
    calls = [name for name in sim.sim_calls() if name in {"acl.mdl.unload", "acl.rt.destroy_context", "acl.rt.reset_device", "acl.finalize", "acl.rt.free"}]
    assert calls[-4:] == ["acl.mdl.unload", "acl.rt.destroy_context", "acl.rt.reset_device", "acl.finalize"]


def test_acl_backend_dynamic_batch_picks_the_smallest_size_that_fits(sim: Any, tiny_dynamic_om: Path) -> None:
    backend = AclBackend(tiny_dynamic_om, sim, simulated=True)
    backend.load()
    try:
        assert backend.max_batch_size == 8
        assert backend._chunks(4) == [(4, 4)]
        assert backend._chunks(7) == [(7, 8)]  # one padded call: 1 blank of 8
        assert backend._chunks(5) == [(4, 4), (1, 1)]  # padding to 8 would waste 3
        assert backend._chunks(11) == [(8, 8), (2, 2), (1, 1)]
        before = sim.sim_calls().count("acl.mdl.execute")
        order = [0, 1, 2, 1, 0, 2, 2]
        assert list(np.argmax(backend.predict(colour_batch(order)), axis=1)) == order
        assert sim.sim_calls().count("acl.mdl.execute") - before == 1
        assert backend.parameters()["batch_sizes"] == [1, 2, 4, 8]
    finally:
        backend.close()


def test_acl_backend_is_safe_under_concurrent_callers(sim: Any, tiny_dynamic_om: Path) -> None:
    backend = AclBackend(tiny_dynamic_om, sim, simulated=True)
    backend.load()
    errors: list[BaseException] = []

    def worker(channel: int) -> None:
        try:
            for n in (1, 3, 5):
                logits = backend.predict(colour_batch([channel] * n))
                assert list(np.argmax(logits, axis=1)) == [channel] * n
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i % 3,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    backend.close()
    assert not errors, errors


class FailingAcl:
    """The simulator with one call returning an error code, as a driver fault would."""

    def __init__(self, sim: Any, path: str, code: int) -> None:
        self._sim = sim
        self.rt = SimpleNamespace(**{n: getattr(sim.rt, n) for n in dir(sim.rt) if not n.startswith("_")})
        self.mdl = SimpleNamespace(**{n: getattr(sim.mdl, n) for n in dir(sim.mdl) if not n.startswith("_")})
        self.util = sim.util
        group, name = path.split(".")
        setattr(getattr(self, group), name, lambda *args: (0, code) if name in {"create_context", "load_from_file", "malloc"} else code)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sim, name)


@pytest.mark.parametrize(
    ("path", "code", "call", "error"),
    [
        ("rt.set_device", c.ACL_ERROR_RT_INVALID_DEVICEID, "acl.rt.set_device", AclError),
        ("mdl.load_from_file", c.ACL_ERROR_PARSE_MODEL, "acl.mdl.load_from_file", ModelLoadError),
        ("rt.malloc", c.ACL_ERROR_BAD_ALLOC, "acl.rt.malloc", ModelLoadError),
        ("mdl.execute", c.ACL_ERROR_RT_MODEL_EXECUTE, "acl.mdl.execute", AclError),
    ],
)
def test_acl_backend_turns_a_non_zero_code_into_an_error_naming_the_call(
    sim: Any, tiny_om: Path, path: str, code: int, call: str, error: type[Exception]
) -> None:
    backend = AclBackend(tiny_om, FailingAcl(sim, path, code), simulated=True)
    with pytest.raises(error) as info:
        backend.load()  # load ends with a warm-up execute
    assert call in str(info.value) and str(code) in str(info.value) and c.error_name(code) in str(info.value)
    # A failed load leaves nothing behind.
    assert all(v == 0 for v in sim.sim_stats().values()), sim.sim_stats()


def test_acl_backend_refuses_a_simulated_model_on_real_pyacl(sim: Any, tiny_om: Path) -> None:
    backend = AclBackend(tiny_om, sim, simulated=False)  # as if `sim` were the real module
    with pytest.raises(ModelLoadError, match="SIMULATED model"):
        backend.load()


def test_acl_backend_reports_a_missing_model(sim: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="--model"):
        AclBackend(tmp_path, sim, simulated=True).load()


def test_tensorflow_backend_loads_a_version_dir_a_frozen_graph_and_a_pb(tiny_version: Path) -> None:
    order = [1, 2, 0]
    for path in (tiny_version, tiny_version / contract.FROZEN_GRAPH_DIR, tiny_version / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE):
        backend = create_backend("tensorflow", path)
        assert isinstance(backend, TensorFlowBackend)
        backend.load()
        assert backend.input_size == (8, 8) and backend.num_classes == 3 and backend.max_batch_size is None
        assert list(np.argmax(backend.predict(colour_batch(order)), axis=1)) == order
        backend.close()


def test_tensorflow_backend_loads_a_saved_model(tmp_path: Path) -> None:
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="images")])
        def serve(self, images: Any) -> Any:
            return {"logits": tf.reduce_mean(images, axis=[1, 2])}

    model = Model()
    tf.saved_model.save(model, str(tmp_path / "saved_model"), signatures={"serving_default": model.serve})
    backend = TensorFlowBackend(tmp_path / "saved_model")
    backend.load()
    assert backend.platform == "tensorflow_savedmodel" and backend.input_size == (8, 8)
    assert list(np.argmax(backend.predict(colour_batch([2, 1])), axis=1)) == [2, 1]


def test_tensorflow_backend_names_the_missing_node(tmp_path: Path) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        tf.identity(x, name="output")
    (tmp_path / "g.pb").write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(ModelLoadError, match="`images`"):
        TensorFlowBackend(tmp_path / "g.pb").load()
    (tmp_path / "bad.pb").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="GraphDef"):
        TensorFlowBackend(tmp_path / "bad.pb").load()
