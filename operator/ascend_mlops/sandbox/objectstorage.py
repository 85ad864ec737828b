"""The sandbox's object storage: an embedded S3-compatible server on loopback.

An example whose `sandbox.toml` has an `[objectStorage]` table gets, for the
length of the run:

* moto's S3 server (`python -m moto.server`, the server s3fs, dask and pandas
  test against) as a child process on 127.0.0.1 and a free port, its log in
  `<dir>/logs/object-storage.log`, carrying the sandbox's process marker so
  that `sandbox down` and the sandbox's own clean-up find it too. It keeps the
  objects in memory: they are gone when the run ends;
* the buckets the table names, created empty;
* a Secret in the sandbox API with the standard keys (`AWS_ACCESS_KEY_ID`,
  `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` of the embedded server,
  `AWS_DEFAULT_REGION`, `S3_ADDRESSING_STYLE=path`), which the manifests name in
  `spec.storage.secretName`. The keys are dummies: the embedded server accepts
  any, and they are distinctive so that tests can show they never leak.

`s3://` and `obs://` URIs are both served by it (OBS speaks S3), so a copy of
the example edited for OBS still runs in the sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_mlops.api import contract
from ascend_mlops.sandbox.apiserver import free_port
from ascend_mlops.sandbox.kubelet import _set_parent_death_signal

S3Client = Any  # boto3's client (untyped)

logger = logging.getLogger(__name__)

SCHEMES = ("s3", "obs")
HOST = "127.0.0.1"  # never any other address
START_TIMEOUT = 30.0
INSTALL_HINT = "pip install 'ascend-mlops[sandbox]'"
# Dummies: the embedded server accepts any key. Distinctive, so a leak is visible.
ACCESS_KEY_ID = "SANDBOXACCESSKEY0001"
SECRET_ACCESS_KEY = "sandbox-secret-access-key-not-a-real-credential"
DEFAULT_REGION = "us-east-1"
LOG_FILE = "object-storage.log"


class ObjectStorageError(RuntimeError):
    pass


def is_object_uri(uri: str) -> bool:
    return uri.split("://", 1)[0] in SCHEMES and "://" in uri


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` (or obs://) -> ("bucket", "a/b")."""
    scheme, sep, rest = uri.partition("://")
    if scheme not in SCHEMES or not sep:
        raise ObjectStorageError(f"{uri!r} is not an s3:// or obs:// URI")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ObjectStorageError(f"{uri!r} names no bucket")
    return bucket, prefix.strip("/")


def missing_packages() -> list[str]:
    """The packages the embedded server and the uploads need that are not installed."""
    needed = {"moto": "moto[server]", "flask": "moto[server]", "flask_cors": "moto[server]", "boto3": "boto3"}
    return sorted({package for module, package in needed.items() if importlib.util.find_spec(module) is None})


def require_packages() -> None:
    missing = missing_packages()
    if missing:
        raise ObjectStorageError(
            f"this example keeps its artifacts in object storage, which the sandbox runs as an embedded "
            f"S3 server; it needs {', '.join(missing)}: {INSTALL_HINT}"
        )


@dataclass
class StorageConfig:
    """The `[objectStorage]` table of an example's sandbox.toml."""

    secret_name: str
    buckets: list[str] = field(default_factory=list)
    region: str = DEFAULT_REGION

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> StorageConfig:
        secret = str(table.get("secretName") or "")
        if not secret:
            raise ObjectStorageError(f"{where}: [objectStorage] needs secretName (the Secret the manifests name in spec.storage.secretName)")
        buckets = table.get("buckets") or []
        if isinstance(buckets, str):
            buckets = [buckets]
        return cls(secret_name=secret, buckets=[str(b) for b in buckets], region=str(table.get("region") or DEFAULT_REGION))


def secret_data(endpoint: str, region: str) -> dict[str, str]:
    """The Secret's keys, as the operator wires them into the pods."""
    return {
        contract.ENV_AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
        contract.ENV_AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
        contract.ENV_AWS_ENDPOINT_URL: endpoint,
        contract.ENV_AWS_DEFAULT_REGION: region,
        contract.ENV_S3_ADDRESSING_STYLE: "path",
    }


