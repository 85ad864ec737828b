"""The real trainer, converter and server with every artifact on an S3 server on loopback.

Credentials reach the workloads only through the standard AWS environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import contract
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.helpers import run_cli
from tests.s3server import S3Server, free_port
from tests.workloads.server.process import ServerProcess, post_image

pytestmark = pytest.mark.slow


def _train_args(data: str, output: str, log: Path, algorithm: str = "mobilenet_v1") -> list[str]:
    return [
        contract.CMD_TRAIN,
        contract.FLAG_ALGORITHM, algorithm,
        contract.FLAG_DATA, data,
        contract.FLAG_OUTPUT, output,
        contract.FLAG_SET, "epochs=1",
        contract.FLAG_SET, "batch_size=8",
        contract.FLAG_SET, f"image_size={TINY_IMAGE_SIZE}",
        contract.FLAG_TERMINATION_LOG, str(log),
    ]


def _start(args: Sequence[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    with open(out, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "ascend_mlops", *args], stdout=fh, stderr=subprocess.STDOUT, env=full)


def _summary(log: Path) -> dict[str, Any]:
    return dict(json.loads(log.read_text()))


@pytest.fixture(scope="module")
def bucket(s3: S3Server, tiny_dataset: Path) -> str:
    """A bucket holding the tiny dataset under datasets/tiny/."""
    name = s3.make_bucket(f"flowers-{uuid.uuid4().hex[:8]}")
    client = s3.client()
    for path in sorted(tiny_dataset.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), name, f"datasets/tiny/{path.relative_to(tiny_dataset).as_posix()}")
    return name


@pytest.fixture(scope="module")
def two_versions(s3: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Two trainers started at once on the same s3:// output; their summaries by version."""
    work = tmp_path_factory.mktemp("two-trainers")
    output = f"s3://{bucket}/runs/flowers"
    procs = []
    for index in range(2):
        log = work / f"termination-{index}"
        procs.append((_start(_train_args(f"s3://{bucket}/datasets/tiny", output, log), s3.env(), work / f"out-{index}"), log, index))
    summaries: dict[str, dict[str, Any]] = {}
    for proc, log, index in procs:
        assert proc.wait(600) == 0, (work / f"out-{index}").read_text()[-3000:]
        summary = _summary(log)
        summaries[summary[contract.SUMMARY_VERSION]] = summary
    return summaries


def test_two_concurrent_trainers_publish_two_complete_versions(
    s3: S3Server, bucket: str, two_versions: dict[str, dict[str, Any]]
) -> None:
    assert sorted(two_versions) == ["V001", "V002"]
    keys = s3.keys(bucket, "runs/flowers/")
    for version, summary in two_versions.items():
        manifest = json.loads(s3.client().get_object(Bucket=bucket, Key=f"runs/flowers/{version}/manifest.json")["Body"].read())
        listed = {f["path"] for f in manifest["files"]}
        assert {"frozen_graph/frozen_graph.pb", "labels.txt", "metrics.json", "model/config.json"} <= listed
        assert "saved_model/saved_model.pb" in listed
        for rel in listed:
            assert f"runs/flowers/{version}/{rel}" in keys
        assert manifest["version"] == version
        assert summary[contract.SUMMARY_ARTIFACTS][contract.ARTIFACT_FROZEN_GRAPH] == f"{version}/frozen_graph"
        assert summary["dataset"] == {"classes": 3, "train": 30, "validation": 6, "skipped": 0}
    # No claim is left behind by a finished run.
    assert not [k for k in keys if "/.claims/" in k]
    labels = s3.client().get_object(Bucket=bucket, Key="runs/flowers/V001/labels.txt")["Body"].read().decode()
    assert labels.split() == list(TINY_CLASSES)


