"""The built wheel, installed into a fresh venv (not -e), runs `ascend-mlops sandbox up/status/down`.

SLOW (about a minute, most of it pip): builds the wheel with `pip wheel`,
makes a venv without this checkout's packages, installs the wheel and its
runtime dependencies from the package index (pip's wheel cache makes repeat
runs quick), and drives the sandbox from a folder outside the checkout, so
the CRDs can only come from inside the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CRDS = REPO_ROOT / "crds"


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    print(f"{time.monotonic() - started:6.1f}s  {' '.join(args[:4])}")
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(REPO_ROOT)], REPO_ROOT, env)
    (built,) = dist.glob("ascend_mlops-*.whl")
    return built


def test_the_wheel_carries_the_crds_exactly_as_in_crds(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("ascend_mlops/crds/") and name.endswith(".yaml")
        }
        names = set(archive.namelist())
    assert shipped == {path.name: path.read_bytes() for path in CRDS.glob("*.yaml")}
    # The device plugin's messages and their source ship too.
    assert {"ascend_mlops/ascend/deviceplugin/api_pb2.py", "ascend_mlops/ascend/deviceplugin/api.proto"} <= names


def test_an_installed_wheel_runs_the_sandbox(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "ASCEND_MLOPS_SANDBOX_DIR"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], tmp_path, env)
    # Nothing of this checkout is importable in the venv: the package is the installed one.
    where = run([str(python), "-c", "import ascend_mlops; print(ascend_mlops.__file__)"], tmp_path, env).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    cli = str(venv / "bin" / "ascend-mlops")
    sandbox = tmp_path / "sandbox"
    try:
        up = run([cli, "sandbox", "up", "--detach", "--dir", str(sandbox), "--npus", "2"], tmp_path, env, timeout=240)
        assert "sandbox up in" in up.stdout
        status = run([cli, "sandbox", "status", "--dir", str(sandbox)], tmp_path, env, timeout=120)
        assert "huawei.com/Ascend310=2" in status.stdout
        assert "resources:" in status.stdout  # listing the four kinds needs their CRDs
        assert (sandbox / "kubeconfig").is_file()
    finally:
        started = time.monotonic()
        down = subprocess.run(
            [cli, "sandbox", "down", "--dir", str(sandbox)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        print(f"{time.monotonic() - started:6.1f}s  ascend-mlops sandbox down")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert not (sandbox / "state.json").exists()
