"""Run `ascend-mlops serve` as a real subprocess and talk to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ascend_mlops.api import contract
from tests.helpers import wait_for

_LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
_METRICS = re.compile(r"metrics on http://[^:]+:(\d+)/")


class ServerProcess:
    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        full_env.pop(contract.ENV_SIMULATOR, None)
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ascend_mlops", contract.CMD_SERVE, *args,
             contract.FLAG_HOST, "127.0.0.1", contract.FLAG_PORT, "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self.metrics_port: int | None = None  # with --metrics-port
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
            match = _METRICS.search(line)
            if match and self.metrics_port is None:
                self.metrics_port = int(match.group(1))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait_ready(self, timeout: float = 120) -> ServerProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log[-3000:]}")
            return self.port is not None and self.status(contract.HEALTH_READY_PATH) == 200

        wait_for(ready, timeout=timeout, what=f"server ready\n{self.log[-2000:]}")
        return self

    def wait_exit(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def post_image(
    url: str, data: bytes, filename: str = "image.jpg", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST / as multipart/form-data with the file field `images` (what curl -F does)."""
    boundary = "ascendmlopsboundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url + "/", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def om_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent
