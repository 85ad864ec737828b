"""End to end: `ascend-mlops sandbox run examples/flowers-obs --quick --exit-after-predict` on the real photos.

Every artifact on object storage: the real CLI in a subprocess starts the
sandbox and an embedded S3 server (moto) on loopback, uploads the dataset into
the bucket, creates the Secret, and the real operator, trainer, converter (ATC
simulator) and server (pyACL simulator) read and write `s3://flowers/...`
only. To stay near a minute on two shared cores it trains one epoch at 64x64
on 8 photos per class. The run stops itself after the prediction; what it saw
(statuses, events, the bucket's listing taken before it stopped) is in
`run.json`, and its logs stay in the sandbox folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import constants, contract
from ascend_mlops.sandbox import objectstorage
from ascend_mlops.sandbox.cluster import sandbox_processes
from tests.helpers import FLOWERS_DIR, REPO_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not FLOWERS_DIR.is_dir(), reason=f"the flower photos are not at {FLOWERS_DIR}"),
    pytest.mark.skipif(bool(objectstorage.missing_packages()), reason="moto[server] / boto3 are not installed"),
]

PER_CLASS = 8
RUN_TIMEOUT = 600.0
BUCKET = "flowers"
OUTPUT = f"s3://{BUCKET}/runs/flowers-obs"
CREDENTIALS = (objectstorage.ACCESS_KEY_ID, objectstorage.SECRET_ACCESS_KEY)


@dataclass
class FinishedRun:
    root: Path
    returncode: int
    output: str
    seconds: float

    @property
    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.root / "run.json").read_text())
        return result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    root = tmp_path_factory.mktemp("sandbox-obs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # nothing from the host's own AWS setup
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    command = [
        sys.executable, "-m", "ascend_mlops", "sandbox", "run", "examples/flowers-obs", "--quick", "--exit-after-predict",
        "--data", str(FLOWERS_DIR), "--max-per-class", str(PER_CLASS), "--epochs", "1",
        "--dir", str(root), "--timeout", str(RUN_TIMEOUT),
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=RUN_TIMEOUT + 120,
    )
    finished = FinishedRun(root, result.returncode, result.stdout, time.monotonic() - started)
    print(f"\nsandbox run (flowers-obs) ended with {result.returncode} after {finished.seconds:.0f}s:\n{result.stdout}")
    return finished


def test_the_run_ends_with_a_prediction_and_stops_everything(run: FinishedRun) -> None:
    assert run.returncode == 0, run.output
    prediction_lines = [line for line in run.output.splitlines() if line.startswith("prediction:")]
    assert len(prediction_lines) == 1, run.output
    prediction = json.loads(prediction_lines[0].removeprefix("prediction:"))
    labels = {p.name for p in FLOWERS_DIR.iterdir() if p.is_dir()}
    assert prediction["predicted_label"] in labels
    assert abs(sum(score for _, score in prediction["scores"]) - 1.0) < 0.05
    assert run.report["prediction"] == prediction
    assert "sandbox stopped" in run.output
    # The embedded S3 server went with the sandbox: no process of it (or of anything else) is left.
    assert sandbox_processes(run.root) == []
    assert "embedded S3 server http://127.0.0.1:" in run.output


def test_every_artifact_is_an_s3_uri_in_the_embedded_bucket(run: FinishedRun) -> None:
    report = run.report
    assert report["object_storage"].startswith("http://127.0.0.1:")
    artifacts = report["artifacts"]
    job = artifacts[f"{constants.TRAINING_JOB}/flowers-obs"]
    conversion = artifacts[f"{constants.MODEL_CONVERSION}/flowers-obs-om"]
    service = artifacts[f"{constants.INFERENCE_SERVICE}/flowers-obs"]
    assert job["artifacts.frozenGraph"] == f"{OUTPUT}/V001/{contract.FROZEN_GRAPH_DIR}"
    assert job["artifacts.labels"] == f"{OUTPUT}/V001/{contract.LABELS_FILE}"
    assert conversion["artifacts.model"] == f"{OUTPUT}/V001/{contract.OM_OUTPUT_SUBDIR}"
    assert service["model.uri"] == conversion["artifacts.model"]
    every = [uri for fields in artifacts.values() for uri in fields.values()]
    assert every and all(uri.startswith(f"s3://{BUCKET}/") for uri in every), every
    # What the bucket held before the run stopped: the version is complete (its manifest,
    # written last), with the frozen graph, the labels and the converted model.
    objects: dict[str, int] = report["objects"]
    version = f"{OUTPUT}/V001"
    for key in (
        f"{version}/manifest.json",
        f"{version}/{contract.FROZEN_GRAPH_DIR}/{contract.FROZEN_GRAPH_FILE}",
        f"{version}/{contract.LABELS_FILE}",
        f"{version}/{contract.OM_OUTPUT_SUBDIR}/{contract.OM_FILE}",
        f"s3://{BUCKET}/datasets/flowers/manifest.json",
    ):
        assert objects.get(key, 0) > 0, (key, sorted(objects))
    assert objects[f"{version}/{contract.FROZEN_GRAPH_DIR}/{contract.FROZEN_GRAPH_FILE}"] > 1_000_000
    photos = [k for k in objects if k.startswith(f"s3://{BUCKET}/datasets/flowers/") and k.endswith(".jpg")]
    assert len(photos) == PER_CLASS * len([p for p in FLOWERS_DIR.iterdir() if p.is_dir()])
    assert not any(k.startswith(f"{OUTPUT}/V002") for k in objects)
    # ... and the run said where each one is.
    assert f"artifacts.frozenGraph: {version}/{contract.FROZEN_GRAPH_DIR}  [1 object" in run.output
    assert "MISSING" not in run.output


def test_the_statuses_are_on_object_storage(run: FinishedRun) -> None:
    resources = run.report["resources"]
    job = resources[f"{constants.TRAINING_JOB}/flowers-obs"]
    conversion = resources[f"{constants.MODEL_CONVERSION}/flowers-obs-om"]
    service = resources[f"{constants.INFERENCE_SERVICE}/flowers-obs"]
    assert (job["phase"], job["outputVersion"]) == (constants.Phase.SUCCEEDED, "V001")
    assert conversion["phase"] == constants.Phase.SUCCEEDED
    assert service["phase"] == constants.Phase.READY
    assert conversion["source"]["uri"].startswith(f"{OUTPUT}/V001/")


def test_no_credential_appears_in_a_status_an_event_or_a_log(run: FinishedRun) -> None:
    report = run.report
    statuses = json.dumps(report["resources"])
    events = "\n".join(report["events"])
    assert events, "the run recorded the namespace's events"
    for value in CREDENTIALS:
        assert value not in statuses
        assert value not in events
    # Nor in any file the sandbox left: the operator's log, every container's log, run.json.
    leaked = [
        str(path) for path in run.root.rglob("*")
        if path.is_file() and any(value.encode() in path.read_bytes() for value in CREDENTIALS)
    ]
    assert leaked == []
    assert objectstorage.SECRET_ACCESS_KEY not in run.output
