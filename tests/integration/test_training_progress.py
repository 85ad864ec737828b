"""TrainingJob status.progress: the operator reads the running chief pod's log tail through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import constants
from ascend_mlops.api.progress import EpochProgress
from ascend_mlops.builders import training as builder
from ascend_mlops.reconcilers import training
from ascend_mlops.sandbox.apiserver import APIServer
from tests.integration.conftest import NAMESPACE, Cluster, Operator, eventually, running, terminated
from tests.integration.test_training import SUMMARY, job, wait_pod

pytestmark = pytest.mark.sandbox_only("the pods' logs are the sandbox API's log reader (a real apiserver asks a kubelet)")

KIND = constants.TRAINING_JOB
CHIEF = "flowers-worker-0"


class Logs:
    """Plays the kubelet's part for pods/log: one file per (pod, container), counting reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reads = 0

    def path(self, pod: str, container: str) -> Path:
        return self.root / f"{pod}.{container}.log"

    def __call__(self, namespace: str, pod: str, container: str | None, previous: bool) -> Path | None:
        self.reads += 1
        return None if container is None or previous else self.path(pod, container)

    def write(self, pod: str, lines: list[str]) -> None:
        self.path(pod, builder.CONTAINER).write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def logs(api: APIServer, tmp_path: Path) -> Logs:
    reader = Logs(tmp_path)
    api.handler.log_reader = reader
    return reader


async def progress_of(cluster: Cluster) -> dict[str, Any] | None:
    obj = await cluster.get_cr(KIND, "flowers")
    return ((obj or {}).get("status") or {}).get("progress")


async def test_the_api_server_honours_tail_lines(cluster: Cluster, logs: Logs) -> None:
    await cluster.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                          "spec": {"containers": [{"name": builder.CONTAINER, "image": "x"}]}})
    logs.write("p", [f"line {i}" for i in range(60)])
    text = await cluster.client.read_pod_log(NAMESPACE, "p", container=builder.CONTAINER, tail_lines=2)
    assert text == "line 58\nline 59\n"


async def test_progress_follows_the_chief_log_and_survives_read_failures(
    cluster: Cluster, operator: Operator, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator runs in this process: a short interval lets the test see the periodic re-read.
    monkeypatch.setattr(training, "PROGRESS_INTERVAL", 0.2)
    await cluster.create(job())
    await wait_pod(cluster, CHIEF)
    # Running with no log yet: the read fails (400 from the API server), the reconcile does not.
    await cluster.set_pod_status(CHIEF, running())
    await cluster.wait_condition(KIND, "flowers", "Running", "True", "Running")
    await eventually(lambda: _async(logs.reads > 0), what="a log read")
    assert await progress_of(cluster) is None

    epoch1 = EpochProgress(1, 5, 1.2, 0.4, 30.0, 400.0, val_loss=1.1, val_accuracy=0.45)
    epoch2 = EpochProgress(2, 5, 0.9, 0.6, 32.5, 300.0)
    logs.write(CHIEF, ["I0101 some TensorFlow noise", epoch1.line(), "evaluating", epoch2.line(), "I0101 more noise"])
    # No pod event: the periodic requeue while running picks the new lines up.
    expected = {"epoch": 2, "totalEpochs": 5, "loss": 0.9, "accuracy": 0.6, "valAccuracy": 0.45,
                "imagesPerSecond": 32.5, "etaSeconds": 300}
    assert await eventually(lambda: _progress_is(cluster, expected), what=f"status.progress {expected}")

    # The log goes away (a kubelet restart, a network hiccup): the last progress stays.
    logs.path(CHIEF, builder.CONTAINER).unlink()
    reads = logs.reads
    await eventually(lambda: _async(logs.reads > reads + 2), what="more log reads")
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None and obj["status"]["progress"] == expected
    assert obj["status"]["phase"] == "Running"

    # Success keeps the final progress as it was.
    await cluster.set_pod_status(CHIEF, terminated(0, json.dumps(SUMMARY)))
    await cluster.wait_condition(KIND, "flowers", "Succeeded", "True", "Succeeded")
    assert await progress_of(cluster) == expected


async def _progress_is(cluster: Cluster, expected: dict[str, Any]) -> bool:
    return await progress_of(cluster) == expected


async def _async(value: bool) -> bool:
    return value
