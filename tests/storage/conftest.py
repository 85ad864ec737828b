"""One real S3 server (moto's server mode, with authentication) on loopback for the storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3server import S3Server, running_s3_server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency")
    with running_s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The AWS environment of the test process itself (for objectstore calls in-process)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    from ascend_mlops.workloads import objectstore

    objectstore._clients.clear()
    return s3
