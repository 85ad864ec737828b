"""End to end: `ascend-mlops sandbox run examples/flowers --quick` on the real flower photos.

One sandbox for the module: the real CLI in a subprocess runs the real operator,
trainer, converter (ATC simulator) and server (pyACL simulator). To stay within a
few minutes on two shared cores it trains one epoch (--epochs 1; the quick
profile has two) at 64x64 on a subset of the photos (--max-per-class 40: 200
of the 1,941). The tests then look at what it
left behind while it is up, add a second InferenceService that asks for an
accelerator the node does not have, and finally stop it with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import constants, contract
from ascend_mlops.ascend import simmodel
from ascend_mlops.sandbox import scheduling
from ascend_mlops.sandbox.cluster import pid_alive, read_state, sandbox_processes
from tests.e2e.tools import find_kubectl
from tests.helpers import FLOWERS_DIR, REPO_ROOT, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not FLOWERS_DIR.is_dir(), reason=f"the flower photos are not at {FLOWERS_DIR}"),
]

PER_CLASS = 40
RUN_TIMEOUT = 900.0
OUTPUT = Path("data/pvc/flowers-data/runs/flowers-resnet50")


@dataclass
class RunningSandbox:
    root: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        state = read_state(self.root)
        assert state is not None, f"the sandbox is not up:\n{self.output}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(state["api"] + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def get(self, plural: str, name: str, api_version: str = constants.API_VERSION) -> dict[str, Any]:
        prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        result: dict[str, Any] = self.api("GET", f"{prefix}/namespaces/default/{plural}/{name}")
        return result

    def pods(self, selector: str) -> list[dict[str, Any]]:
        query = urllib.request.quote(selector)
        items: list[dict[str, Any]] = self.api("GET", f"/api/v1/namespaces/default/pods?labelSelector={query}")["items"]
        return items


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    root = tmp_path_factory.mktemp("sandbox")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "ascend_mlops", "sandbox", "run", "examples/flowers", "--quick",
        "--data", str(FLOWERS_DIR), "--max-per-class", str(PER_CLASS), "--epochs", "1", "--keep",
        "--dir", str(root), "--timeout", str(RUN_TIMEOUT),
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = RunningSandbox(root, process)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        wait_for(
            lambda: any(line.startswith("prediction:") for line in running.lines) or process.poll() is not None,
            timeout=RUN_TIMEOUT + 60, interval=0.5, what="the sandbox run to print a prediction",
        )
        assert process.poll() is None, f"the sandbox run ended with {process.returncode}:\n{running.output}"
        print(f"\nsandbox run reached the prediction in {time.monotonic() - started:.0f}s:\n{running.output}")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in sandbox_processes(root):
            os.kill(pid, signal.SIGKILL)


def test_each_resource_ends_with_its_summary_condition(flowers: RunningSandbox) -> None:
    job = flowers.get("trainingjobs", "flowers-resnet50")
    conversion = flowers.get("modelconversions", "flowers-resnet50-om")
    service = flowers.get("inferenceservices", "flowers")
    for obj, summary in ((job, "Succeeded"), (conversion, "Succeeded"), (service, "Ready")):
        condition = conditions(obj)[summary]
        assert condition["status"] == "True", (obj["kind"], obj["status"])
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert conditions(obj)["Stalled"]["status"] == "False"
    assert job["status"]["phase"] == constants.Phase.SUCCEEDED
    assert job["status"]["outputVersion"] == "V001"
    assert conversion["status"]["phase"] == constants.Phase.SUCCEEDED
    assert service["status"]["phase"] == constants.Phase.READY
    assert conditions(service)["PredictorReady"]["status"] == "True"
    assert service["status"]["url"] == "http://flowers-predictor.default.svc.cluster.local"
    # The progress the user saw: phases, the training epoch, the prediction.
    assert "TrainingJob/flowers-resnet50: Running" in flowers.output
    assert "epoch 1/1" in flowers.output
    assert "InferenceService/flowers: Ready" in flowers.output


def test_artifacts_are_on_disk(flowers: RunningSandbox) -> None:
    version = flowers.root / OUTPUT / "V001"
    assert (version / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE).stat().st_size > 1_000_000
    labels = (version / contract.LABELS_FILE).read_text().split()
    assert sorted(labels) == sorted(p.name for p in FLOWERS_DIR.iterdir() if p.is_dir())
    model = version / contract.OM_OUTPUT_SUBDIR / contract.OM_FILE
    assert simmodel.is_simulated(model)
    metrics = json.loads((version / contract.METRICS_FILE).read_text())
    assert "accuracy" in json.dumps(metrics)


def test_inference_pod_runs_on_the_ascend_310_node(flowers: RunningSandbox) -> None:
    selector = f"{constants.LABEL_OWNER_KIND}={constants.INFERENCE_SERVICE},{constants.LABEL_OWNER_NAME}=flowers"
    pods = flowers.pods(selector)
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == scheduling.ASCEND_NODE
    assert pod["status"]["phase"] == "Running"
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"][scheduling.ASCEND_RESOURCE] == "1"
    assert pod["spec"]["nodeSelector"] == {"accelerator": "huawei-Ascend310"}
    node = flowers.api("GET", f"/api/v1/nodes/{scheduling.ASCEND_NODE}")
    assert node["status"]["allocatable"][scheduling.ASCEND_RESOURCE] == "4"
    # The training and conversion pods needed no device and ran on the CPU node.
    trainer = flowers.pods(f"{constants.LABEL_OWNER_KIND}={constants.TRAINING_JOB}")
    assert trainer and {p["spec"]["nodeName"] for p in trainer} == {scheduling.CPU_NODE}


def test_post_a_daisy_photo_returns_a_json_prediction(flowers: RunningSandbox) -> None:
    run = json.loads((flowers.root / "run.json").read_text())
    url = run["service_url"]
    daisy = sorted((FLOWERS_DIR / "daisy").iterdir())[-1]  # not among the 40 trained on
    boundary = "sandbox-e2e-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{daisy.name}\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + daisy.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        prediction = json.loads(response.read())
    labels = {p.name for p in FLOWERS_DIR.iterdir() if p.is_dir()}
    assert prediction["predicted_label"] in labels
    scores = dict(prediction["scores"])
    assert set(scores) <= labels and abs(sum(scores.values()) - 1.0) < 0.05
    assert run["prediction"]["predicted_label"] in labels  # the one the CLI printed


def test_real_kubectl_lists_the_three_resources(flowers: RunningSandbox) -> None:
    kubectl, why = find_kubectl()
    if kubectl is None:
        message = f"KUBECTL NOT AVAILABLE - the real-kubectl check of the sandbox was SKIPPED: {why}"
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    env = {**os.environ, "HOME": str(flowers.root)}  # kubectl's discovery cache goes there
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(flowers.root / "kubeconfig"), "get", "trainingjobs,modelconversions,inferenceservices"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    for name in ("trainingjob.ascend.mlops.dev/flowers-resnet50", "modelconversion.ascend.mlops.dev/flowers-resnet50-om", "inferenceservice.ascend.mlops.dev/flowers"):
        assert name in result.stdout, result.stdout
    short = subprocess.run(
        [str(kubectl), "--kubeconfig", str(flowers.root / "kubeconfig"), "get", "amis", "flowers", "-o", "jsonpath={.status.phase}"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert short.stdout == constants.Phase.READY, short.stderr


def test_an_accelerator_the_node_lacks_stays_not_ready_with_a_reason(flowers: RunningSandbox) -> None:
    manifest = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.INFERENCE_SERVICE,
        "metadata": {"name": "flowers-910"},
        "spec": {
            "model": {"conversionRef": {"name": "flowers-resnet50-om"}},
            "runtime": "acl",
            "replicas": 1,
            "accelerator": {"resource": "huawei.com/Ascend910", "count": 1},
        },
    }
    flowers.api("POST", f"/apis/{constants.API_VERSION}/namespaces/default/inferenceservices", manifest)

    def unschedulable() -> dict[str, Any] | None:
        ready = conditions(flowers.get("inferenceservices", "flowers-910")).get("Ready") or {}
        return ready if ready.get("reason") == constants.Reason.UNSCHEDULABLE else None

    ready = wait_for(unschedulable, timeout=120, interval=0.5, what="Ready=False with reason Unschedulable")
    assert ready["status"] == "False"
    assert "Insufficient huawei.com/Ascend910" in ready["message"]
    pods = flowers.pods(f"{constants.LABEL_OWNER_KIND}={constants.INFERENCE_SERVICE},{constants.LABEL_OWNER_NAME}=flowers-910")
    assert len(pods) == 1 and not pods[0]["spec"].get("nodeName")
    scheduled = conditions(pods[0])["PodScheduled"]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    # The first service keeps serving meanwhile.
    assert conditions(flowers.get("inferenceservices", "flowers"))["Ready"]["status"] == "True"


def test_ctrl_c_stops_the_sandbox_and_leaves_no_process(flowers: RunningSandbox) -> None:
    assert sandbox_processes(flowers.root), "the running sandbox should have processes (operator, server)"
    state = read_state(flowers.root)
    assert state is not None and state["pid"] == flowers.process.pid
    flowers.process.send_signal(signal.SIGINT)
    assert flowers.process.wait(90) == 0, flowers.output
    assert "sandbox stopped" in flowers.output or wait_for(lambda: "sandbox stopped" in flowers.output, timeout=5)
    assert not pid_alive(flowers.process.pid)
    assert sandbox_processes(flowers.root) == []
    assert read_state(flowers.root) is None
