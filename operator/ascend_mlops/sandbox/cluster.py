"""One sandbox: the embedded API, the local kubelet and the real operator, started and stopped together.

The operator runs as its own process (`ascend-mlops operator`) with a kubeconfig
that points at the embedded API, exactly as it would against a cluster. Every
process the sandbox starts carries `ASCEND_MLOPS_SANDBOX=<folder>` in its
environment, runs in its own process group, and is killed when the sandbox
stops (or, on Linux, when the sandbox process dies).

State lives in the sandbox folder: `kubeconfig`, `state.json` (pid, API URL),
`logs/operator.log`, `pods/<ns>/<pod>/<container>.log`, and `data/` (volumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ascend_mlops.api import contract
from ascend_mlops.sandbox import scheduling
from ascend_mlops.sandbox.apiserver import APIServer, default_crd_dirs, free_port
from ascend_mlops.sandbox.kubelet import (
    Kubelet,
    KubeletConfig,
    _set_parent_death_signal,
    allowed_images_from_settings,
)

logger = logging.getLogger(__name__)

ENV_SANDBOX = "ASCEND_MLOPS_SANDBOX"
ENV_SANDBOX_DIR = "ASCEND_MLOPS_SANDBOX_DIR"
STATE_FILE = "state.json"
OPERATOR_START_TIMEOUT = 90.0


class SandboxError(RuntimeError):
    pass


def default_root() -> Path:
    """$ASCEND_MLOPS_SANDBOX_DIR, else $XDG_STATE_HOME/ascend-mlops/sandbox (~/.local/state/...)."""
    if os.environ.get(ENV_SANDBOX_DIR):
        return Path(os.environ[ENV_SANDBOX_DIR]).expanduser().resolve()
    state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return (state_home / "ascend-mlops" / "sandbox").resolve()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_state(root: Path) -> dict[str, Any] | None:
    """The state of a sandbox that is up in `root`, or None."""
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not pid_alive(int(state.get("pid", 0))):
        return None
    return state


def sandbox_processes(root: Path) -> list[int]:
    """Pids of live processes started by the sandbox in `root` (found by their environment marker)."""
    marker = f"{ENV_SANDBOX}={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@dataclass
class SandboxConfig:
    root: Path = field(default_factory=default_root)
    npus: int = 4
    run_operator: bool = True
    operator_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "ascend_mlops", contract.CMD_OPERATOR])
    crd_dirs: tuple[Path, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # extra settings for the operator (ASCEND_MLOPS_*)


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.root = config.root
        self.api: APIServer | None = None
        self.kubelet: Kubelet | None = None
        self.operator: asyncio.subprocess.Process | None = None
        self.health_port = 0

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    def settings_env(self) -> dict[str, str]:
        """The operator's settings as the sandbox runs it: simulator on, all namespaces."""
        env = {"ASCEND_MLOPS_SIMULATOR": "1", "ASCEND_MLOPS_NAMESPACES": ""}
        for key, value in os.environ.items():
            if key.startswith("ASCEND_MLOPS_") and key not in (ENV_SANDBOX, ENV_SANDBOX_DIR):
                env.setdefault(key, value)
        env.update(self.config.env)
        return env

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        existing = read_state(self.root)
        if existing is not None:
            raise SandboxError(
                f"a sandbox is already running in {self.root} (pid {existing['pid']}, API {existing.get('api')}); "
                f"stop it with `ascend-mlops sandbox down --dir {self.root}` or pick another --dir"
            )
        crd_dirs = self.config.crd_dirs if self.config.crd_dirs is not None else default_crd_dirs()
        if not crd_dirs:
            raise SandboxError(
                "the CustomResourceDefinitions were not found (looked for a crds/ folder above the package); "
                "run from a source checkout or an editable install"
            )
        (self.root / "logs").mkdir(exist_ok=True)
        settings_env = self.settings_env()
        try:
            allowed = allowed_images_from_settings(settings_env)
        except ValueError as e:
            raise SandboxError(str(e)) from None
        self.api = APIServer(crd_dirs=crd_dirs)
        await self.api.start()
        self.api.write_kubeconfig(self.kubeconfig)
        self.kubelet = Kubelet(
            KubeletConfig(
                api_url=self.api.url, root=self.root, allowed_images=allowed,
                nodes=scheduling.default_nodes(self.config.npus),
                extra_env={ENV_SANDBOX: str(self.root), contract.ENV_SIMULATOR: "1"},
            )
        )
        self.api.handler.log_reader = self.kubelet.log_path
        await self.kubelet.start()
        if self.config.run_operator:
            await self._start_operator(settings_env)
        self._write_state()

    async def _start_operator(self, settings_env: Mapping[str, str]) -> None:
        self.health_port = free_port()
        env = dict(os.environ)
        env.update(settings_env)
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "ASCEND_MLOPS_HEALTH_PORT": str(self.health_port),
            "ASCEND_MLOPS_METRICS_PORT": str(free_port()),
            ENV_SANDBOX: str(self.root),
            "PYTHONUNBUFFERED": "1",
        })
        log = (self.root / "logs" / "operator.log").open("ab")
        try:
            self.operator = await asyncio.create_subprocess_exec(
                *self.config.operator_command, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                preexec_fn=_set_parent_death_signal, cwd=self.root,
            )
        finally:
            log.close()
        await self._wait_operator()

    async def _wait_operator(self) -> None:
        """Until the operator's liveness endpoint answers (or it exits, which is an error)."""
        assert self.operator is not None
        deadline = time.monotonic() + OPERATOR_START_TIMEOUT
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.operator.returncode is not None:
                    tail = self.operator_log_tail()
                    raise SandboxError(f"the operator exited with code {self.operator.returncode}:\n{tail}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status < 500:
                            return
                await asyncio.sleep(0.3)
        logger.warning("the operator's liveness endpoint %s did not answer in %.0fs; continuing", url, OPERATOR_START_TIMEOUT)

    def operator_log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / "logs" / "operator.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "api": self.url,
            "kubeconfig": str(self.kubeconfig),
            "root": str(self.root),
            "operatorPid": self.operator.pid if self.operator else None,
            "started": time.time(),
        }
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2))

    async def stop(self) -> None:
        """Stop everything; nothing the sandbox started keeps running."""
        if self.operator is not None and self.operator.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.operator.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.operator.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.operator.pid, signal.SIGKILL)
                await self.operator.wait()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self.api is not None:
            await self.api.stop()
        for pid in sandbox_processes(self.root):  # whatever escaped its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            state = json.loads((self.root / STATE_FILE).read_text())
            if state.get("pid") == os.getpid():
                (self.root / STATE_FILE).unlink()

    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def service_url(self, namespace: str, name: str) -> str | None:
        return self.kubelet.proxy.url(namespace, name) if self.kubelet else None
