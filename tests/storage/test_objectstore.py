"""objectstore against a real S3 server on loopback: transfers, manifests, version claims, errors."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from pathlib import Path

import pytest

from ascend_mlops.workloads import objectstore
from tests.s3server import S3Server, free_port


def _bucket(s3: S3Server) -> str:
    return s3.make_bucket(f"t-{uuid.uuid4().hex[:10]}")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_upload_then_download_round_trip_with_manifest_last(s3_env: S3Server, tmp_path: Path) -> None:
    bucket = _bucket(s3_env)
    src = tmp_path / "src"
    for rel, size in {"a/one.bin": 10, "a/b/two.bin": 3_000_000, "three.txt": 0}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(bytes(i % 251 for i in range(size)))
    target = objectstore.parse(f"s3://{bucket}/runs/x")
    document = objectstore.upload_directory(src, target)
    assert [f["path"] for f in document["files"]] == ["a/b/two.bin", "a/one.bin", "three.txt"]
    assert s3_env.keys(bucket) == sorted(
        ["runs/x/a/b/two.bin", "runs/x/a/one.bin", "runs/x/three.txt", "runs/x/manifest.json"]
    )
    assert objectstore.read_manifest(target) == json.loads(s3_env.client().get_object(Bucket=bucket, Key="runs/x/manifest.json")["Body"].read())
    local = objectstore.fetch_input(target, tmp_path / "dst", what="test")
    assert _tree(local) == _tree(src)  # manifest not copied, every byte equal

    # One object: a file named after it.
    single = objectstore.fetch_input(target.join("a/one.bin"), tmp_path / "single", what="test")
    assert single.name == "one.bin" and single.read_bytes() == (src / "a/one.bin").read_bytes()


def test_a_changed_object_fails_the_manifest_check(s3_env: S3Server, tmp_path: Path) -> None:
    bucket = _bucket(s3_env)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.om").write_bytes(b"x" * 100)
    target = objectstore.parse(f"s3://{bucket}/m")
    objectstore.upload_directory(src, target)
    s3_env.client().put_object(Bucket=bucket, Key="m/model.om", Body=b"y" * 100)
    with pytest.raises(objectstore.StorageRefused, match="SHA-256 differs"):
        objectstore.fetch_input(target, tmp_path / "dst", what="test")


def test_a_version_without_manifest_is_refused_by_readers(s3_env: S3Server, tmp_path: Path) -> None:
    bucket = _bucket(s3_env)
    s3_env.client().put_object(Bucket=bucket, Key="out/V001/frozen_graph/frozen_graph.pb", Body=b"partial")
    root = objectstore.parse(f"s3://{bucket}/out")
    assert objectstore.versions(root) == ["V001"]
    assert objectstore.complete_versions(root) == []
    with pytest.raises(objectstore.StorageRefused, match="V001 has no manifest.json") as caught:
        objectstore.fetch_input(root.join("V001/frozen_graph"), tmp_path, what="--input")
    assert caught.value.code == "IncompleteVersion"


def test_concurrent_claims_never_share_a_number(s3_env: S3Server) -> None:
    bucket = _bucket(s3_env)
    root = objectstore.parse(f"s3://{bucket}/runs")
    claims = [objectstore.VersionClaim(root) for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda c: c.claim(), claims))
    assert len(set(names)) == 8, names
    # Claimed numbers are never given out again, even while unpublished.
    assert objectstore.VersionClaim(root).claim() not in names


def test_errors_name_bucket_key_and_endpoint(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = _bucket(s3_env)
    with pytest.raises(objectstore.StorageRefused) as missing_bucket:
        objectstore.fetch_input(objectstore.parse("s3://no-such-bucket-here/x"), tmp_path, what="--data")
    assert missing_bucket.value.code == "NoSuchBucket" and "no-such-bucket-here" in str(missing_bucket.value)

    with pytest.raises(objectstore.StorageRefused) as missing_key:
        objectstore.fetch_input(objectstore.parse(f"s3://{bucket}/nothing/here"), tmp_path, what="--data")
    assert missing_key.value.code == "NoSuchKey" and "nothing/here" in str(missing_key.value)

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    objectstore._clients.clear()
    with pytest.raises(objectstore.StorageRefused) as denied:
        objectstore.list_objects(objectstore.parse(f"s3://{bucket}/x"))
    assert denied.value.code == "SignatureDoesNotMatch" and "access denied" in str(denied.value)
    assert "wrong-secret" not in str(denied.value)

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    objectstore._clients.clear()
    with pytest.raises(objectstore.StorageUnavailable) as unreachable:
        objectstore.list_objects(objectstore.parse(f"s3://{bucket}/x"))
    assert unreachable.value.code == "EndpointUnreachable" and "127.0.0.1" in str(unreachable.value)
    assert not unreachable.value.permanent


def test_obs_endpoint_from_region() -> None:
    endpoint = objectstore.endpoint_for("obs", {"AWS_DEFAULT_REGION": "cn-north-4"})
    assert endpoint.url == "https://obs.cn-north-4.myhuaweicloud.com" and endpoint.addressing == "virtual"
    with pytest.raises(ValueError, match="AWS_DEFAULT_REGION"):
        objectstore.endpoint_for("obs", {})
    custom = objectstore.endpoint_for("obs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "S3_ADDRESSING_STYLE": "path"})
    assert custom.url == "http://127.0.0.1:9000" and custom.addressing == "path"
    assert objectstore.endpoint_for("s3", {"AWS_ENDPOINT_URL": "http://minio:9000"}).addressing == "path"
    with pytest.raises(ValueError, match="S3_ADDRESSING_STYLE"):
        objectstore.endpoint_for("s3", {"S3_ADDRESSING_STYLE": "sideways"})


def test_obs_uris_speak_the_s3_api_at_the_configured_endpoint(s3_env: S3Server, tmp_path: Path) -> None:
    """obs:// with AWS_ENDPOINT_URL set (what an OBS user sets for a private endpoint): same calls, same layout."""
    bucket = _bucket(s3_env)
    src = tmp_path / "src"
    src.mkdir()
    (src / "labels.txt").write_text("daisy\nroses\n")
    target = objectstore.parse(f"obs://{bucket}/models/m")
    assert target.scheme == "obs"
    objectstore.upload_directory(src, target)
    assert s3_env.keys(bucket) == ["models/m/labels.txt", "models/m/manifest.json"]
    local = objectstore.fetch_input(target.join("labels.txt"), tmp_path / "dst", what="--labels")
    assert local.read_text() == "daisy\nroses\n"
