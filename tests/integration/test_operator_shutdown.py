"""`ascend-mlops operator` exits within 5 s of SIGTERM whatever state its API server is in.

The operator (a subprocess, as in a pod) talks to the API through a TCP proxy
that the test can turn into each bad state: gone (connections reset, new ones
refused), hung (connections accepted, nothing forwarded: watch streams and
requests wait forever), holding the operator's first write (a reconcile in
progress whose POST never gets an answer), and gone before the operator ever
reached it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Backend, Cluster, eventually
from tests.integration.proxy import proxied
from tests.integration.test_entrypoints import environment, spawn
from tests.integration.test_training import job

BUDGET = 5.0  # seconds from SIGTERM to exit (issue 15)


async def start_operator(proxy_url: str, backend: Backend, tmp_path: Path) -> tuple[asyncio.subprocess.Process, Path]:
    env = environment(backend, tmp_path, ASCEND_MLOPS_METRICS_PORT="0", ASCEND_MLOPS_HEALTH_PORT="0")
    env["KUBECONFIG"] = str(backend.write_kubeconfig(tmp_path / "proxied-kubeconfig", server=proxy_url))
    log = tmp_path / "operator.log"
    process = await spawn([sys.executable, "-m", "ascend_mlops", "operator", "--namespace", backend.namespace], env, log)
    return process, log


async def watching(log: Path) -> bool:
    """The operator is up: its startup ran and it has opened its watch streams."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "Activity 'startup' succeeded" in text and "Initial authentication has finished" in text


async def retrying(log: Path, since: int = 0) -> bool:
    """Kopf retries a failed request with back-off (its "Request attempt" line), past `since` bytes of the log."""
    return log.exists() and "Request attempt" in log.read_bytes()[since:].decode(errors="replace")


async def sigterm_seconds(process: asyncio.subprocess.Process, log: Path) -> float:
    """Send SIGTERM; the seconds until the process exited (fails the test past 20 s or on a bad exit code)."""
    assert process.returncode is None, log.read_text(errors="replace")[-3000:]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the operator ignored SIGTERM for 20 s:\n" + log.read_text(errors="replace")[-3000:]) from None
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code}:\n" + log.read_text(errors="replace")[-3000:]
    return elapsed


async def test_exits_promptly_when_the_api_server_is_gone(backend: Backend, tmp_path: Path) -> None:
    async with proxied(backend.sandbox or backend.url) as proxy:
        process, log = await start_operator(proxy.url, backend, tmp_path)
        await eventually(lambda: watching(log), timeout=60, what="operator watching")
        offset = log.stat().st_size
        await proxy.go_away()
        # Retries with back-off are under way.
        await eventually(lambda: retrying(log, offset), timeout=60, what="the operator retrying the API that went away")
        elapsed = await sigterm_seconds(process, log)
    assert elapsed <= BUDGET, f"{elapsed:.1f}s"


async def test_exits_promptly_when_the_api_server_was_never_there(backend: Backend, tmp_path: Path) -> None:
    async with proxied(backend.sandbox or backend.url) as proxy:
        url = proxy.url
        await proxy.go_away()
        process, log = await start_operator(url, backend, tmp_path)
        await eventually(lambda: retrying(log), timeout=60, what="the operator retrying an unreachable API")
        elapsed = await sigterm_seconds(process, log)
    assert elapsed <= BUDGET, f"{elapsed:.1f}s"


async def test_exits_promptly_with_hung_watch_streams(backend: Backend, tmp_path: Path) -> None:
    async with proxied(backend.sandbox or backend.url) as proxy:
        process, log = await start_operator(proxy.url, backend, tmp_path)
        await eventually(lambda: watching(log), timeout=60, what="operator watching")
        proxy.hung = True  # open connections stay open, nothing more arrives
        # Kept: a hung API has no event to wait for (nothing flows either way while nothing
        # changes); these 2 s are the operator living with it before the SIGTERM.
        await asyncio.sleep(2)
        elapsed = await sigterm_seconds(process, log)
    assert elapsed <= BUDGET, f"{elapsed:.1f}s"


@pytest.mark.sandbox_only("the proxy must read the operator's POST to hold it: plain HTTP to the sandbox, TLS to a real apiserver")
async def test_exits_promptly_in_the_middle_of_a_reconcile(backend: Backend, cluster: Cluster, tmp_path: Path) -> None:
    async with proxied(backend.sandbox or backend.url) as proxy:
        process, log = await start_operator(proxy.url, backend, tmp_path)
        await eventually(lambda: watching(log), timeout=60, what="operator watching")
        proxy.hold_writes = True
        await cluster.create(job())  # the operator reconciles it and POSTs its first pod: held forever
        await asyncio.wait_for(proxy.held.wait(), 60)
        elapsed = await sigterm_seconds(process, log)
    assert elapsed <= BUDGET, f"{elapsed:.1f}s"
    # The held write never reached the API: the next operator finds nothing half-made.
    assert await cluster.pod("flowers-worker-0") is None


async def test_sigint_takes_the_same_path(backend: Backend, tmp_path: Path) -> None:
    async with proxied(backend.sandbox or backend.url) as proxy:
        process, log = await start_operator(proxy.url, backend, tmp_path)
        await eventually(lambda: watching(log), timeout=60, what="operator watching")
        await proxy.go_away()
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 20)
    assert time.monotonic() - started <= BUDGET
    assert code == 0, log.read_text(errors="replace")[-3000:]
