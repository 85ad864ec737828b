"""`ascend-mlops device-plugin` as a process: refuses without --simulated, registers, exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.deviceplugin.kubelet import TestKubelet
from tests.helpers import run_cli


def test_refuses_to_start_without_simulated() -> None:
    result = run_cli(["device-plugin", "--devices", "4"], timeout=60)
    assert result.returncode == 2
    assert "--simulated" in result.stderr
    assert "Huawei's Ascend device plugin" in result.stderr


def test_bad_flags_are_refused_before_anything_starts(plugin_dir: Path) -> None:
    result = run_cli(
        ["device-plugin", "--simulated", "--devices", "0", "--device-plugin-dir", str(plugin_dir)], timeout=60
    )
    assert result.returncode == 2
    assert "--devices 0" in result.stderr
    assert not list(plugin_dir.iterdir())


async def test_the_command_registers_and_shuts_down_cleanly_on_sigterm(plugin_dir: Path, kubelet: TestKubelet) -> None:
    log = plugin_dir.parent / f"{plugin_dir.name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "ascend_mlops", "device-plugin", "--simulated", "--devices", "2",
                "--device-plugin-dir", str(plugin_dir), "--watch-interval", "0.05",
            ],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        connection = await kubelet.wait(
            lambda: kubelet.plugins.get("huawei.com/Ascend310"), timeout=60, what="the command's registration"
        )
        await kubelet.wait(lambda: connection.lists, what="its device list")
        assert connection.lists[0] == {"Ascend310-0": "Healthy", "Ascend310-1": "Healthy"}
        response = await kubelet.allocate(["Ascend310-1"])
        assert response.container_responses[0].envs["ASCEND_VISIBLE_DEVICES"] == "1"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        await kubelet.wait(lambda: connection.stream_ended, what="ListAndWatch to end")
        assert not (plugin_dir / "Ascend310-simulated.sock").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        text = log.read_text()
        log.unlink()
    assert "SIMULATED Ascend device plugin" in text
    assert "registered huawei.com/Ascend310" in text
