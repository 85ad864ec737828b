"""Fixtures: a short device-plugins directory (unix socket paths are limited to 107 bytes) and a test kubelet."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="the device plugin needs the deviceplugin extra (grpcio)")

from tests.deviceplugin.kubelet import TestKubelet  # noqa: E402


@pytest.fixture
def plugin_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def kubelet(plugin_dir: Path) -> AsyncIterator[TestKubelet]:
    kubelet = TestKubelet(plugin_dir)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()
