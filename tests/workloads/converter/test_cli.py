"""`ascend-mlops convert` end to end against stand-in `atc` executables, the
simulator, and no ATC at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops import cli
from ascend_mlops.api import catalog, contract
from ascend_mlops.ascend import atc, simmodel
from tests.workloads.converter.conftest import TINY_CLASSES, TINY_SIZE, write_stub_atc
from tests.workloads.converter.graphs import write_tiny_frozen_graph

SHAPE = f"images:1,{TINY_SIZE},{TINY_SIZE},3"


def convert(graph: Path | str, output: Path, *extra: str, log: Path, template: str = catalog.TEMPLATE_SEED) -> int:
    return cli.main([
        contract.CMD_CONVERT,
        contract.FLAG_TEMPLATE, template,
        contract.FLAG_INPUT, str(graph),
        contract.FLAG_OUTPUT, str(output),
        *extra,
        contract.FLAG_TERMINATION_LOG, str(log),
    ])


def summary(log: Path) -> dict[str, Any]:
    text = log.read_text()
    assert len(text.encode()) <= contract.TERMINATION_MESSAGE_LIMIT
    return json.loads(text)


def expected_args(graph_dir: Path, output: Path) -> list[str]:
    return [
        f"--model={graph_dir / contract.FROZEN_GRAPH_FILE}",
        "--framework=3",
        f"--output={output / 'model'}",
        "--soc_version=Ascend310",
        f"--input_shape={SHAPE}",
        "--input_format=NHWC",
        "--out_nodes=logits:0",
        "--output_type=FP32",
        "--op_select_implmode=high_performance",
        "--buffer_optimize=l2_optimize",
    ]


def test_real_atc_on_path_is_used_even_with_the_simulator_enabled(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "argv.txt"
    write_stub_atc(no_atc, "success", record)
    monkeypatch.setenv(contract.ENV_SIMULATOR, "1")
    output, log = tmp_path / "om" / "model", tmp_path / "termination-log"

    assert convert(tiny_graph_dir, output, contract.FLAG_SET, f"inputShape={SHAPE}", log=log) == 0

    assert record.read_text().splitlines() == expected_args(tiny_graph_dir, output)
    om = output / contract.OM_FILE
    assert om.read_bytes() == b"STAND-IN OM" and not simmodel.is_simulated(om)
    assert summary(log) == {
        contract.SUMMARY_MODEL: contract.OM_FILE,
        contract.SUMMARY_ATC_COMMAND: "atc " + " ".join(expected_args(tiny_graph_dir, output)),
        contract.SUMMARY_SIMULATED: False,
    }
    config = json.loads((output / contract.MODEL_CONFIG_FILE).read_text())
    assert config["simulated"] is False and config["atc"] == str(no_atc / "atc")
    assert config["template"] == catalog.TEMPLATE_SEED and config["options"]["inputShape"] == SHAPE
    assert config["inputs"] == [
        {"name": "images", "dims": [1, TINY_SIZE, TINY_SIZE, 3], "dataType": "float32", "format": "NHWC", "tensorName": "images:0"}
    ]
    assert config["outputs"] == [
        {"name": "logits", "dims": [1, TINY_CLASSES], "dataType": "float32", "format": "ND", "tensorName": "logits:0"}
    ]
    out = capsys.readouterr().out
    assert atc.SUCCESS_LINE in out and "SIMULATOR" not in out  # ATC's output is streamed to the log


def test_atc_under_the_toolkit_home_is_found(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "ascend-toolkit" / "latest"
    (home / "bin").mkdir(parents=True)
    record = tmp_path / "argv.txt"
    write_stub_atc(home / "bin", "success", record)
    monkeypatch.setenv(contract.ENV_ASCEND_TOOLKIT_HOME, str(home))
    output, log = tmp_path / "out", tmp_path / "termination-log"
    assert convert(tiny_graph_dir / contract.FROZEN_GRAPH_FILE, output, contract.FLAG_SET, f"inputShape={SHAPE}", log=log) == 0
    assert record.read_text().splitlines() == expected_args(tiny_graph_dir, output)
    assert json.loads((output / contract.MODEL_CONFIG_FILE).read_text())["atc"] == str(home / "bin" / "atc")


def test_atc_failure_exits_with_its_error_codes_and_log_tail(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_stub_atc(no_atc, "failure", tmp_path / "argv.txt")
    output, log = tmp_path / "out", tmp_path / "termination-log"
    output.mkdir()
    (output / contract.OM_FILE).write_bytes(b"model from an earlier attempt")

    code = convert(tiny_graph_dir, output, contract.FLAG_SET, f"inputShape={SHAPE}", log=log)

    assert code == contract.EXIT_INVALID_MODEL and not contract.is_retryable_exit(code)
    result = summary(log)
    assert result[contract.SUMMARY_ERROR_CODES] == ["E10016", "EZ9999"]
    assert result[contract.SUMMARY_ERROR].startswith("ATC failed with exit code 1: E10016: Opname images")
    assert result[contract.SUMMARY_EXIT_CODE] == contract.EXIT_INVALID_MODEL
    assert result[contract.SUMMARY_SIMULATED] is False
    tail = result[contract.SUMMARY_LOG_TAIL]
    assert "ATC run failed" in tail and tail.rstrip().endswith("EZ9999: Inner Error!")
    assert "parsing layer 0" not in tail  # only the tail is kept
    assert result[contract.SUMMARY_ATC_COMMAND].startswith("atc --model=")
    assert not (output / contract.OM_FILE).exists() and not (output / contract.MODEL_CONFIG_FILE).exists()
    assert "parsing layer 0" in capsys.readouterr().out  # the whole output still reached the log


def test_atc_killed_by_a_signal_is_retryable(no_atc: Path, tiny_graph_dir: Path, tmp_path: Path) -> None:
    write_stub_atc(no_atc, "killed", tmp_path / "argv.txt")
    log = tmp_path / "termination-log"
    code = convert(tiny_graph_dir, tmp_path / "out", contract.FLAG_SET, f"inputShape={SHAPE}", log=log)
    assert code == 137 and contract.is_retryable_exit(code)
    assert "killed by signal 9" in summary(log)[contract.SUMMARY_ERROR]


def test_no_atc_and_simulator_off_is_a_clear_error(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    code = convert(tiny_graph_dir, tmp_path / "out", contract.FLAG_SET, f"inputShape={SHAPE}", log=log)
    assert code == contract.EXIT_TOOLKIT_MISSING
    error = summary(log)[contract.SUMMARY_ERROR]
    assert error.startswith("atc not found: this image lacks the CANN toolkit")
    assert f"{contract.ENV_SIMULATOR}=1 only for testing" in error
    assert error in capsys.readouterr().err
    assert not (tmp_path / "out" / contract.OM_FILE).exists()


def test_simulator_converts_when_no_atc_exists(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(contract.ENV_SIMULATOR, "1")
    output, log = tmp_path / "out", tmp_path / "termination-log"
    code = convert(
        tiny_graph_dir, output,
        contract.FLAG_SET, f"inputShape=images:-1,{TINY_SIZE},{TINY_SIZE},3",
        contract.FLAG_SET, "dynamicBatchSizes=1,2,4,8",
        log=log, template=catalog.TEMPLATE_DYNAMIC_BATCH,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ATC SIMULATOR" in out and atc.SUCCESS_LINE in out
    result = summary(log)
    assert result[contract.SUMMARY_SIMULATED] is True and result[contract.SUMMARY_MODEL] == contract.OM_FILE
    assert "--dynamic_batch_size=1,2,4,8" in result[contract.SUMMARY_ATC_COMMAND]
    model = simmodel.read(output / contract.OM_FILE)
    config = json.loads((output / contract.MODEL_CONFIG_FILE).read_text())
    assert config["simulated"] is True and "SIMULATED" in config["note"]
    assert config["inputs"] == model.inputs and config["outputs"] == model.outputs
    assert model.inputs[0]["dims"] == [-1, TINY_SIZE, TINY_SIZE, 3]
    assert model.outputs[0]["dims"] == [-1, TINY_CLASSES]
    assert model.dynamic_batch_sizes == [1, 2, 4, 8] and config["dynamicBatchSizes"] == [1, 2, 4, 8]


def test_options_that_do_not_fit_the_graph_fail_before_atc_runs(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path
) -> None:
    record = tmp_path / "argv.txt"
    write_stub_atc(no_atc, "success", record)
    log = tmp_path / "termination-log"
    # The seed template's default 224x224 does not fit an 8x8 model.
    assert convert(tiny_graph_dir, tmp_path / "out", log=log) == contract.EXIT_INVALID_MODEL
    result = summary(log)
    assert result[contract.SUMMARY_ERROR].startswith("inputShape='images:1,224,224,3' does not fit the model")
    assert result[contract.SUMMARY_ERROR_CODES] == ["E10001"]
    code = convert(tiny_graph_dir, tmp_path / "out", contract.FLAG_SET, f"inputShape={SHAPE}",
                   contract.FLAG_SET, "outNodes=probabilities:0", log=log)
    assert code == contract.EXIT_INVALID_MODEL
    assert "outNodes='probabilities:0'" in summary(log)[contract.SUMMARY_ERROR]
    assert not record.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([contract.FLAG_SET, "inputShape=images:1,x,8,3"], "inputShape='images:1,x,8,3'"),
        ([contract.FLAG_SET, "outputType=FP64"], "outputType='FP64'"),
        ([contract.FLAG_SET, "colour=blue"], "colour='blue' is invalid: unknown option"),
        ([contract.FLAG_TEMPLATE, "TF-To-Nothing"], "unknown conversion template 'TF-To-Nothing'"),
    ],
)
def test_invalid_options_exit_with_invalid_parameters(
    no_atc: Path, tiny_graph_dir: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    record = tmp_path / "argv.txt"
    write_stub_atc(no_atc, "success", record)
    log = tmp_path / "termination-log"
    code = cli.main([contract.CMD_CONVERT, contract.FLAG_INPUT, str(tiny_graph_dir), contract.FLAG_OUTPUT,
                     str(tmp_path / "out"), *args, contract.FLAG_TERMINATION_LOG, str(log)])
    assert code == contract.EXIT_INVALID_PARAMETERS
    assert words in summary(log)[contract.SUMMARY_ERROR]
    assert not record.exists()


def test_missing_or_ambiguous_input_is_an_invalid_model(no_atc: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    assert convert(tmp_path / "nowhere", tmp_path / "out", log=log) == contract.EXIT_INVALID_MODEL
    assert "does not exist" in summary(log)[contract.SUMMARY_ERROR]
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.pb").write_bytes(b"")
    (two / "b.pb").write_bytes(b"")
    assert convert(two, tmp_path / "out", log=log) == contract.EXIT_INVALID_MODEL
    assert "a.pb, b.pb" in summary(log)[contract.SUMMARY_ERROR]
    write_stub_atc(no_atc, "success", tmp_path / "argv.txt")
    assert convert(two / "a.pb", tmp_path / "out", log=log) == contract.EXIT_INVALID_MODEL
    assert summary(log)[contract.SUMMARY_ERROR].startswith(f"{contract.FLAG_INPUT} '{two / 'a.pb'}' is not usable")
    assert summary(log)[contract.SUMMARY_ERROR_CODES] == ["E10041"]
    assert not (tmp_path / "argv.txt").exists()


def test_summary_stays_within_the_termination_message_limit(no_atc: Path, tiny_graph_dir: Path, tmp_path: Path) -> None:
    stub = no_atc / "atc"
    stub.write_text(
        "#!/bin/sh\ni=0\nwhile [ $i -lt 200 ]; do echo \"E1000$((i % 10)): line $i $(printf '%0300d' $i)\"; i=$((i+1)); done\n"
        "echo 'ATC run failed'\nexit 3\n"
    )
    stub.chmod(0o755)
    log = tmp_path / "termination-log"
    code = convert(tiny_graph_dir, tmp_path / "out", contract.FLAG_SET, f"inputShape={SHAPE}", log=log)
    assert code == contract.EXIT_INVALID_MODEL
    assert os.path.getsize(log) <= contract.TERMINATION_MESSAGE_LIMIT
    result = summary(log)
    assert result[contract.SUMMARY_ERROR_CODES] == [f"E1000{k}" for k in range(10)]
    assert result[contract.SUMMARY_LOG_TAIL].endswith("ATC run failed")  # shortened from the front


def test_seed_template_defaults_end_to_end_on_the_simulator(
    no_atc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No options at all: the seed's images:1,224,224,3 / NHWC / logits:0 / FP32, as ModelArts runs it."""
    graph_dir = tmp_path / "V001" / contract.FROZEN_GRAPH_DIR
    write_tiny_frozen_graph(graph_dir, size=224, classes=5)
    monkeypatch.setenv(contract.ENV_SIMULATOR, "1")
    output, log = tmp_path / "V001" / contract.OM_OUTPUT_SUBDIR, tmp_path / "termination-log"
    assert convert(graph_dir, output, log=log) == 0
    model = simmodel.read(output / contract.OM_FILE)
    assert model.inputs == [
        {"name": "images", "dims": [1, 224, 224, 3], "dataType": "float32", "format": "NHWC", "tensorName": "images:0"}
    ]
    assert model.outputs == [
        {"name": "logits", "dims": [1, 5], "dataType": "float32", "format": "ND", "tensorName": "logits:0"}
    ]
    assert model.header["opSelectImplmode"] == "high_performance" and model.header["bufferOptimize"] == "l2_optimize"
