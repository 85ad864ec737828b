"""The sandbox's embedded S3 server, its buckets, the dataset upload and the Secret (no operator)."""

from __future__ import annotations

import base64
import importlib.util
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from ascend_mlops.sandbox import objectstorage
from ascend_mlops.sandbox.cluster import ENV_SANDBOX, pid_alive, sandbox_processes
from ascend_mlops.sandbox.flow import (
    Example,
    ExampleRun,
    FlowError,
    Report,
    RunOptions,
    object_summary,
)
from tests.helpers import REPO_ROOT, make_dataset

pytestmark = pytest.mark.skipif(bool(objectstorage.missing_packages()), reason="moto[server] and boto3 are not installed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[objectstorage.EmbeddedS3]:
    root = tmp_path / "sandbox"
    with objectstorage.EmbeddedS3(root / "logs", env={ENV_SANDBOX: str(root)}, region="cn-north-4") as running:
        yield running


def test_the_server_listens_on_loopback_only_and_stops_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    s3 = objectstorage.EmbeddedS3(root / "logs", env={ENV_SANDBOX: str(root)})
    endpoint = s3.start()
    process = s3.process
    assert process is not None
    url = urllib.parse.urlsplit(endpoint)
    assert (url.scheme, url.hostname) == ("http", "127.0.0.1") and url.port == s3.port
    # The process carries the sandbox's marker, so `sandbox down` finds it too.
    assert process.pid in sandbox_processes(root)
    assert (root / "logs" / objectstorage.LOG_FILE).is_file()
    s3.create_buckets(["alpha", "alpha", "beta"])  # twice is harmless
    assert sorted(b["Name"] for b in s3.client().list_buckets()["Buckets"]) == ["alpha", "beta"]
    s3.stop()
    assert not pid_alive(process.pid) and s3.process is None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", url.port or 0)) != 0, "nothing listens after stop()"
    s3.stop()  # twice is harmless


def test_the_dataset_is_uploaded_below_the_prefix(server: objectstorage.EmbeddedS3, tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "ds", classes=("a", "b"), per_class=3, size=16)
    link = tmp_path / "linked"  # a --max-per-class subset is made of symlinks: they are followed
    (link / "a").mkdir(parents=True)
    (link / "a" / "one.jpg").symlink_to(next((dataset / "a").iterdir()))
    server.create_buckets(["flowers"])
    count = objectstorage.upload_dataset(server.endpoint, server.region, dataset, "s3://flowers/datasets/flowers", progress=lambda _: None)
    assert count == 6
    objectstorage.upload_dataset(server.endpoint, server.region, link, "obs://flowers/linked/", progress=lambda _: None)
    listing = server.objects("s3://flowers/datasets/flowers")
    keys = sorted(key.removeprefix("s3://flowers/datasets/flowers/") for key in listing)
    assert [k for k in keys if k != "manifest.json"] == sorted(f"{p.parent.name}/{p.name}" for p in dataset.rglob("*.jpg"))
    assert all(size > 0 for size in listing.values())
    assert "obs://flowers/linked/a/one.jpg" in server.objects("obs://flowers/linked")
    # A prefix is a folder: datasets/flowers does not match datasets/flowers-other.
    server.client().put_object(Bucket="flowers", Key="datasets/flowers-other/x", Body=b"x")
    assert not any("flowers-other" in key for key in server.objects("s3://flowers/datasets/flowers"))


def test_an_upload_to_a_missing_bucket_is_a_clear_error(server: objectstorage.EmbeddedS3, tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "ds", classes=("a", "b"), per_class=1, size=8)
    with pytest.raises(objectstorage.ObjectStorageError, match="s3://nowhere/x"):
        objectstorage.upload_dataset(server.endpoint, server.region, dataset, "s3://nowhere/x", progress=lambda _: None)


def test_the_secret_has_the_standard_keys_and_the_servers_endpoint() -> None:
    manifest = objectstorage.secret_manifest("store", "ns", "http://127.0.0.1:1234", "cn-north-4")
    assert (manifest["kind"], manifest["metadata"]["name"], manifest["metadata"]["namespace"]) == ("Secret", "store", "ns")
    data = {key: base64.b64decode(value).decode() for key, value in manifest["data"].items()}
    assert set(contract.STORAGE_SECRET_REQUIRED_KEYS) <= set(data)
    assert data[contract.ENV_AWS_ENDPOINT_URL] == "http://127.0.0.1:1234"
    assert data[contract.ENV_AWS_DEFAULT_REGION] == "cn-north-4"
    assert data[contract.ENV_S3_ADDRESSING_STYLE] == "path"
    assert objectstorage.SECRET_ACCESS_KEY not in str(manifest["metadata"])


def test_without_moto_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "moto" else real(name, *a))
    with pytest.raises(objectstorage.ObjectStorageError, match=r"pip install 'ascend-mlops\[sandbox\]'"):
        objectstorage.EmbeddedS3(tmp_path).start()


def test_uris_split_into_bucket_and_prefix() -> None:
    assert objectstorage.split_uri("s3://b/a/b/") == ("b", "a/b")
    assert objectstorage.split_uri("obs://b") == ("b", "")
    assert objectstorage.is_object_uri("obs://b/x") and not objectstorage.is_object_uri("pvc://c/x")
    with pytest.raises(objectstorage.ObjectStorageError):
        objectstorage.split_uri("pvc://c/x")


def test_the_flowers_obs_example_declares_its_storage() -> None:
    example = Example.load(REPO_ROOT / "examples" / "flowers-obs")
    storage = example.storage()
    assert storage is not None
    assert storage.secret_name == "flowers-obs-storage" and storage.buckets[0] == "flowers"
    # Every resource names that Secret, and every URI is in the bucket.
    for doc in example.manifests:
        assert doc["spec"]["storage"]["secretName"] == storage.secret_name, doc["kind"]
    job = next(d for d in example.manifests if d["kind"] == "TrainingJob")
    assert job["spec"]["dataset"]["uri"] == example.config["dataset"]["uri"]
    assert job["spec"]["dataset"]["uri"].startswith("s3://flowers/") and job["spec"]["output"]["uri"].startswith("s3://flowers/")
    assert Example.load(REPO_ROOT / "examples" / "flowers").storage() is None


def test_an_object_dataset_without_object_storage_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ex"
    folder.mkdir()
    (folder / "sandbox.toml").write_text('[dataset]\nuri = "s3://b/x"\n[profiles.quick]\n')
    run = ExampleRun(client=None, root=tmp_path / "sandbox", options=RunOptions(example=folder))  # type: ignore[arg-type]
    with pytest.raises(FlowError, match=r"no \[objectStorage\] table"):
        run.prepare_dataset(Example.load(folder))
    (folder / "sandbox.toml").write_text('[objectStorage]\nbuckets = ["b"]\n')
    with pytest.raises(FlowError, match="needs secretName"):
        Example.load(folder).storage()


def test_the_report_summarises_what_is_under_each_artifact() -> None:
    report = Report(objects={"s3://b/r/V001/frozen_graph/frozen_graph.pb": 2_000_000, "s3://b/r/V001/labels.txt": 20})
    assert object_summary(report, "s3://b/r/V001/frozen_graph") == "1 object, 2.0 MB"
    assert object_summary(report, "obs://b/r/V001") == "2 objects, 2.0 MB"
    assert object_summary(report, "s3://b/r/V002") == "MISSING from the embedded bucket"