def test_convert_from_and_to_the_bucket_then_serve_from_it(
    s3: S3Server, bucket: str, two_versions: dict[str, dict[str, Any]], tmp_path: Path, tiny_dataset: Path
) -> None:
    source = f"s3://{bucket}/runs/flowers/V001/frozen_graph"
    output = f"s3://{bucket}/runs/flowers/V001/om/model"
    log = tmp_path / "convert-log"
    result = run_cli(
        [
            contract.CMD_CONVERT, contract.FLAG_INPUT, source, contract.FLAG_OUTPUT, output,
            contract.FLAG_SET, f"inputShape=images:1,{TINY_IMAGE_SIZE},{TINY_IMAGE_SIZE},3",
            contract.FLAG_TERMINATION_LOG, str(log),
        ],
        env={**s3.env(), contract.ENV_SIMULATOR: "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _summary(log)[contract.SUMMARY_MODEL] == contract.OM_FILE
    keys = s3.keys(bucket, "runs/flowers/V001/om/model/")
    assert keys == [f"runs/flowers/V001/om/model/{n}" for n in ("config.json", "manifest.json", "model.om")]
    config = json.loads(s3.client().get_object(Bucket=bucket, Key="runs/flowers/V001/om/model/config.json")["Body"].read())
    assert config["source"] == source and config["simulated"] is True
    assert s3.secret_key not in result.stdout + result.stderr + log.read_text()

    # The server finds labels.txt two folders above the model, in the bucket, as it does on disk.
    server = ServerProcess(
        [contract.FLAG_MODEL, output, contract.FLAG_BACKEND, "acl", contract.FLAG_NAME, "flowers",
         contract.FLAG_TERMINATION_LOG, str(tmp_path / "serve-log")],
        env={**s3.env(), contract.ENV_SIMULATOR: "1", contract.ENV_SCRATCH: str(tmp_path / "scratch")},
    )
    with server:
        server.wait_ready()
        image = sorted((tiny_dataset / TINY_CLASSES[0]).iterdir())[0]
        status, _, body = post_image(server.url, image.read_bytes(), image.name)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["predicted_label"] in TINY_CLASSES
        assert {label for label, _ in answer["scores"]} == set(TINY_CLASSES)
        assert server.terminate() == 0
    assert "downloaded --model" in server.log and s3.secret_key not in server.log


def test_a_trainer_killed_while_uploading_leaves_no_complete_version(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    output = f"s3://{bucket}/runs/killed"
    data = f"s3://{bucket}/datasets/tiny"
    # ResNet-50's artifacts are large enough (~190 MB) to catch the upload in the middle.
    args = _train_args(data, output, tmp_path / "first-log", algorithm="resnet_v1_50")
    proc = _start(args, s3.env(AWS_MAX_ATTEMPTS="1"), tmp_path / "first.out")
    client = s3.client()
    uploaded: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            page = client.list_objects_v2(Bucket=bucket, Prefix="runs/killed/")
            uploaded = [o["Key"] for o in page.get("Contents") or () if "/.claims/" not in o["Key"]]
            if uploaded:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(60)
    assert uploaded, "the trainer finished before any object of its version was seen: " + (tmp_path / "first.out").read_text()[-2000:]
    keys = s3.keys(bucket, "runs/killed/")
    assert "runs/killed/V001/manifest.json" not in keys
    assert any(k.startswith("runs/killed/V001/") and "/.claims/" not in k for k in keys)

    # Readers refuse it: the converter and the server exit 5 and say why.
    convert_log = tmp_path / "convert-log"
    converted = run_cli(
        [contract.CMD_CONVERT, contract.FLAG_INPUT, f"{output}/V001/frozen_graph", contract.FLAG_OUTPUT,
         f"{output}/V001/om/model", contract.FLAG_TERMINATION_LOG, str(convert_log)],
        env={**s3.env(), contract.ENV_SIMULATOR: "1"},
    )
    assert converted.returncode == contract.EXIT_INVALID_MODEL, converted.stdout + converted.stderr
    assert "V001 has no manifest.json" in _summary(convert_log)[contract.SUMMARY_ERROR]
    assert _summary(convert_log)[contract.SUMMARY_STORAGE_ERROR]["code"] == "IncompleteVersion"

    # The next run publishes the next number, complete.
    log = tmp_path / "second-log"
    result = run_cli(_train_args(data, output, log), env=s3.env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert _summary(log)[contract.SUMMARY_VERSION] == "V002"
    assert "runs/killed/V002/manifest.json" in s3.keys(bucket, "runs/killed/")
    assert "runs/killed/V001/manifest.json" not in s3.keys(bucket, "runs/killed/")


@pytest.mark.parametrize("case", ["wrong-credentials", "missing-bucket", "unreachable"])
def test_storage_failures_are_distinct_and_name_the_place(
    s3: S3Server, bucket: str, tmp_path: Path, case: str
) -> None:
    env = s3.env(AWS_MAX_ATTEMPTS="2")
    data = f"s3://{bucket}/datasets/tiny"
    if case == "wrong-credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif case == "missing-bucket":
        data = "s3://no-such-bucket-anywhere/datasets/tiny"
    else:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "log"
    # An output on local disk, so the dataset download is what fails.
    result = run_cli(_train_args(data, str(tmp_path / "out"), log), env=env, timeout=300)
    summary = _summary(log)
    storage = summary[contract.SUMMARY_STORAGE_ERROR]
    error = summary[contract.SUMMARY_ERROR]
    assert error.startswith(contract.FLAG_DATA)
    if case == "wrong-credentials":
        assert result.returncode == contract.EXIT_INVALID_DATASET
        assert storage["code"] == "SignatureDoesNotMatch" and "access denied" in error and bucket in error
        assert "not-the-secret" not in error + result.stderr
    elif case == "missing-bucket":
        assert result.returncode == contract.EXIT_INVALID_DATASET
        assert storage == {"code": "NoSuchBucket", "bucket": "no-such-bucket-anywhere", "key": "datasets/tiny",
                           "endpoint": s3.endpoint}
        assert "bucket 'no-such-bucket-anywhere' does not exist" in error
    else:
        assert result.returncode == contract.EXIT_STORAGE_UNAVAILABLE
        assert contract.is_retryable_exit(result.returncode)
        assert storage["code"] == "EndpointUnreachable" and env["AWS_ENDPOINT_URL"] in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