def secret_manifest(name: str, namespace: str, endpoint: str, region: str) -> dict[str, Any]:
    data = secret_data(endpoint, region)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "ascend-mlops-sandbox"},
            "annotations": {"ascend.mlops.dev/sandbox": "credentials of the embedded S3 server (dummies)"},
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


class EmbeddedS3:
    """moto's S3 server as a child process on loopback; `start()`, `stop()`, or `with`."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None, region: str = DEFAULT_REGION) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})  # extra environment (the sandbox's process marker)
        self.region = region
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        if not self.port:
            raise ObjectStorageError("the embedded S3 server is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / LOG_FILE

    def start(self) -> str:
        """Start the server and wait until it answers; returns its endpoint URL."""
        last = ""
        for _ in range(3):  # a free port may be taken by someone else before the server binds it
            self._launch()
            deadline = time.monotonic() + START_TIMEOUT
            try:
                while not self._answers(deadline):
                    time.sleep(0.1)
                return self.endpoint
            except ObjectStorageError as e:
                last = str(e)
                self.stop()
        raise ObjectStorageError(f"the embedded S3 server did not start: {last}; see {self.log_path}")

    async def astart(self) -> str:
        """`start()` for an event loop: the process is started from the loop's thread (its
        parent-death signal follows the thread that forks), the waiting does not block."""
        last = ""
        for _ in range(3):
            self._launch()
            deadline = time.monotonic() + START_TIMEOUT
            try:
                while not await asyncio.to_thread(self._answers, deadline):
                    await asyncio.sleep(0.1)
                return self.endpoint
            except ObjectStorageError as e:
                last = str(e)
                self.stop()
        raise ObjectStorageError(f"the embedded S3 server did not start: {last}; see {self.log_path}")

    def _launch(self) -> None:
        require_packages()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}  # it needs none of the user's
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_set_parent_death_signal, cwd=self.log_dir,
            )

    def _answers(self, deadline: float) -> bool:
        """One probe: True once the server answers; raises when it exited or the deadline passed."""
        import urllib.error
        import urllib.request

        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
            raise ObjectStorageError(f"it exited with code {self.process.returncode}: {' | '.join(tail)}")
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise ObjectStorageError(f"it did not answer on {self.endpoint} within {START_TIMEOUT:.0f}s") from None
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> EmbeddedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ client side
    def client(self) -> S3Client:
        return client_for(self.endpoint, self.region)

    def create_buckets(self, buckets: list[str]) -> None:
        s3 = self.client()
        for bucket in dict.fromkeys(buckets):
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                s3.create_bucket(**kwargs)
            except s3.exceptions.BucketAlreadyOwnedByYou:
                pass

    def objects(self, uri: str) -> dict[str, int]:
        """`s3://bucket/key` -> size for every object under the URI's prefix (a folder or one object)."""
        bucket, prefix = split_uri(uri)
        scheme = uri.split("://", 1)[0]
        s3 = self.client()
        found: dict[str, int] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents") or []:
                key = str(item["Key"])
                if not prefix or key == prefix or key.startswith(prefix.rstrip("/") + "/"):
                    found[f"{scheme}://{bucket}/{key}"] = int(item["Size"])
        return found


def client_for(endpoint: str, region: str) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region,
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


@contextlib.contextmanager
def storage_env(endpoint: str, region: str) -> Iterator[None]:
    """This process's AWS_* environment set to the embedded server's (for the shared upload code)."""
    values = secret_data(endpoint, region)
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def upload_dataset(
    endpoint: str, region: str, source: Path, uri: str, progress: Callable[[str], None] = print,
) -> int:
    """Upload a dataset folder (class sub-folders; symlinks followed) to `uri`; returns the number of files.

    Through the workloads' own object-storage module (what `train --data s3://...`
    downloads with), so the dataset gets its manifest, which the trainer verifies.
    """
    from ascend_mlops.workloads import objectstore

    started = time.monotonic()
    try:
        with storage_env(endpoint, region):
            document = objectstore.upload_directory(source, uri, what=f"the dataset {source}")
    except objectstore.StorageError as e:
        raise ObjectStorageError(f"uploading the dataset from {source} to {uri} failed: {e.message}") from None
    files = document.get("files") or []
    total = sum(int(f.get("size", 0)) for f in files)
    progress(f"uploaded {len(files)} files ({total / 1e6:.1f} MB) to {uri} in {time.monotonic() - started:.1f}s")
    return len(files)
