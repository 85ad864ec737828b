"""Fixtures for the converter tests: a tiny frozen graph, stand-in `atc` executables,
and an environment with no real ATC anywhere."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from ascend_mlops.ascend import atc
from tests.workloads.converter.graphs import write_tiny_frozen_graph

TINY_SIZE = 8
TINY_CLASSES = 3


@pytest.fixture(scope="session")
def tiny_graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen-graph directory shaped like the trainer's: images [None,8,8,3] -> logits [None,3]."""
    directory = tmp_path_factory.mktemp("tiny-version") / contract.FROZEN_GRAPH_DIR
    write_tiny_frozen_graph(directory, size=TINY_SIZE, classes=TINY_CLASSES)
    return directory


def path_without_atc() -> str:
    """PATH minus every directory that holds an `atc`."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / atc.EXECUTABLE).exists())


@pytest.fixture
def no_atc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH without any `atc`, no toolkit home, the simulator off; returns an empty bin dir first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), path_without_atc()]))
    monkeypatch.delenv(contract.ENV_ASCEND_TOOLKIT_HOME, raising=False)
    monkeypatch.delenv(contract.ENV_SIMULATOR, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # A machine with CANN installed must still see "no atc" here.
    monkeypatch.setattr(atc, "DEFAULT_TOOLKIT_HOME", str(tmp_path / "no-cann"))
    return bin_dir


STUB_SUCCESS = """#!/bin/sh
# Stand-in for Huawei's atc: records its arguments and writes a fake model.
printf '%s\\n' "$@" > "{record}"
out=""
for arg in "$@"; do
  case "$arg" in --output=*) out="${{arg#--output=}}" ;; esac
done
echo "ATC start working now, please wait for a moment."
printf 'STAND-IN OM' > "$out.om"
echo "ATC run success, welcome to the next use."
"""

STUB_FAILURE = """#!/bin/sh
printf '%s\\n' "$@" > "{record}"
echo "ATC start working now, please wait for a moment."
i=0
while [ $i -lt 60 ]; do echo "[INFO] parsing layer $i"; i=$((i+1)); done
echo "ATC run failed, Please check the detail log, Try 'atc --help' for more information"
echo "E10016: Opname images specified in --input_shape is not found in the model."
echo "        Solution: Specify the name of an existing node in the graph."
echo "EZ9999: Inner Error!"
exit 1
"""

STUB_KILLED = """#!/bin/sh
printf '%s\\n' "$@" > "{record}"
echo "ATC start working now, please wait for a moment."
kill -9 $$
"""

STUBS = {"success": STUB_SUCCESS, "failure": STUB_FAILURE, "killed": STUB_KILLED}


def write_stub_atc(directory: Path, kind: str, record: Path) -> Path:
    path = directory / atc.EXECUTABLE
    path.write_text(STUBS[kind].format(record=record))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
