"""The operator's entry points as users start them: `ascend-mlops operator` and `kopf run -m ascend_mlops.main`,
in a subprocess against the API, with the liveness and metrics endpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import Backend, Cluster, eventually
from tests.integration.test_training import job


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spawn(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode or 0


async def http_get(url: str) -> tuple[int, str] | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return None


def environment(backend: Backend, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(backend.write_kubeconfig(tmp_path / "kubeconfig"))
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(extra)
    return env


async def test_ascend_mlops_operator_runs_with_liveness_and_metrics(
    backend: Backend, cluster: Cluster, tmp_path: Path
) -> None:
    health, metrics_port = free_port(), free_port()
    env = environment(
        backend, tmp_path, ASCEND_MLOPS_HEALTH_PORT=str(health), ASCEND_MLOPS_METRICS_PORT=str(metrics_port)
    )
    log = tmp_path / "operator.log"
    process = await spawn([sys.executable, "-m", "ascend_mlops", "operator", "--namespace", backend.namespace], env, log)
    try:
        await cluster.create(job())
        await eventually(lambda: cluster.pod("flowers-worker-0"), timeout=60, what="pod created by the subprocess")
        status, body = await eventually(lambda: http_get(f"http://127.0.0.1:{health}/healthz"), what="liveness")
        assert status == 200
        _, text = await eventually(lambda: http_get(f"http://127.0.0.1:{metrics_port}/metrics"), what="metrics")
        assert 'ascend_mlops_reconciles_total{kind="TrainingJob",result="ok"}' in text
        assert 'ascend_mlops_resources{kind="TrainingJob",phase="Pending"} 1.0' in text
        assert "ascend_mlops_reconcile_duration_seconds_bucket" in text
    finally:
        code = await stop(process)
    assert code == 0, log.read_text()[-3000:]


async def test_kopf_run_module(backend: Backend, cluster: Cluster, tmp_path: Path) -> None:
    env = environment(backend, tmp_path, ASCEND_MLOPS_METRICS_PORT="0")
    log = tmp_path / "kopf.log"
    process = await spawn(
        [sys.executable, "-m", "kopf", "run", "-A", "-m", "ascend_mlops.main"], env, log
    )
    try:
        await cluster.create(job())
        await eventually(lambda: cluster.pod("flowers-worker-0"), timeout=60, what="pod created by kopf run")
    finally:
        await stop(process)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ASCEND_MLOPS_DRIVER_MOUNTS", "privileged"), ("ASCEND_MLOPS_ACCELERATOR_NODE_SELECTOR", "accelerator")],
)
def test_bad_settings_fail_fast(variable: str, value: str) -> None:
    env: dict[str, Any] = {**os.environ, variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "ascend_mlops", "operator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert variable in result.stderr and value in result.stderr
