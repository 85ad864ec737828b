"""The real kubectl against the sandbox (no operator): discovery, apply, tables, logs, delete.

kubectl comes from $KUBECTL, .ci/tools/bin (installed by .ci/checks/tools.sh) or
PATH; without it these tests are skipped with a warning that says so.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ascend_mlops.kube import KubeClient
from ascend_mlops.sandbox.apiserver import ThreadedAPIServer
from ascend_mlops.sandbox.cluster import Sandbox, SandboxConfig
from tests.e2e.tools import find_kubectl
from tests.helpers import REPO_ROOT

KUBECTL, WHY = find_kubectl(install=False)


def _require_kubectl() -> Path:
    if KUBECTL is None:
        message = f"KUBECTL NOT AVAILABLE - kubectl checks of the sandbox API SKIPPED: {WHY} (run .ci/checks/tools.sh kubectl)"
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    return KUBECTL


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(root=tmp_path / "sb", run_operator=False, crd_dirs=(REPO_ROOT / "crds",))) as running:
        yield running


async def kubectl(sandbox: Sandbox, *args: str) -> tuple[int, str, str]:
    binary = _require_kubectl()
    env = {**os.environ, "HOME": str(sandbox.root)}  # the discovery cache goes under the sandbox
    process = await asyncio.create_subprocess_exec(
        str(binary), "--kubeconfig", str(sandbox.kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO_ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


SEED = ("-f", "examples/flowers/trainingjob.yaml", "-f", "examples/flowers/modelconversion.yaml", "-f", "examples/flowers/inferenceservice.yaml")


async def test_apply_get_describe_delete_the_example(sandbox: Sandbox) -> None:
    code, out, err = await kubectl(sandbox, "apply", *SEED)
    assert code == 0, err
    assert "trainingjob.ascend.mlops.dev/flowers-resnet50 created" in out
    code, out, err = await kubectl(sandbox, "get", "trainingjobs,modelconversions,inferenceservices")
    assert code == 0, err
    assert "trainingjob.ascend.mlops.dev/flowers-resnet50" in out and "inferenceservice.ascend.mlops.dev/flowers" in out
    code, out, _ = await kubectl(sandbox, "apply", *SEED)
    assert "unchanged" in out
    code, out, err = await kubectl(sandbox, "get", "amtj", "flowers-resnet50", "-o", "jsonpath={.spec.dataset.trainRatio}")
    assert (code, out) == (0, "0.8"), err
    code, out, err = await kubectl(sandbox, "describe", "inferenceservice", "flowers")
    assert code == 0 and "huawei.com/Ascend310" in out, err
    # The canary example on top: the same InferenceService with spec.canary, and a Canary column.
    code, out, err = await kubectl(sandbox, "apply", "-f", "examples/flowers/canary.yaml")
    assert code == 0 and "inferenceservice.ascend.mlops.dev/flowers configured" in out, err
    code, out, err = await kubectl(sandbox, "get", "inferenceservice", "flowers", "-o", "jsonpath={.spec.canary.trafficPercent}")
    assert (code, out) == (0, "20"), err
    code, out, err = await kubectl(sandbox, "get", "inferenceservices")
    assert code == 0 and "CANARY" in out.splitlines()[0], out + err
    code, out, err = await kubectl(sandbox, "delete", *SEED, "-f", "examples/flowers/canary.yaml", "--ignore-not-found")
    assert code == 0, err
    code, out, err = await kubectl(sandbox, "get", "trainingjobs,modelconversions,inferenceservices")
    assert "No resources found" in out + err


async def test_nodes_pods_and_logs(sandbox: Sandbox) -> None:
    code, out, err = await kubectl(sandbox, "get", "nodes")
    assert code == 0, err
    assert "sandbox-ascend310-0   Ready" in out and "sandbox-cpu-0" in out
    async with KubeClient(sandbox.url) as client:
        pod = {
            "metadata": {"name": "hello"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "ascend-mlops/trainer:0.1.0", "command": [sys.executable, "-c", "print('hi from the sandbox')"]}]},
        }
        await client.create("v1", "pods", "default", pod)
        for _ in range(600):
            current = await client.get("v1", "pods", "default", "hello")
            if (current or {}).get("status", {}).get("phase") == "Succeeded":
                break
            await asyncio.sleep(0.05)
    code, out, err = await kubectl(sandbox, "get", "pods", "-o", "wide")
    assert code == 0 and "Completed" in out and "sandbox-cpu-0" in out, out + err
    code, out, err = await kubectl(sandbox, "logs", "hello")
    assert (code, out.strip()) == (0, "hi from the sandbox"), err
    code, out, err = await kubectl(sandbox, "get", "events", "--field-selector", "involvedObject.name=hello")
    assert "Scheduled" in out and "Started" in out, out + err


def test_threaded_server_serves_kubectl(tmp_path: Path) -> None:
    binary = _require_kubectl()
    with ThreadedAPIServer(crd_dirs=[REPO_ROOT / "crds"]) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        result = subprocess.run(
            [str(binary), "--kubeconfig", str(kubeconfig), "api-resources", "--api-group", "ascend.mlops.dev"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
        )
    assert result.returncode == 0, result.stderr
    for name in ("trainingjobs", "modelconversions", "inferenceservices", "amtj", "ammc", "amis"):
        assert name in result.stdout
