"""The sandbox kubelet against the embedded API, with real local processes (no operator, no TensorFlow).

The containers run small Python programs under one of the project's image names,
which is what the kubelet checks before it runs anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox import kubelet, scheduling
from ascend_mlops.sandbox.cluster import Sandbox, SandboxConfig, pid_alive, sandbox_processes
from ascend_mlops.sandbox.proxy import ANNOTATION_URL
from tests.helpers import REPO_ROOT, eventually

IMAGE = "ascend-mlops/trainer:0.1.0"
SERVER = r"""
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ["HOSTNAME"] + " " + os.environ.get("VERSION", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture
async def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sandbox]:
    monkeypatch.setattr(kubelet, "INITIAL_BACKOFF", 1.0)
    root = tmp_path / "sandbox"
    async with Sandbox(SandboxConfig(root=root, run_operator=False, crd_dirs=(REPO_ROOT / "crds",))) as running:
        yield running
    assert sandbox_processes(root) == [], "processes outlived the sandbox"


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[KubeClient]:
    async with KubeClient(sandbox.url) as c:
        yield c


def python_pod(name: str, code: str, *args: str, restart: str = "Never", image: str = IMAGE, **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": [sys.executable, "-c", code], "args": list(args)}
    container.update(extra.pop("container", {}))
    return {"metadata": {"name": name}, "spec": {"restartPolicy": restart, "containers": [container], **extra}}


async def pod_status(client: KubeClient, name: str) -> dict[str, Any]:
    pod = await client.get("v1", "pods", "default", name)
    return (pod or {}).get("status") or {}


async def creating(client: KubeClient, name: str) -> dict[str, Any] | None:
    """The container's waiting state while the kubelet cannot set the pod up (with its message)."""
    statuses = (await pod_status(client, name)).get("containerStatuses") or [{}]
    waiting = statuses[0].get("state", {}).get("waiting", {})
    return waiting if waiting.get("reason") == "ContainerCreating" and waiting.get("message") else None


async def finished(client: KubeClient, name: str) -> dict[str, Any] | None:
    status = await pod_status(client, name)
    return status if status.get("phase") in ("Succeeded", "Failed") else None


async def test_pod_runs_with_mapped_paths_env_and_logs(sandbox: Sandbox, client: KubeClient, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()  # an existing host path is used as it is (absent ones go under the sandbox's data/)
    code = (
        "import os, sys, pathlib\n"
        "pathlib.Path(sys.argv[1]).write_text(os.environ['ASCEND_MLOPS_SIMULATOR'] + ' ' + os.environ['HOME'])\n"
        "pathlib.Path(sys.argv[2]).write_text('{\"outputVersion\": \"V001\"}')\n"
        "print('hello from', os.environ['HOSTNAME'])\n"
    )
    pod = python_pod(
        "writer", code, "/mnt/output/result.txt", "/dev/termination-log",
        container={
            "env": [{"name": "HOME", "value": "/tmp"}],
            "volumeMounts": [{"name": "out", "mountPath": "/mnt/output"}, {"name": "tmp", "mountPath": "/tmp"}],
        },
        volumes=[{"name": "out", "hostPath": {"path": str(out), "type": "DirectoryOrCreate"}}, {"name": "tmp", "emptyDir": {}}],
    )
    await client.create("v1", "pods", "default", pod)
    status = await eventually(lambda: finished(client, "writer"), timeout=30, what="the pod to finish")
    assert status["phase"] == "Succeeded", status
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["message"] == '{"outputVersion": "V001"}'
    simulator, home = (out / "result.txt").read_text().split(" ")
    assert simulator == "1" and Path(home).is_dir() and str(sandbox.root) in home
    assert status["podIP"] == "127.0.0.1"
    pod_obj = await client.get("v1", "pods", "default", "writer")
    assert pod_obj is not None and pod_obj["spec"]["nodeName"] == scheduling.CPU_NODE
    log = await client.read_pod_log("default", "writer")
    assert "hello from writer" in log
    events = {e["reason"] for e in (await client.listing("v1", "events", "default"))["items"] if e["involvedObject"]["name"] == "writer"}
    assert {"Scheduled", "Started"} <= events


async def test_failure_reports_exit_code_and_message(sandbox: Sandbox, client: KubeClient) -> None:
    code = "import sys, pathlib\npathlib.Path(sys.argv[1]).write_text('bad dataset')\nsys.exit(3)\n"
    await client.create("v1", "pods", "default", python_pod("fails", code, "/dev/termination-log"))
    crash = "raise SystemExit('Traceback: the real reason')"
    await client.create(
        "v1", "pods", "default",
        python_pod("crashes", crash, container={"terminationMessagePolicy": "FallbackToLogsOnError"}),
    )
    status = await eventually(lambda: finished(client, "fails"), timeout=30)
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Failed" and terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert terminated["message"] == "bad dataset"
    status = await eventually(lambda: finished(client, "crashes"), timeout=30)
    assert "Traceback: the real reason" in status["containerStatuses"][0]["state"]["terminated"]["message"]


async def test_restart_always_crash_loops_with_backoff(sandbox: Sandbox, client: KubeClient) -> None:
    await client.create("v1", "pods", "default", python_pod("loop", "import sys; sys.exit(1)", restart="Always"))

    async def backing_off() -> dict[str, Any] | None:
        statuses = (await pod_status(client, "loop")).get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting", {})
        return statuses[0] if waiting.get("reason") == "CrashLoopBackOff" else None

    first = await eventually(backing_off, timeout=30, what="CrashLoopBackOff")
    assert first["lastState"]["terminated"]["exitCode"] == 1
    assert "back-off 1s restarting failed container=main" in first["state"]["waiting"]["message"]

    async def restarted() -> dict[str, Any] | None:
        statuses = (await pod_status(client, "loop")).get("containerStatuses") or [{}]
        return statuses[0] if statuses[0].get("restartCount", 0) >= 2 else None

    again = await eventually(restarted, timeout=30, what="two restarts")
    assert (await pod_status(client, "loop"))["phase"] == "Running"
    assert again["restartCount"] >= 2


async def test_foreign_images_are_reported_not_run(sandbox: Sandbox, client: KubeClient) -> None:
    await client.create("v1", "pods", "default", python_pod("nginx", "print(1)", image="nginx:1.27"))

    async def pull_backoff() -> dict[str, Any] | None:
        statuses = (await pod_status(client, "nginx")).get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting", {})
        return waiting if waiting.get("reason") == "ImagePullBackOff" else None

    waiting = await eventually(pull_backoff, timeout=30, what="ImagePullBackOff")
    assert "runs only the project's own workload images" in waiting["message"]
    assert "ascend-mlops/server:0.1.0" in waiting["message"]
    status = await pod_status(client, "nginx")
    assert status["phase"] == "Pending" and "containerID" not in status["containerStatuses"][0]


async def test_unschedulable_pod_stays_pending_with_the_reason(sandbox: Sandbox, client: KubeClient) -> None:
    pod = python_pod(
        "ascend910", "print(1)", container={"resources": {"limits": {"huawei.com/Ascend910": "1"}}},
        nodeSelector={"accelerator": "huawei-Ascend310"},
        tolerations=[{"key": scheduling.ASCEND_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    )
    await client.create("v1", "pods", "default", pod)

    async def unscheduled() -> dict[str, Any] | None:
        conditions = (await pod_status(client, "ascend910")).get("conditions") or []
        return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    condition = await eventually(unscheduled, timeout=30, what="PodScheduled=False")
    assert condition["reason"] == "Unschedulable"
    assert "Insufficient huawei.com/Ascend910" in condition["message"]
    events = (await client.listing("v1", "events", "default", field_selector="involvedObject.name=ascend910"))["items"]
    assert any(e["reason"] == "FailedScheduling" and e["type"] == "Warning" for e in events)


def server_deployment(replicas: int, version: str) -> dict[str, Any]:
    labels = {"app": "echo"}
    container = {
        "name": "server", "image": "ascend-mlops/server:0.1.0", "command": [sys.executable, "-c", SERVER],
        "args": ["--port", "8080"], "env": [{"name": "VERSION", "value": version}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "resources": {"limits": {scheduling.ASCEND_RESOURCE: "1"}},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container], "nodeSelector": {"accelerator": "huawei-Ascend310"},
                    "tolerations": [{"key": scheduling.ASCEND_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    }


async def test_deployment_readiness_service_and_rollout(sandbox: Sandbox, client: KubeClient) -> None:
    await client.create("apps/v1", "deployments", "default", server_deployment(2, "v1"))
    await client.create(
        "v1", "services", "default",
        {"metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    )

    async def deployment_status(version_count: int = 2) -> dict[str, Any] | None:
        deployment = await client.get("apps/v1", "deployments", "default", "echo")
        status = (deployment or {}).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        complete = conditions.get("Progressing", {}).get("reason") == "NewReplicaSetAvailable"
        ok = status.get("readyReplicas") == version_count and status.get("updatedReplicas") == version_count and complete
        return status if ok and status.get("replicas") == version_count else None

    status = await eventually(deployment_status, timeout=30, what="2 ready replicas")
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Available"] == "MinimumReplicasAvailable"
    pods = (await client.listing("v1", "pods", "default", label_selector="app=echo"))["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {scheduling.ASCEND_NODE}
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Deployment" for p in pods)
    pids = [int(p["status"]["containerStatuses"][0]["containerID"].removeprefix("sandbox://")) for p in pods]

    service = await eventually(
        lambda: client.get("v1", "services", "default", "echo"), timeout=30,
        what="the service",
    )

    async def service_url() -> str | None:
        svc = await client.get("v1", "services", "default", "echo")
        return ((svc or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_URL)

    url = await eventually(service_url, timeout=30, what="the service's local URL")
    assert service["spec"]["clusterIP"].startswith("10.96.")
    answers = set()
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.get(url) as response:
                answers.add(await response.text())
    assert {a.split()[0] for a in answers} == {p["metadata"]["name"] for p in pods}  # both endpoints take turns

    # A template change rolls the pods one at a time (maxSurge 0: the node has 4 devices, 2 in use).
    await client.patch("apps/v1", "deployments", "default", "echo", {"spec": {"template": {"spec": {"containers": [{**server_deployment(2, "v2")["spec"]["template"]["spec"]["containers"][0]}]}}}})
    await eventually(lambda: _all_on_version(client, "v2"), what="the rollout to v2", timeout=60)
    await eventually(deployment_status, what="the rolled deployment to settle", timeout=60)
    await eventually(lambda: _gone(pids), timeout=30, what="the old processes to be killed")

    await client.delete("apps/v1", "deployments", "default", "echo")
    await eventually(lambda: _no_pods(client, "app=echo"), timeout=30, what="the pods to be garbage-collected")


async def _all_on_version(client: KubeClient, version: str) -> bool:
    pods = (await client.listing("v1", "pods", "default", label_selector="app=echo"))["items"]
    envs = [p["spec"]["containers"][0]["env"][0]["value"] for p in pods]
    return len(pods) == 2 and envs == [version, version]


async def _gone(pids: list[int]) -> bool:
    return not any(pid_alive(pid) for pid in pids)


async def _no_pods(client: KubeClient, selector: str) -> bool:
    return not (await client.listing("v1", "pods", "default", label_selector=selector))["items"]


async def test_deleting_a_pod_kills_its_process_group(sandbox: Sandbox, client: KubeClient) -> None:
    code = "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\ntime.sleep(600)\n"
    await client.create("v1", "pods", "default", python_pod("sleeper", code))

    async def running() -> int | None:
        statuses = (await pod_status(client, "sleeper")).get("containerStatuses") or [{}]
        cid = statuses[0].get("containerID")
        return int(cid.removeprefix("sandbox://")) if cid and "running" in statuses[0].get("state", {}) else None

    pid = await eventually(running, timeout=30, what="the sleeper to run")
    assert len(sandbox_processes(sandbox.root)) >= 1
    await client.delete("v1", "pods", "default", "sleeper")
    await eventually(lambda: _gone([pid]), timeout=30, what="the process to die")
    await eventually(lambda: _no_processes(sandbox.root), timeout=30, what="the grandchild to die too")


async def _no_processes(root: Path) -> bool:
    return sandbox_processes(root) == []


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def test_secret_key_refs_reach_the_process_and_a_missing_secret_waits(
    sandbox: Sandbox, client: KubeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(kubelet, "CONFIG_RETRY", 0.2)
    out = tmp_path / "env.json"
    code = (
        "import json, os, sys\n"
        "keys = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL', 'ASCEND_MLOPS_SCRATCH']\n"
        "open(sys.argv[1], 'w').write(json.dumps({k: os.environ.get(k) for k in keys}))\n"
        "open(os.path.join(os.environ['ASCEND_MLOPS_SCRATCH'], 'x'), 'w').write('scratch is writable')\n"
    )

    def ref(key: str, optional: bool = False) -> dict[str, Any]:
        return {"name": key, "valueFrom": {"secretKeyRef": {"name": "store", "key": key, **({"optional": True} if optional else {})}}}

    env = [
        ref("AWS_ACCESS_KEY_ID"), ref("AWS_SECRET_ACCESS_KEY"),
        ref("AWS_SESSION_TOKEN", optional=True), ref("AWS_ENDPOINT_URL", optional=True),
        {"name": "ASCEND_MLOPS_SCRATCH", "value": "/scratch"},
    ]
    pod = python_pod(
        "reader", code, str(out),
        container={"env": env, "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    await client.create("v1", "pods", "default", pod)

    async def waiting_for(reason: str, text: str) -> dict[str, Any] | None:
        statuses = (await pod_status(client, "reader")).get("containerStatuses") or [{}]
        state = statuses[0].get("state", {}).get("waiting", {})
        return state if state.get("reason") == reason and text in state.get("message", "") else None

    waiting = await eventually(lambda: waiting_for("CreateContainerConfigError", 'secret "store" not found'), timeout=30, what="the missing Secret")
    assert (await pod_status(client, "reader"))["phase"] == "Pending"
    # A Secret without a required key: the message names the key, never a value.
    await client.create("v1", "secrets", "default", secret("store", {"AWS_ACCESS_KEY_ID": "AK-1234"}))
    waiting = await eventually(
        lambda: waiting_for("CreateContainerConfigError", "couldn't find key AWS_SECRET_ACCESS_KEY in Secret default/store"), timeout=30,
        what="the missing key",
    )
    assert "AK-1234" not in waiting["message"]
    events = [e for e in (await client.listing("v1", "events", "default"))["items"] if e["involvedObject"]["name"] == "reader"]
    assert any(e["reason"] == "Failed" and 'secret "store" not found' in e["message"] for e in events)
    assert not any("AK-1234" in e["message"] for e in events)
    # Once the Secret is complete the kubelet's retry starts the pod.
    await client.delete("v1", "secrets", "default", "store")
    await client.create(
        "v1", "secrets", "default",
        secret("store", {"AWS_ACCESS_KEY_ID": "AK-1234", "AWS_SECRET_ACCESS_KEY": "SK-5678", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}),
    )
    status = await eventually(lambda: finished(client, "reader"), timeout=30, what="the pod to run once its Secret is complete")
    assert status["phase"] == "Succeeded", status
    seen = json.loads(out.read_text())
    assert seen["AWS_ACCESS_KEY_ID"] == "AK-1234" and seen["AWS_SECRET_ACCESS_KEY"] == "SK-5678"
    assert seen["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert seen["AWS_SESSION_TOKEN"] is None  # optional, absent from the Secret: not set
    assert seen["ASCEND_MLOPS_SCRATCH"] != "/scratch" and str(sandbox.root) in seen["ASCEND_MLOPS_SCRATCH"]
    log = await client.read_pod_log("default", "reader")
    assert "SK-5678" not in str(log)


WATCHER = r"""
import os, sys, time
folder, out = sys.argv[1], sys.argv[2]
last = None
while True:
    try:
        value = open(os.path.join(folder, "token")).read()
    except OSError:
        value = "<none>"
    if value != last:
        with open(out, "a") as f:
            f.write(value.strip() + "\n")
        last = value
    time.sleep(0.05)
"""


async def test_secret_and_config_map_volumes_are_mounted_and_follow_changes(
    sandbox: Sandbox, client: KubeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kubelet, "CONFIG_RETRY", 0.2)
    caplog.set_level(logging.DEBUG, logger="ascend_mlops.sandbox")
    out = tmp_path / "seen.txt"
    pod = python_pod(
        "mounter", WATCHER, "/etc/tokens", str(out), restart="Always",
        container={"volumeMounts": [
            {"name": "tokens", "mountPath": "/etc/tokens", "readOnly": True},
            {"name": "conf", "mountPath": "/etc/conf"},
            {"name": "maybe", "mountPath": "/etc/maybe"},
        ]},
        volumes=[
            {"name": "tokens", "secret": {"secretName": "tokens", "defaultMode": 0o440}},
            {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "a", "path": "sub/a.txt"}]}},
            {"name": "maybe", "secret": {"secretName": "absent", "optional": True}},
        ],
    )
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "conf"}, "data": {"a": "alpha", "b": "beta"}})
    await client.create("v1", "pods", "default", pod)

    waiting = await eventually(lambda: creating(client, "mounter"), timeout=30, what="ContainerCreating for the missing Secret")
    assert waiting["message"] == 'MountVolume.SetUp failed for volume "tokens" : secret "tokens" not found'
    assert (await pod_status(client, "mounter"))["phase"] == "Pending"
    events = (await client.listing("v1", "events", "default", field_selector="involvedObject.name=mounter"))["items"]
    assert any(e["reason"] == "FailedMount" and e["type"] == "Warning" and 'secret "tokens" not found' in e["message"] for e in events)
    assert not out.exists()  # nothing ran

    await client.create("v1", "secrets", "default", secret("tokens", {"token": "first-token\n"}))
    await eventually(lambda: _lines_end_with(out, "first-token"), timeout=30, what="the process to read the mounted token")
    folder = next((sandbox.root / "pods" / "default").glob("mounter-*")) / "volumes"
    data = os.readlink(folder / "tokens" / "..data")
    assert data.startswith("..") and os.readlink(folder / "tokens" / "token") == "..data/token"
    assert stat.S_IMODE((folder / "tokens" / data / "token").stat().st_mode) == 0o440
    assert (folder / "conf" / "sub" / "a.txt").read_text() == "alpha" and not (folder / "conf" / "b").exists()
    assert [p.name for p in (folder / "maybe").iterdir() if not p.name.startswith("..")] == []

    # Rotation: the Secret changes in the API, the running process reads the new token, no restart.
    loop = asyncio.get_running_loop()
    began = loop.time()
    await client.patch("v1", "secrets", "default", "tokens", {"data": {"token": base64.b64encode(b"second-token").decode()}})
    await eventually(lambda: _lines_end_with(out, "second-token"), timeout=10, what="the rotated token in the running process")
    took = loop.time() - began
    print(f"the running process read the rotated token {took:.2f}s after the Secret was written")
    assert took < 5, f"the volume followed the Secret only after {took:.1f}s"
    assert not (folder / "tokens" / data).exists()  # the previous version's folder is gone
    statuses = (await pod_status(client, "mounter"))["containerStatuses"]
    assert statuses[0]["restartCount"] == 0
    assert "<none>" not in out.read_text().splitlines()  # never a moment without the file

    # A deleted Secret leaves the files as they were (as the real kubelet); the optional one appears when created.
    await client.delete("v1", "secrets", "default", "tokens")
    await client.create("v1", "secrets", "default", secret("absent", {"k": "v"}))
    await eventually(lambda: _exists(folder / "maybe" / "k"), timeout=30, what="the optional Secret's key")
    assert (folder / "tokens" / "token").read_text() == "second-token"
    assert any("volume tokens of pod default/mounter updated" in r.getMessage() for r in caplog.records)
    assert not any("first-token" in r.getMessage() or "second-token" in r.getMessage() for r in caplog.records)

    await client.delete("v1", "pods", "default", "mounter")
    await eventually(lambda: _gone_dir(folder), timeout=30, what="the pod's volumes to be removed with it")


async def _lines_end_with(path: Path, value: str) -> bool:
    return path.exists() and path.read_text().splitlines()[-1:] == [value]


async def _exists(path: Path) -> bool:
    return path.exists()


async def _gone_dir(path: Path) -> bool:
    return not path.exists()


async def test_a_claim_named_by_two_volumes_never_mounts_as_on_a_real_kubelet(sandbox: Sandbox, client: KubeClient, tmp_path: Path) -> None:
    """A real kubelet mounts a claim once per pod (kubernetes/kubernetes#51853): the pod stays ContainerCreating."""
    out = tmp_path / "ran"
    pod = python_pod(
        "twice", "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('ran')", str(out),
        container={"volumeMounts": [
            {"name": "dataset-storage", "mountPath": "/mnt/dataset", "readOnly": True},
            {"name": "output-storage", "mountPath": "/mnt/output"},
        ]},
        volumes=[
            {"name": "dataset-storage", "persistentVolumeClaim": {"claimName": "flowers-data", "readOnly": True}},
            {"name": "output-storage", "persistentVolumeClaim": {"claimName": "flowers-data"}},
        ],
    )
    await client.create("v1", "pods", "default", pod)

    waiting = await eventually(lambda: creating(client, "twice"), timeout=30, what="ContainerCreating for the claim mounted twice")
    assert waiting["message"].startswith("Unable to attach or mount volumes: unmounted volumes=[output-storage]")
    events = (await client.listing("v1", "events", "default", field_selector="involvedObject.name=twice"))["items"]
    assert any(e["reason"] == "FailedMount" and e["type"] == "Warning" for e in events)
    assert (await pod_status(client, "twice"))["phase"] == "Pending"
    assert not out.exists()

    # One volume for the claim, two mounts of it: the same pod starts.
    pod["metadata"]["name"] = "once"
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "flowers-data"}}]
    for mount in pod["spec"]["containers"][0]["volumeMounts"]:
        mount["name"] = "data"
    await client.create("v1", "pods", "default", pod)
    status = await eventually(lambda: finished(client, "once"), timeout=30, what="the pod with one volume per claim")
    assert status["phase"] == "Succeeded" and out.read_text() == "ran"
