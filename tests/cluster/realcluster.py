"""The real Kubernetes of ../shared/k8s, as the cluster tests use it: kubectl, helm, images, namespaces.

Everything goes through the real command-line tools a user has (kubectl sends
protobuf where the apiserver takes it, helm installs the chart), so what passes
here is what a user's `kubectl apply` and `helm install` do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ascend_mlops.api import constants
from tests.helpers import REPO_ROOT

T = TypeVar("T")

K8S_DIR = Path(os.environ.get("ASCEND_MLOPS_REAL_K8S", REPO_ROOT.parent / "shared" / "k8s"))
# Host directories the tests' hostPath PersistentVolumes point at (outside the repository).
DATA_ROOT = Path(os.environ.get("ASCEND_MLOPS_CLUSTER_DATA", "/var/tmp/ascend-mlops-cluster"))
RELEASE = "ascend-mlops"
SYSTEM_NAMESPACE = "ascend-mlops-system"
NAMESPACE_PREFIX = "amt-"
NAMESPACE_LABEL = "ascend.mlops.dev/cluster-test"
# The workload pods run as this user (builders/common.py): host directories they write belong to it.
WORKLOAD_UID = 1000
GATEWAY = f"{SYSTEM_NAMESPACE}/tests-gateway"
DOMAIN = "cluster.test"
# Simulated NPUs the plugin advertises: the canary test runs 4 stable replicas and a canary.
SIMULATED_DEVICES = 8
SERVER_PORT = 8080


class CommandError(AssertionError):
    pass


def eventually(predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 1.0) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds with the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"[:4000])
        time.sleep(interval)


@dataclass
class Cluster:
    """One real cluster (control plane + node) with the chart installed."""

    env: dict[str, str]
    node: str
    operator_logs: list[str] = field(default_factory=list)  # logs of operator pods the tests deleted

    # ------------------------------------------------------------------ tools
    def run(self, tool: str, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool, *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise CommandError(f"{tool} {' '.join(args)} exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}"[:4000])
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout).stdout

    def apply(self, docs: Sequence[Mapping[str, Any]] | Mapping[str, Any], namespace: str | None = None,
              server_side: bool = False) -> str:
        """`kubectl apply`; server_side for objects too big for the last-applied annotation (the Gateway API's CRDs)."""
        items = [docs] if isinstance(docs, Mapping) else list(docs)
        text = yaml.safe_dump_all([dict(d) for d in items], sort_keys=False)
        mode = ["--server-side", "--force-conflicts"] if server_side else []
        return self.kubectl("apply", *mode, *(["-n", namespace] if namespace else []), "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        result = self.run("kubectl", "get", kind, name, "-o", "json", *(["-n", namespace] if namespace else []), check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise CommandError(result.stderr)
        return dict(json.loads(result.stdout))

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        args += ["-n", namespace] if namespace else ["-A"]
        if selector:
            args += ["-l", selector]
        return list(json.loads(self.kubectl(*args))["items"])

    def condition(self, kind: str, name: str, namespace: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name, namespace)
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def wait_condition(
        self, kind: str, name: str, namespace: str, type_: str, status: str = "True", *, timeout: float,
        reason: str | None = None, fail_on: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> dict[str, Any]:
        """Wait for a condition; `fail_on` looks at the object and names a failure that ends the wait at once."""

        def check() -> dict[str, Any] | None:
            obj = self.get(kind, name, namespace) or {}
            if fail_on is not None and (problem := fail_on(obj)):
                raise AssertionError(f"{kind}/{name}: {problem}; status: {json.dumps(obj.get('status'))[:3000]}")
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond.get("type") == type_ and cond.get("status") == status and (reason is None or cond.get("reason") == reason):
                    return dict(cond)
            return None

        try:
            return eventually(check, timeout=timeout, what=f"{kind}/{name} {type_}={status}", interval=2.0)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe(namespace)}") from None

    def describe(self, namespace: str) -> str:
        """What a person would look at when a wait failed: the namespace's objects, events and pod logs."""
        parts = []
        for args in (
            ("get", "trainingjobs,modelconversions,inferenceservices,batchpredictions,pods,deployments", "-n", namespace, "-o", "wide"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
        ):
            parts.append(self.run("kubectl", *args, check=False).stdout[-4000:])
        for pod in self.list("pods", namespace):
            name = pod["metadata"]["name"]
            parts.append(f"--- log of {name}\n" + self.run("kubectl", "logs", "-n", namespace, name, "--tail=30", check=False).stdout)
        return "\n".join(parts)[-12000:]

    # ------------------------------------------------------------------ namespaces and storage
    @contextlib.contextmanager
    def namespace(self, purpose: str) -> Iterator[str]:
        """A fresh namespace for one test; deleted afterwards (its PersistentVolumes and host data too)."""
        name = f"{NAMESPACE_PREFIX}{purpose}-{uuid.uuid4().hex[:5]}"[:63].rstrip("-")
        self.kubectl("create", "namespace", name)
        self.kubectl("label", "namespace", name, f"{NAMESPACE_LABEL}=true")
        try:
            yield name
        finally:
            self.delete_namespace(name)

    def delete_namespace(self, name: str) -> None:
        # Our resources first, while the operator runs (it removes its finalizers), then the namespace.
        self.run("kubectl", "delete", "trainingjobs,modelconversions,inferenceservices,batchpredictions", "--all",
                 "-n", name, "--wait=true", "--timeout=60s", check=False, timeout=90)
        self.run("kubectl", "delete", "namespace", name, "--wait=false", check=False)
        for pv in self.list("persistentvolumes", selector=f"{NAMESPACE_LABEL}={name}"):
            self.run("kubectl", "delete", "pv", pv["metadata"]["name"], "--wait=false", check=False)

    def host_dir(self, namespace: str, claim: str) -> Path:
        return DATA_ROOT / namespace / claim

    def claim(self, namespace: str, claim: str, host_dir: Path | None = None) -> Path:
        """A PersistentVolumeClaim bound to a hostPath PersistentVolume on `host_dir` (made writable for the pods)."""
        path = host_dir or self.host_dir(namespace, claim)
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, WORKLOAD_UID, WORKLOAD_UID)
        pv = f"{namespace}-{claim}"[:253]
        self.apply([
            {
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv, "labels": {NAMESPACE_LABEL: namespace}},
                "spec": {
                    "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                    "hostPath": {"path": str(path), "type": "Directory"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            },
            {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                         "resources": {"requests": {"storage": "5Gi"}}},
            },
        ])
        eventually(lambda: (self.get("pvc", claim, namespace) or {}).get("status", {}).get("phase") == "Bound",
                   timeout=60, what=f"claim {claim} bound")
        return path

    # ------------------------------------------------------------------ the operator
    def operator_pods(self) -> list[dict[str, Any]]:
        return self.list("pods", SYSTEM_NAMESPACE, selector="app.kubernetes.io/component=operator")

    def operator_log(self, pod: str) -> str:
        return self.kubectl("logs", "-n", SYSTEM_NAMESPACE, pod, "-c", "operator", check=False, timeout=60)

    def all_operator_logs(self) -> str:
        return "\n".join([*self.operator_logs, *(self.operator_log(p["metadata"]["name"]) for p in self.operator_pods())])

    # ------------------------------------------------------------------ services
    def service_address(self, name: str, namespace: str, port: int | None = None) -> str:
        """http://<ClusterIP>:<port>: the host reaches ClusterIPs through kube-proxy (the node has no DNS)."""
        service = self.get("service", name, namespace)
        assert service is not None, f"no Service {namespace}/{name}"
        ports = service["spec"]["ports"]
        chosen = ports[0]["port"] if port is None else port
        return f"http://{service['spec']['clusterIP']}:{chosen}"


def http_url(cluster: Cluster, service: str, namespace: str) -> str:
    """The Service's address, once kube-proxy routes it (a second or so after its endpoints are ready)."""
    url = cluster.service_address(service, namespace)
    eventually(lambda: reachable(url), timeout=60, what=f"{namespace}/{service} at {url} through kube-proxy")
    return url


def reachable(url: str) -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        with socket.create_connection((host, int(port or 80)), timeout=2):
            return True
    except OSError:
        return False


def http(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def multipart_image(path: Path, field_name: str = "images") -> tuple[bytes, dict[str, str]]:
    """A `curl -F images=@photo.jpg` body: how ModelArts' clients send a picture."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{path.name}\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def chown_for_pods(target: Path) -> None:
    """Give a host tree to the pods' user (hostPath volumes ignore fsGroup)."""
    for root, dirs, files in os.walk(target):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, WORKLOAD_UID, WORKLOAD_UID)
    os.chown(target, WORKLOAD_UID, WORKLOAD_UID)


def owned_by(obj: Mapping[str, Any], kind: str, name: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get(constants.LABEL_OWNER_KIND) == kind and labels.get(constants.LABEL_OWNER_NAME) == name
