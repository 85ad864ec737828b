"""Finding ATC and running it: output streamed to our log, its tail and error codes kept."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from ascend_mlops.api import contract
from ascend_mlops.ascend import atc

SIMULATOR_MODULE: Final = "ascend_mlops.ascend.atc_sim"
TAIL_LINES: Final = 40


@dataclass(frozen=True)
class AtcTool:
    """The ATC to run: a real executable, or the simulator module."""

    argv0: tuple[str, ...]  # command prefix before ATC's own flags
    simulated: bool
    where: str  # for the log: a path, or the simulator's module

    @classmethod
    def real(cls, path: str) -> AtcTool:
        return cls((path,), simulated=False, where=path)

    @classmethod
    def simulator(cls) -> AtcTool:
        return cls((sys.executable, "-m", SIMULATOR_MODULE), simulated=True, where=f"python -m {SIMULATOR_MODULE}")


def find_atc(env: Mapping[str, str] | None = None) -> str | None:
    """A real `atc`: first on PATH, then under $ASCEND_TOOLKIT_HOME, then CANN's default install."""
    environ = os.environ if env is None else env
    found = shutil.which(atc.EXECUTABLE, path=environ.get("PATH", os.defpath))
    if found:
        return found
    homes = [environ.get(contract.ENV_ASCEND_TOOLKIT_HOME, ""), atc.DEFAULT_TOOLKIT_HOME]
    for home in homes:
        if not home:
            continue
        candidate = Path(home) / "bin" / atc.EXECUTABLE
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class ToolkitMissing(RuntimeError):
    pass


def choose_tool(env: Mapping[str, str] | None = None) -> AtcTool:
    """The real ATC whenever one exists; the simulator only when opted in and no ATC exists."""
    environ = os.environ if env is None else env
    real = find_atc(environ)
    if real:
        return AtcTool.real(real)
    if contract.simulator_enabled(environ):
        return AtcTool.simulator()
    raise ToolkitMissing(
        "atc not found: this image lacks the CANN toolkit (looked on PATH, in "
        f"${contract.ENV_ASCEND_TOOLKIT_HOME}/bin and in {atc.DEFAULT_TOOLKIT_HOME}/bin). Use a converter "
        "image with CANN installed, or point ASCEND_TOOLKIT_HOME at it; set "
        f"{contract.ENV_SIMULATOR}=1 only for testing, to write a simulated model instead"
    )


@dataclass
class AtcResult:
    returncode: int
    tail: list[str] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)
    success_line: bool = False

    @property
    def log_tail(self) -> str:
        return "\n".join(self.tail)


def run_atc(tool: AtcTool, args: Sequence[str], log: TextIO, env: Mapping[str, str] | None = None) -> AtcResult:
    """Run ATC, copying each line of its output to `log` as it comes."""
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    codes: dict[str, None] = {}
    success = False
    with subprocess.Popen(
        [*tool.argv0, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env,
        text=True,
        errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            log.write(line + "\n")
            log.flush()
            tail.append(line)
            for code in atc.extract_error_codes(line):
                codes.setdefault(code, None)
            if atc.SUCCESS_LINE in line:
                success = True
        returncode = proc.wait()
    return AtcResult(returncode=returncode, tail=list(tail), error_codes=list(codes), success_line=success)
