"""Invalid input ends the run with its documented, permanent exit code, a message naming the
problem, and a summary in the termination log; nothing is written to the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from ascend_mlops import cli
from ascend_mlops.api import contract
from tests.helpers import make_dataset, run_cli

from .conftest import summary, train_args


@pytest.fixture(scope="module")
def good_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), classes=("a", "b"), per_class=3, size=32)


def _data(tmp_path: Path, layout: str, good: Path) -> Path:
    root = tmp_path / "data"
    if layout == "missing":
        return root
    root.mkdir()
    if layout == "one_class":
        make_dataset(root, classes=("only",), per_class=3, size=32)
    elif layout == "empty_class":
        make_dataset(root, classes=("a",), per_class=3, size=32)
        (root / "b").mkdir()
        (root / "b" / "readme.txt").write_text("no images here")
    return root


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "the dataset directory does not exist"),
        ("empty", "the dataset is empty"),
        ("one_class", "needs at least two class"),
        ("empty_class", "class(es) with no readable image: b (1 file(s) skipped"),
    ],
)
def test_invalid_dataset(tmp_path: Path, good_data: Path, layout: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    code = cli.main(train_args(_data(tmp_path, layout, good_data), tmp_path / "out", log))
    assert code == contract.EXIT_INVALID_DATASET
    assert message in capsys.readouterr().err
    result = summary(log)
    assert result[contract.SUMMARY_EXIT_CODE] == contract.EXIT_INVALID_DATASET
    assert message in result[contract.SUMMARY_ERROR]
    assert contract.SUMMARY_VERSION not in result
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epoch=3"], "unknown hyperparameter(s): epoch"),
        (["--set", "batch_size=zero"], "batch_size='zero': expected an integer"),
        (["--set", "learning_rate=0"], "learning_rate='0': must be a number > 0"),
        (["--set", "epochs"], "expected NAME=VALUE"),
        (["--algorithm", "vgg16"], "--algorithm 'vgg16' is not supported"),
        (["--train-ratio", "1.0"], "--train-ratio 1.0: must be between 0 and 1"),
        (["--weights", "/nonexistent/weights.h5"], "--weights '/nonexistent/weights.h5': no such file"),
    ],
)
def test_invalid_parameters(tmp_path: Path, good_data: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    code = cli.main(train_args(good_data, tmp_path / "out", log, extra=args))
    assert code == contract.EXIT_INVALID_PARAMETERS
    assert message in capsys.readouterr().err
    result = summary(log)
    assert result == {contract.SUMMARY_ERROR: result[contract.SUMMARY_ERROR], contract.SUMMARY_EXIT_CODE: contract.EXIT_INVALID_PARAMETERS}
    assert message in result[contract.SUMMARY_ERROR]
    assert not (tmp_path / "out").exists()


def test_exit_codes_of_the_real_process(tmp_path: Path, good_data: Path) -> None:
    """The same checks through the console entry point, as the pod runs it."""
    bad_param = run_cli(train_args(good_data, tmp_path / "out", tmp_path / "log1", extra=["--set", "dropout=0.5"]))
    assert bad_param.returncode == contract.EXIT_INVALID_PARAMETERS
    assert "unknown hyperparameter(s): dropout" in bad_param.stderr
    assert summary(tmp_path / "log1")[contract.SUMMARY_EXIT_CODE] == contract.EXIT_INVALID_PARAMETERS
    bad_data = run_cli(train_args(tmp_path / "nowhere", tmp_path / "out", tmp_path / "log2"))
    assert bad_data.returncode == contract.EXIT_INVALID_DATASET
    usage = run_cli([contract.CMD_TRAIN, contract.FLAG_DATA, str(good_data)])  # --output missing
    assert usage.returncode == contract.EXIT_USAGE
    assert "--output" in usage.stderr
    assert not contract.is_retryable_exit(bad_param.returncode)
    assert not contract.is_retryable_exit(bad_data.returncode)


def test_unwritable_output_is_a_parameter_error(tmp_path: Path, good_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output root should be")
    code = cli.main(train_args(good_data, blocker / "out", tmp_path / "log"))
    assert code == contract.EXIT_INVALID_PARAMETERS
    assert "--output" in capsys.readouterr().err
