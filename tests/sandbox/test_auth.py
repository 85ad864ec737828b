"""Token authentication through the sandbox, with a real model server (issue 12's sandbox side; no operator).

A tiny model runs as an `ascend-mlops serve` pod the way the operator makes one
for `spec.auth`: the Secret as a volume at `contract.MOUNT_AUTH_TOKENS` and
`--auth-tokens` naming that folder. The kubelet writes the Secret in the real
kubelet's layout and follows its changes; the server re-reads the folder. So
this checks what a cluster does: no token -> 401, the Secret's token -> 200,
and a rotation by rewriting the Secret, with no restart.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ascend_mlops.api import constants, contract
from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox import kubelet
from ascend_mlops.sandbox.cluster import Sandbox, SandboxConfig, sandbox_processes
from ascend_mlops.settings import Settings
from tests.helpers import REPO_ROOT, eventually
from tests.workloads.server import tinymodel

NAME = "guarded"
NS = "default"
SECRET = "guarded-tokens"
IMAGE = tinymodel.image_bytes("red")
# Every `eventually` here has show_last=False: a probe's last value may hold a token.


def token_secret(*tokens: str) -> dict[str, Any]:
    data = "".join(f"{t}\n" for t in tokens).encode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "data": {"token": base64.b64encode(data).decode()}}


def server_pod(model: Path) -> dict[str, Any]:
    probe = {"httpGet": {"path": contract.HEALTH_READY_PATH, "port": "http"}, "periodSeconds": 1, "failureThreshold": 3}
    container = {
        "name": "server",
        "image": Settings().server_image,
        "args": contract.serve_args(
            model=str(model / contract.FROZEN_GRAPH_DIR), backend="tensorflow", name=NAME,
            labels=str(model / contract.LABELS_FILE), auth_tokens=contract.MOUNT_AUTH_TOKENS,
        ),
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}],
        "ports": [{"name": "http", "containerPort": contract.DEFAULT_SERVER_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "auth-tokens", "mountPath": contract.MOUNT_AUTH_TOKENS, "readOnly": True}],
        "startupProbe": {**probe, "httpGet": {**probe["httpGet"], "path": contract.HEALTH_LIVE_PATH}, "failureThreshold": 120},
        "readinessProbe": probe,
    }
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": NAME, "labels": {constants.LABEL_INSTANCE: NAME}},
        "spec": {"containers": [container], "volumes": [{"name": "auth-tokens", "secret": {"secretName": SECRET}}]},
    }


@dataclass
class Guarded:
    client: KubeClient
    url: str


@pytest.fixture
async def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Guarded]:
    monkeypatch.setattr(kubelet, "CONFIG_RETRY", 0.2)
    model = tinymodel.write_version_dir(tmp_path / "V001")
    root = tmp_path / "sandbox"
    async with Sandbox(SandboxConfig(root=root, run_operator=False, crd_dirs=(REPO_ROOT / "crds",))) as sandbox, KubeClient(sandbox.url) as client:
        await client.create("v1", "services", NS, {
            "metadata": {"name": NAME},
            "spec": {"selector": {constants.LABEL_INSTANCE: NAME}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        })

        async def url() -> str | None:
            svc = await client.get("v1", "services", NS, NAME)
            return ((svc or {}).get("metadata", {}).get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_URL)

        client_url = await eventually(url, timeout=60, show_last=False, what="the Service's sandbox URL")
        await client.create("v1", "pods", NS, server_pod(model))
        yield Guarded(client, client_url)
    assert sandbox_processes(root) == [], "processes outlived the sandbox"


async def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """(status, JSON body, WWW-Authenticate) of POST / with the red image."""
    form = aiohttp.FormData()
    form.add_field("images", IMAGE, filename="red.jpg", content_type="image/jpeg")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url + "/", data=form, headers=headers or {}) as response:
            return response.status, json.loads(await response.text()), response.headers.get("WWW-Authenticate", "")


async def accepted(url: str, token: str) -> bool:
    status, body, _ = await post(url, {"Authorization": f"Bearer {token}"})
    return status == 200 and body.get("predicted_label") == "red"


async def refused(url: str, headers: dict[str, str] | None = None) -> bool:
    status, body, challenge = await post(url, headers)
    return status == 401 and challenge.startswith("Bearer") and "error" in body and "predicted_label" not in body


async def test_a_server_pod_with_a_token_secret_volume_refuses_without_it_and_follows_rotation(guarded: Guarded) -> None:
    client, url = guarded.client, guarded.url
    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    async def waiting_message() -> str | None:
        pod = await client.get("v1", "pods", NS, NAME)
        statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting") or {}
        return waiting.get("message") if waiting.get("reason") == "ContainerCreating" else None

    message = await eventually(waiting_message, timeout=60, show_last=False, what="the pod waiting for its Secret")
    assert message == f'MountVolume.SetUp failed for volume "auth-tokens" : secret "{SECRET}" not found'
    await client.create("v1", "secrets", NS, token_secret(first))

    async def ready() -> bool:
        pod = await client.get("v1", "pods", NS, NAME)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in ((pod or {}).get("status") or {}).get("conditions") or [])

    await eventually(ready, show_last=False, timeout=120, what="the server ready")
    assert await refused(url), "no token"
    assert await refused(url, {"Authorization": f"Bearer {second}"}), "a token that is not in the Secret"
    assert await accepted(url, first), "the Secret's token"
    status, body, _ = await post(url, {"X-Auth-Token": first})
    assert status == 200 and body["predicted_label"] == "red", "ModelArts' X-Auth-Token header"

    # Rotation: both tokens for a while, then only the new one. Bounded by the kubelet's
    # watch (at once) plus the server's re-read interval (about a second).
    began = time.monotonic()
    await client.request("PUT", f"/api/v1/namespaces/{NS}/secrets/{SECRET}", body=token_secret(first, second))
    await eventually(lambda: accepted(url, second), show_last=False, timeout=15, what="the added token accepted")
    added = time.monotonic() - began
    assert await accepted(url, first), "the old token stays valid while both are in the Secret"
    began = time.monotonic()
    await client.patch("v1", "secrets", NS, SECRET, {"data": token_secret(second)["data"]})
    await eventually(lambda: refused(url, {"Authorization": f"Bearer {first}"}), show_last=False, timeout=15, what="the dropped token refused")
    dropped = time.monotonic() - began
    assert await accepted(url, second)
    print(f"\nrotation through the sandbox: added token accepted after {added:.2f}s, dropped token refused after {dropped:.2f}s")
    pod = await client.get("v1", "pods", NS, NAME)
    assert pod is not None and pod["status"]["containerStatuses"][0]["restartCount"] == 0, "a rotation needs no restart"

    log = await client.read_pod_log(NS, NAME)
    assert "authentication on" in log  # the server's own line (it names the folder and counts tokens)
    assert first not in log and second not in log, "a token is in the server's log"
