"""`ascend-mlops sandbox up --detach`, `status`, `down` through the real entry point (no operator, no TensorFlow)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from ascend_mlops.sandbox.cluster import pid_alive, read_state, sandbox_processes
from tests.helpers import REPO_ROOT, run_cli


def test_up_detached_status_and_down(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    up = run_cli(["sandbox", "up", "--detach", "--no-operator", "--dir", str(root)], timeout=240, cwd=REPO_ROOT)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"kubeconfig: {root / 'kubeconfig'}" in up.stdout
        state = read_state(root)
        assert state is not None and pid_alive(state["pid"])
        with urllib.request.urlopen(state["api"] + "/api/v1/nodes", timeout=10) as response:
            nodes = {n["metadata"]["name"] for n in json.loads(response.read())["items"]}
        assert nodes == {"sandbox-cpu-0", "sandbox-ascend310-0"}

        again = run_cli(["sandbox", "up", "--detach", "--dir", str(root)], timeout=60)
        assert again.returncode == 0 and "already up" in again.stdout

        status = run_cli(["sandbox", "status", "--dir", str(root)], timeout=60)
        assert status.returncode == 0, status.stderr
        assert "sandbox-ascend310-0  huawei.com/Ascend310=4" in status.stdout
    finally:
        down = run_cli(["sandbox", "down", "--dir", str(root)], timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
    assert read_state(root) is None
    assert sandbox_processes(root) == []
    after = run_cli(["sandbox", "status", "--dir", str(root)], timeout=60)
    assert after.returncode == 3 and "no sandbox is running" in after.stdout


def test_run_names_a_missing_example_file(tmp_path: Path) -> None:
    result = run_cli(["sandbox", "run", str(tmp_path), "--dir", str(tmp_path / "sb"), "--exit-after-predict"], timeout=120)
    assert result.returncode == 1
    assert "has no sandbox.toml" in result.stderr
    assert sandbox_processes(tmp_path / "sb") == []
