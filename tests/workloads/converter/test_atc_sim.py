"""The ATC simulator: ATC's flags in, a simulated model (or ATC's coded errors) out."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from ascend_mlops.ascend import atc, atc_sim, simmodel
from tests.workloads.converter.conftest import TINY_CLASSES, TINY_SIZE


@pytest.fixture
def simulator_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.ENV_SIMULATOR, "1")


def base_args(graph: Path, out: Path) -> list[str]:
    return [
        f"--model={graph / contract.FROZEN_GRAPH_FILE}",
        "--framework=3",
        f"--output={out / 'model'}",
        "--soc_version=Ascend310",
    ]


def simulate(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = atc_sim.convert(args, out)
    return code, out.getvalue()


def test_simulated_model_describes_the_graph(tiny_graph_dir: Path, tmp_path: Path, simulator_on: None) -> None:
    args = [
        *base_args(tiny_graph_dir, tmp_path),
        f"--input_shape=images:1,{TINY_SIZE},{TINY_SIZE},3",
        "--input_format=NHWC",
        "--out_nodes=logits:0",
        "--output_type=FP32",
        "--op_select_implmode=high_precision",
    ]
    code, log = simulate(args)
    assert code == 0, log
    assert "NOT Huawei ATC" in log and "SIMULATED" in log
    assert log.rstrip().endswith(atc.SUCCESS_LINE)
    om = tmp_path / "model.om"
    assert simmodel.is_simulated(om)
    model = simmodel.read(om)
    assert model.inputs == [
        {"name": "images", "dims": [1, TINY_SIZE, TINY_SIZE, 3], "dataType": "float32", "format": "NHWC", "tensorName": "images:0"}
    ]
    assert model.outputs == [
        {"name": "logits", "dims": [1, TINY_CLASSES], "dataType": "float32", "format": "ND", "tensorName": "logits:0"}
    ]
    header = model.header
    assert header["simulated"] is True and header["socVersion"] == "Ascend310" and header["framework"] == 3
    assert header["dynamicBatchSizes"] == [] and header["atcArguments"] == args
    assert header["opSelectImplmode"] == "high_precision" and header["precisionMode"] == "force_fp16"
    assert model.graph_def == (tiny_graph_dir / contract.FROZEN_GRAPH_FILE).read_bytes()


def test_dynamic_batch_and_output_type(tiny_graph_dir: Path, tmp_path: Path, simulator_on: None) -> None:
    code, log = simulate([
        *base_args(tiny_graph_dir, tmp_path),
        f"--input_shape=images:-1,{TINY_SIZE},{TINY_SIZE},3",
        "--dynamic_batch_size=1,2,4",
        "--out_nodes=logits:0",
        "--output_type=FP16",
    ])
    assert code == 0, log
    model = simmodel.read(tmp_path / "model.om")
    assert model.inputs[0]["dims"] == [-1, TINY_SIZE, TINY_SIZE, 3]
    assert model.outputs == [
        {"name": "logits", "dims": [-1, TINY_CLASSES], "dataType": "float16", "format": "ND", "tensorName": "logits:0"}
    ]
    assert model.dynamic_batch_sizes == [1, 2, 4]
    assert model.header["dynamicBatchInput"] == atc.DYNAMIC_BATCH_INPUT


def test_out_nodes_default_to_the_graph_outputs(tiny_graph_dir: Path, tmp_path: Path, simulator_on: None) -> None:
    code, log = simulate([*base_args(tiny_graph_dir, tmp_path), f"--input_shape=images:1,{TINY_SIZE},{TINY_SIZE},3"])
    assert code == 0, log
    names = [o["name"] for o in simmodel.read(tmp_path / "model.om").outputs]
    assert "logits" in names or "Identity" in names


FAILURES = [
    (["--input_shape=input:1,8,8,3"], "E10016", "'input' given in --input_shape is not in the model"),
    (["--input_shape=logits:1,8,8,3"], "E10017", "not an input"),
    (["--input_shape=images:1,8,8"], "E10049", "3 dimensions given"),
    (["--input_shape=images:1,9,9,3"], "E10001", "axis 1 of input 'images' is fixed to 8"),
    (["--input_shape=images:1,8,8,3", "--out_nodes=prob:0"], "E11017", "'prob' given in --out_nodes"),
    (["--input_shape=images:1,8,8,3", "--out_nodes=logits:3"], "E11017", "no output 3"),
    (["--input_shape=images:1;8,8,3"], "E10002", "expected NODE:DIMS"),
    (["--input_shape=images:1,8,8,3", "--dynamic_batch_size=1,2"], "E10031", "must be -1"),
    (["--input_shape=images:-1,8,8,3"], "E10011", "needs --dynamic_batch_size"),
    (["--input_shape=images:-1,8,8,3", "--dynamic_batch_size=8"], "E10035", "at least 2"),
    (["--input_shape=images:1,8,8,3", "--input_format=NCWH"], "E10001", "--input_format"),
    (["--input_shape=images:1,8,8,3", "--output_type=INT4"], "E10001", "--output_type"),
    (["--input_shape=images:1,8,8,3", "--log=loud"], "E10010", "--log"),
    (["--input_shape=images:1,8,8,3", "--weight=w.caffemodel"], "E10001", "unknown flag --weight"),
    (["--input_shape=images:1,8,8,3", "--soc_version=Ascend910"], "E10001", "--soc_version"),
    (["--framework=0"], "E10001", "only 3"),
]


@pytest.mark.parametrize(("extra", "code", "words"), FAILURES, ids=[f[1] + "-" + f[0][-1][:30] for f in FAILURES])
def test_failures_print_atc_error_codes_and_write_nothing(
    tiny_graph_dir: Path, tmp_path: Path, simulator_on: None, extra: list[str], code: str, words: str
) -> None:
    status, log = simulate([*base_args(tiny_graph_dir, tmp_path), *extra])
    assert status == atc_sim.EXIT_FAILED
    assert atc.FAILURE_LINE in log
    assert f"{code}: " in log and words in log, log
    assert not (tmp_path / "model.om").exists()


def test_required_flags_and_unreadable_models(tiny_graph_dir: Path, tmp_path: Path, simulator_on: None) -> None:
    status, log = simulate(base_args(tiny_graph_dir, tmp_path)[:3])
    assert status == 1 and "E10007: --soc_version is required" in log
    status, log = simulate([f"--model={tmp_path / 'missing.pb'}", *base_args(tiny_graph_dir, tmp_path)[1:]])
    assert status == 1 and "E13001" in log
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\x00 not a graph" * 10)
    status, log = simulate([f"--model={garbage}", *base_args(tiny_graph_dir, tmp_path)[1:]])
    assert status == 1 and "E10041" in log and "not a TensorFlow frozen graph" in log


def test_the_simulator_refuses_to_run_unless_opted_in(tiny_graph_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != contract.ENV_SIMULATOR}
    result = subprocess.run(
        [sys.executable, "-m", "ascend_mlops.ascend.atc_sim", *base_args(tiny_graph_dir, tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == contract.EXIT_TOOLKIT_MISSING
    assert f"{contract.ENV_SIMULATOR} is not 1" in result.stderr
    assert not (tmp_path / "model.om").exists()
