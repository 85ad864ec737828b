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

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

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
        "--dir", str(root), "--timeout", str(RUN_TIMEOUT), "--gateway",
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
    assert service["status"]["address"]["url"] == "http://flowers-predictor.default.svc.cluster.local"
    assert "url" not in service["status"]  # no spec.exposure: no external address
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


AUTH_SERVICE = "flowers-auth"
AUTH_SECRET = "flowers-auth-tokens"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def post_photo(url: str, photo: Path, headers: dict[str, str] | None = None) -> Answer:
    """POST / a photo (ModelArts' multipart field `images`); any status is an answer, not an error."""
    boundary = "sandbox-auth-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{photo.name}\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    all_headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
    request = urllib.request.Request(url + "/", data=body, method="POST", headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, dict(response.headers.items()), json.loads(response.read()))
    except urllib.error.HTTPError as e:
        return Answer(e.code, dict(e.headers.items()), json.loads(e.read() or b"{}"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_secret(*tokens: str) -> dict[str, Any]:
    """The Secret a user makes (`kubectl create secret generic ... --from-literal=token=...`): one token per line."""
    data = "".join(f"{t}\n" for t in tokens).encode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": AUTH_SECRET}, "data": {"token": base64.b64encode(data).decode()}}


def files_mentioning(root: Path, secrets_: list[str], pattern: str = "*.log") -> list[str]:
    """Log files under root that contain any of the tokens (names only: a failure must not print a token)."""
    found = []
    for path in sorted(root.rglob(pattern)):
        text = path.read_text(errors="replace")
        if any(s in text for s in secrets_):
            found.append(str(path.relative_to(root)))
    return found


def test_an_inference_service_with_auth_refuses_requests_without_its_token_and_follows_a_rotation(flowers: RunningSandbox) -> None:
    """spec.auth.secretName: the sandbox mounts the Secret (kubelet layout) and the server answers 401
    (JSON, WWW-Authenticate) without a valid token and classifies with one, in `Authorization: Bearer`
    or ModelArts' `X-Auth-Token`; rewriting the Secret rotates the tokens without a restart."""
    first, second = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    seed = yaml.safe_load((REPO_ROOT / "examples" / "flowers" / "inferenceservice.yaml").read_text())
    manifest = {
        "apiVersion": seed["apiVersion"], "kind": seed["kind"], "metadata": {"name": AUTH_SERVICE},
        "spec": {**seed["spec"], "auth": {"secretName": AUTH_SECRET}},
    }
    # As a user does: the Secret first (the operator holds the pods back while it is missing:
    # condition Ready=False, AuthSecretMissing), then the service.
    flowers.api("POST", "/api/v1/namespaces/default/secrets", token_secret(first))
    flowers.api("POST", f"/apis/{constants.API_VERSION}/namespaces/default/inferenceservices", manifest)
    selector = f"{constants.LABEL_OWNER_KIND}={constants.INFERENCE_SERVICE},{constants.LABEL_OWNER_NAME}={AUTH_SERVICE}"

    def ready() -> dict[str, Any] | None:
        service = flowers.get("inferenceservices", AUTH_SERVICE)
        return service if conditions(service).get("Ready", {}).get("status") == "True" else None

    service = wait_for(ready, timeout=180, interval=0.5, what=f"{AUTH_SERVICE} Ready")
    (pod,) = flowers.pods(selector)
    container = pod["spec"]["containers"][0]
    volume = next(v for v in pod["spec"]["volumes"] if (v.get("secret") or {}).get("secretName") == AUTH_SECRET)
    assert any(m["name"] == volume["name"] and m["mountPath"] == contract.MOUNT_AUTH_TOKENS for m in container["volumeMounts"])
    args = container.get("args") or []
    assert args[args.index(contract.FLAG_AUTH_TOKENS) + 1] == contract.MOUNT_AUTH_TOKENS

    address = (service["status"].get("address") or {}).get("url") or service["status"]["url"]
    backend = (urllib.parse.urlsplit(address).hostname or "").split(".")[0]

    def local_url(plural: str, name: str, api_version: str) -> str | None:
        annotations = flowers.get(plural, name, api_version)["metadata"].get("annotations") or {}
        return annotations.get(constants.ANNOTATION_SANDBOX_URL)

    url = wait_for(lambda: local_url("services", backend, "v1"), timeout=30, interval=0.2, what="the Service's local URL")
    route_url = wait_for(
        lambda: local_url(constants.HTTPROUTES, AUTH_SERVICE, constants.GATEWAY_API_VERSION),
        timeout=30, interval=0.2, what="the HTTPRoute's local URL",
    )
    photo = sorted((FLOWERS_DIR / "daisy").iterdir())[-3]
    labels = {p.name for p in FLOWERS_DIR.iterdir() if p.is_dir()}

    def refused(answer: Answer) -> bool:
        challenge = {k.lower(): v for k, v in answer.headers.items()}.get("www-authenticate", "")
        return answer.status == 401 and challenge.startswith("Bearer") and "error" in answer.body and "predicted_label" not in answer.body

    def classified(answer: Answer) -> bool:
        return answer.status == 200 and answer.body.get("predicted_label") in labels

    for where in (url, route_url):  # through the Service and through the sandbox's Gateway (L7)
        assert refused(post_photo(where, photo)), "no token must be refused"
        assert refused(post_photo(where, photo, bearer(first[::-1]))), "a wrong token must be refused"
        assert classified(post_photo(where, photo, bearer(first))), "the Secret's token must be accepted"
    assert classified(post_photo(url, photo, {"X-Auth-Token": first})), "ModelArts' X-Auth-Token must be accepted"
    assert refused(post_photo(url, photo, {"X-Auth-Token": second}))
    with urllib.request.urlopen(url + contract.HEALTH_READY_PATH, timeout=30) as health:  # probes need no token
        assert health.status == 200

    # Rotation as a user does it: add the new token beside the old, move the clients, drop the old.
    def put_tokens(*tokens: str) -> None:
        flowers.api("PUT", f"/api/v1/namespaces/default/secrets/{AUTH_SECRET}", token_secret(*tokens))

    began = time.monotonic()
    put_tokens(first, second)
    wait_for(lambda: classified(post_photo(url, photo, bearer(second))), timeout=30, interval=0.2, what="the added token accepted")
    added = time.monotonic() - began
    assert classified(post_photo(url, photo, bearer(first))), "the old token stays valid while both are in the Secret"
    began = time.monotonic()
    put_tokens(second)
    wait_for(lambda: refused(post_photo(url, photo, bearer(first))), timeout=30, interval=0.2, what="the dropped token refused")
    dropped = time.monotonic() - began
    assert classified(post_photo(url, photo, {"X-Auth-Token": second}))
    print(f"\nrotation: the added token was accepted after {added:.1f}s, the dropped one refused after {dropped:.1f}s")
    (after,) = flowers.pods(selector)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0, "a rotation needs no restart"

    # No token in any log, in the resource, or in an event.
    tokens = [first, second]
    assert files_mentioning(flowers.root / "logs", tokens) == [], "a token is in the sandbox's logs"
    assert files_mentioning(flowers.root / "pods", tokens) == [], "a token is in a pod's log"
    assert not any(t in flowers.output for t in tokens), "a token is in the sandbox run's output"
    assert not any(t in json.dumps(flowers.get("inferenceservices", AUTH_SERVICE)) for t in tokens), "a token is in the resource"
    events = json.dumps(flowers.api("GET", "/api/v1/namespaces/default/events"))
    assert not any(t in events for t in tokens), "a token is in an event"

    flowers.api("DELETE", f"/apis/{constants.API_VERSION}/namespaces/default/inferenceservices/{AUTH_SERVICE}")
    flowers.api("DELETE", f"/api/v1/namespaces/default/secrets/{AUTH_SECRET}")
    wait_for(lambda: not flowers.pods(selector), timeout=60, interval=0.5, what=f"{AUTH_SERVICE}'s pod gone")


class Load:
    """Continuous requests through a URL (a new connection each, as simple clients do), counted."""

    def __init__(self, url: str, photo: Path, threads: int = 2, interval: float = 0.1) -> None:
        boundary = "sandbox-load-boundary"
        self.body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{photo.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        self.headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        self.url, self.interval = url, interval
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                request = urllib.request.Request(self.url + "/", data=self.body, method="POST", headers=self.headers)
                with urllib.request.urlopen(request, timeout=60) as response:
                    json.loads(response.read())["predicted_label"]
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # any failure is what this test counts
                with self._lock:
                    self.failures.append(f"{time.monotonic() - self.started:.1f}s: {exc!r}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)
        self.seconds = time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return (self.ok + len(self.failures)) / max(1e-9, time.monotonic() - self.started)


def test_a_canary_under_load_is_promoted_then_a_broken_one_rolled_back_with_no_request_lost(flowers: RunningSandbox) -> None:
    """At 20 percent through the sandbox Gateway (HTTPRoute weights), analysis promotes a good
    canary, and a canary that cannot load its model is rolled back; a client sending requests all
    the while sees no failure. V002 is a copy of V001 (a retrain would cost a minute of CPU; the
    rollout is what is under test), V003 a model.om that is not a model."""
    service = flowers.get("inferenceservices", "flowers")
    route = flowers.get(constants.HTTPROUTES, "flowers", constants.GATEWAY_API_VERSION)
    url = (route["metadata"].get("annotations") or {})[constants.ANNOTATION_SANDBOX_URL]
    v1 = service["status"]["model"]["uri"]
    assert v1.endswith("/V001/om/model")
    claim_root = flowers.root / "data" / "pvc" / "flowers-data"
    v1_dir = claim_root / v1.removeprefix("pvc://flowers-data/")
    v2, v3 = v1.replace("/V001/", "/V002/"), v1.replace("/V001/", "/V003/")
    shutil.copytree(v1_dir, claim_root / v2.removeprefix("pvc://flowers-data/"))
    broken = claim_root / v3.removeprefix("pvc://flowers-data/")
    broken.mkdir(parents=True)
    (broken / contract.OM_FILE).write_bytes(b"this is not an offline model")
    labels = service["status"]["model"]["labels"]
    path = f"/apis/{constants.API_VERSION}/namespaces/default/inferenceservices/flowers"
    merge = {"Content-Type": "application/merge-patch+json"}

    def patch(body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            read_state(flowers.root)["api"] + path, data=json.dumps(body).encode(), method="PATCH", headers=merge,  # type: ignore[index]
        )
        with urllib.request.urlopen(request, timeout=30):
            pass

    def state() -> dict[str, Any]:
        status: dict[str, Any] = flowers.get("inferenceservices", "flowers")["status"]
        return status

    def canary_is(key: str, value: object) -> dict[str, Any] | None:
        status = state()
        return status if (status.get("canary") or {}).get(key) == value else None

    photo = sorted((FLOWERS_DIR / "daisy").iterdir())[-2]
    with Load(url, photo) as load:
        patch({"spec": {"canary": {"uri": v2, "labels": labels, "analysis": {
            "intervalSeconds": 3, "steps": [20, 100], "maxErrorRate": 0.0, "minRequests": 3,
        }}}})
        at_20 = wait_for(lambda: canary_is("percent", 20),
                         timeout=180, interval=0.5, what="the canary ready at 20 percent")
        assert weights_of(flowers) == {"flowers-predictor-stable": 80, "flowers-predictor-canary": 20}
        assert at_20["trafficSplit"] == "HTTPRoute"
        promoted = wait_for(lambda: canary_is("state", "Promoted"),
                            timeout=300, interval=0.5, what="the canary promoted by its analysis")
        assert promoted["model"]["uri"] == v2 and promoted["traffic"][0]["model"] == v2
        verdicts = [d["decision"] for d in promoted["canary"]["decisions"] if d["decision"] != "Wait"]
        assert verdicts == ["Advance", "Promote"], promoted["canary"]["decisions"]
        assert all(d["canary"]["errors"] == 0 for d in promoted["canary"]["decisions"])
        wait_for(lambda: not flowers.pods(f"{constants.LABEL_COMPONENT}={constants.COMPONENT_CANARY}"),
                 timeout=120, interval=0.5, what="the canary pods gone after promotion")

        patch({"spec": {"canary": {"uri": v3, "analysis": None, "trafficPercent": 20}}})
        rolled = wait_for(lambda: canary_is("state", "RolledBack"),
                          timeout=180, interval=0.5, what="the broken canary rolled back")
        assert rolled["canary"]["reason"] in (constants.Reason.MODEL_LOAD_FAILED, constants.Reason.CRASH_LOOP)
        assert conditions(flowers.get("inferenceservices", "flowers"))["Ready"]["status"] == "True"
        wait_for(lambda: not flowers.pods(f"{constants.LABEL_COMPONENT}={constants.COMPONENT_CANARY}"),
                 timeout=120, interval=0.5, what="the broken canary's pods gone")
        time.sleep(2)
    print(f"\nload through the canary: {load.ok} answered, {len(load.failures)} failed in {load.seconds:.0f}s "
          f"({(load.ok + len(load.failures)) / load.seconds:.1f} requests/s)")
    assert load.failures == [], load.failures[:10]
    assert load.ok / load.seconds >= 5, f"{load.ok} requests in {load.seconds:.0f}s: less than 5 per second"
    patch({"spec": {"canary": None}})


def weights_of(flowers: RunningSandbox) -> dict[str, int]:
    route = flowers.get(constants.HTTPROUTES, "flowers", constants.GATEWAY_API_VERSION)
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


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
