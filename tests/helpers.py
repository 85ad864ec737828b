"""Test helpers shared by every test package: tiny learnable datasets, waiting with deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real photos (five classes, 128x128) shipped beside the repository, read-only.
FLOWERS_DIR = Path(os.environ.get("ASCEND_MLOPS_FLOWERS", REPO_ROOT.parent / "shared" / "data" / "flowers"))

# The Gateway API's own CRDs, a pinned copy (tests/vendor/gateway-api-v1.6.1/README.md).
GATEWAY_API_DIR = REPO_ROOT / "tests" / "vendor" / "gateway-api-v1.6.1"

T = TypeVar("T")


def gateway_api_crds() -> list[dict[str, Any]]:
    """GatewayClass, Gateway and HTTPRoute CRDs of the pinned Gateway API release, checked against SHA256SUMS."""
    crds = []
    for line in (GATEWAY_API_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        data = (GATEWAY_API_DIR / name).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise AssertionError(f"{GATEWAY_API_DIR / name}: sha256 {actual}, SHA256SUMS says {digest}")
        crds.append(dict(yaml.safe_load(data)))
    return crds


def make_dataset(
    root: Path,
    classes: Sequence[str] = ("circle", "square", "stripes"),
    per_class: int = 12,
    size: int = 32,
    seed: int = 0,
    fmt: str = "JPEG",
) -> Path:
    """Write a folder-per-class dataset whose classes are easy to tell apart.

    Each class has its own base colour and pattern; noise makes images distinct.
    """
    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 40), (180, 60, 200)]
    yy, xx = np.mgrid[0:size, 0:size]
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array(palette[index % len(palette)], dtype=np.float32)
        for n in range(per_class):
            img = np.full((size, size, 3), 30.0, dtype=np.float32)
            if index % 3 == 0:
                mask = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2
            elif index % 3 == 1:
                mask = (abs(xx - size / 2) < size / 3) & (abs(yy - size / 2) < size / 3)
            else:
                mask = (xx // max(size // 8, 1)) % 2 == 0
            img[mask] = colour
            img += rng.normal(0, 12, img.shape)
            pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            ext = "jpg" if fmt == "JPEG" else fmt.lower()
            pil.save(folder / f"{name}_{n:03d}.{ext}", fmt)
    return root


def wait_for(predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll `predicate` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 15.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
    show_last: bool = True,
) -> T:
    """Await `probe` until it returns something truthy, and return that; fail after `timeout` seconds.

    The one asynchronous poll of the test suite (`wait_for` is its synchronous twin). Each
    caller passes the deadline it needs; `show_last=False` keeps the last value out of the
    failure message (a probe whose value may hold a secret).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: T | None = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    if not show_last:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def run_cli(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 900, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `ascend-mlops ARGS` in a subprocess (the real entry point) and capture its output."""
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ascend_mlops", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
