"""One real cluster for the whole session: ../shared/k8s up, our four images in the node, the chart installed.

Skipped, with the reason, where it cannot run (not root, no ../shared/k8s, the
images not built); under CI=true each of those is a failure instead, so CI
never passes without having run these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import constants
from ascend_mlops.sandbox.flow import Example
from ascend_mlops.sandbox.objects import merge_patch
from tests.cluster import realcluster as rc
from tests.helpers import FLOWERS_DIR, REPO_ROOT, gateway_api_crds

HERE = os.path.dirname(__file__)
HERE_PATH = Path(HERE)
IN_CI = os.environ.get("CI", "").lower() == "true"
# The operator's podStartTimeoutSeconds here (300 by default): test_stuck_pods waits for it.
POD_START_TIMEOUT = 45


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"the cluster tests must run in CI, but {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(HERE):
            item.add_marker(pytest.mark.cluster)
    # The cluster tests run after all others, so that .ci/run's tests/cluster/prepare.sh (up, the
    # images loaded) runs beside them; the operator's log is checked for 403s after every other cluster test.
    cluster = [i for i in items if str(i.path).startswith(HERE)]
    rbac = [i for i in cluster if i.name == "test_the_operator_was_never_forbidden"]
    cluster = [i for i in cluster if i not in rbac] + rbac
    chosen = set(map(id, cluster))
    items[:] = [i for i in items if id(i) not in chosen] + cluster


def _script(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}\n{result.stdout[-2000:]}")
    return result.stdout


@pytest.fixture(scope="session")
def cluster() -> Iterator[rc.Cluster]:
    script = rc.K8S_DIR / "real-k8s.sh"
    if os.geteuid() != 0:
        unavailable("the real cluster needs root (it runs a kubelet and containerd)")
    if not script.is_file():
        unavailable(f"no real cluster here: {script} is missing")
    # Up, and the images loaded: perhaps done already by .ci/run in the background (then this waits for it).
    prepared = subprocess.run([str(HERE_PATH / "prepare.sh")], capture_output=True, text=True, timeout=1500, check=False)
    if prepared.returncode != 0:
        if "is not built" in prepared.stderr:
            unavailable(f"our images are not there to load into the node ({prepared.stderr.strip().splitlines()[-1]}): "
                        "run scripts/build-images.sh first")
        raise AssertionError(f"tests/cluster/prepare.sh exited {prepared.returncode}:\n{prepared.stderr[-5000:]}")
    env = dict(os.environ)
    for line in prepared.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"').replace("$PATH", os.environ.get("PATH", ""))
    if "KUBECONFIG" not in env:
        raise AssertionError(f"real-k8s.sh up printed no KUBECONFIG:\n{prepared.stdout}")
    probe = rc.Cluster(env=env, node="")
    node = probe.list("nodes")[0]["metadata"]["name"]
    cluster = rc.Cluster(env=env, node=node)
    _clean_earlier_runs(cluster)
    cluster.kubectl("label", "node", node, "accelerator=huawei-Ascend310", "ascend.mlops.dev/simulated-npu=true", "--overwrite")
    install_chart(cluster)
    yield cluster
    # Down at the end, so that what this machine runs next (a podman build, the next up) finds no
    # node half there: ASCEND_MLOPS_KEEP_CLUSTER=1 keeps it up for the next local run (up then takes 1 s).
    if os.environ.get("ASCEND_MLOPS_KEEP_CLUSTER") != "1":
        _script(str(script), "down", timeout=300)


def install_chart(cluster: rc.Cluster) -> None:
    """`helm install` as docs/install.md tells a user of a cluster without a registry, then wait for it."""
    # The Gateway API as a user installs it (its CRDs only: no controller is needed to store HTTPRoutes).
    cluster.apply(gateway_api_crds(), server_side=True)
    # A release of an earlier run runs the images it was started with: start from a fresh one.
    cluster.run("helm", "uninstall", rc.RELEASE, "-n", rc.SYSTEM_NAMESPACE, "--wait", check=False, timeout=180)
    cluster.run(
        "helm", "install", rc.RELEASE, str(REPO_ROOT / "charts" / "ascend-mlops"),
        "-n", rc.SYSTEM_NAMESPACE, "--create-namespace",
        "--set", "imageRegistry=localhost",
        "--set", "image.pullPolicy=Never",
        "--set", "workloads.pullPolicy=Never",
        "--set", "simulator=true",
        "--set", "simulatorDevicePlugin.enabled=true",
        "--set", f"simulatorDevicePlugin.devices={rc.SIMULATED_DEVICES}",
        "--set", f"domain={rc.DOMAIN}",
        "--set", f"podStartTimeoutSeconds={POD_START_TIMEOUT}",
        "--wait", "--timeout", "5m",
        timeout=400,
    )
    rc.eventually(
        lambda: cluster.get("node", cluster.node)["status"]["allocatable"].get("huawei.com/Ascend310") == str(rc.SIMULATED_DEVICES),  # type: ignore[index]
        timeout=120, what="the simulated device plugin's devices in the node's allocatable",
    )


def _clean_earlier_runs(cluster: rc.Cluster) -> None:
    """Namespaces an interrupted run left behind (their resources' finalizers need the operator)."""
    for ns in cluster.list("namespaces", selector=f"{rc.NAMESPACE_LABEL}=true"):
        name = ns["metadata"]["name"]
        for kind in ("trainingjobs", "modelconversions", "inferenceservices", "batchpredictions"):
            for obj in cluster.list(kind, name):
                cluster.run("kubectl", "patch", kind, obj["metadata"]["name"], "-n", name, "--type=merge",
                            "-p", '{"metadata":{"finalizers":null}}', check=False)
        cluster.run("kubectl", "delete", "namespace", name, "--wait=false", check=False)
    for pv in cluster.list("persistentvolumes", selector=rc.NAMESPACE_LABEL):
        cluster.run("kubectl", "delete", "pv", pv["metadata"]["name"], "--wait=false", check=False)


# ---------------------------------------------------------------------------- the seed flow
@dataclass(frozen=True)
class Seed:
    """examples/flowers run to the end in its own namespace, kept for the tests that build on its model."""

    namespace: str
    data: Path  # the host directory behind the claim flowers-data
    version: str  # V001
    operator_pods: tuple[str, str]  # the one deleted mid-flow, the one that finished
    photo: Path


@pytest.fixture(scope="session")
def seed(cluster: rc.Cluster, unstartable: Unstartable) -> Iterator[Seed]:
    del unstartable  # applied first: their pods' start timeout runs out while the seed flow runs
    with cluster.namespace("seed") as namespace:
        yield run_seed_flow(cluster, namespace)


# ---------------------------------------------------------------------------- pods that cannot start
@dataclass(frozen=True)
class Unstartable:
    """A TrainingJob whose image is not in the node and an InferenceService whose volume cannot mount (test_stuck_pods)."""

    namespace: str
    job: str = "no-image"
    service: str = "no-volume"


@pytest.fixture(scope="session")
def unstartable(cluster: rc.Cluster) -> Iterator[Unstartable]:
    with cluster.namespace("stuck") as ns:
        stuck = Unstartable(ns)
        cluster.claim(ns, "data")
        # A claim whose volume's host directory does not exist: scheduled, never mounted (FailedMount).
        cluster.claim(ns, "broken-data").rmdir()
        cluster.apply([
            {
                "apiVersion": constants.API_VERSION, "kind": constants.TRAINING_JOB,
                "metadata": {"name": stuck.job, "namespace": ns},
                "spec": {"algorithm": {"name": "mobilenet_v1"}, "dataset": {"uri": "pvc://data/datasets/flowers"},
                         "output": {"uri": "pvc://data/runs/stuck"}, "resources": SMALL_RESOURCES,
                         # Not loaded into the node, and pull policy Never: ErrImageNeverPull.
                         "image": "localhost/ascend-mlops/not-loaded:0.0.0"},
            },
            {
                "apiVersion": constants.API_VERSION, "kind": constants.INFERENCE_SERVICE,
                "metadata": {"name": stuck.service, "namespace": ns},
                "spec": {"model": {"uri": "pvc://broken-data/runs/flowers-resnet50/V001/om/model"}, "runtime": "acl",
                         "replicas": 1, "resources": SMALL_RESOURCES},
            },
        ])
        yield stuck


def photos(per_class: int) -> dict[str, list[Path]]:
    if not FLOWERS_DIR.is_dir():
        unavailable(f"the flower photos are not at {FLOWERS_DIR}")
    classes = sorted(p for p in FLOWERS_DIR.iterdir() if p.is_dir())
    return {c.name: sorted(c.glob("*.jp*g"))[:per_class] for c in classes}


def small_dataset(target: Path, per_class: int = 16) -> Path:
    """A few real photos per class (the trainer's 0.8 split still holds out some of each)."""
    for name, files in photos(per_class).items():
        (target / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, target / name / f.name)
    rc.chown_for_pods(target)
    return target


def held_out_photo() -> Path:
    return next(iter(photos(40).values()))[-1]


def seed_manifests(namespace: str, *, example: str = "flowers") -> dict[str, dict[str, Any]]:
    """The example's manifests with its quick profile and requests that fit a 2-core node; nothing else changed."""
    loaded = Example.load(REPO_ROOT / "examples" / example, batch=example == "flowers")
    profile = loaded.profile("quick")
    docs: dict[str, dict[str, Any]] = {}
    for manifest in loaded.manifests:
        key = f"{manifest['kind']}/{manifest['metadata']['name']}"
        doc = merge_patch(manifest, profile.get(key, {}))
        if "resources" in doc["spec"] or doc["kind"] in (constants.TRAINING_JOB, constants.INFERENCE_SERVICE):
            doc["spec"]["resources"] = SMALL_RESOURCES
        doc["metadata"]["namespace"] = namespace
        docs[doc["kind"]] = doc
    return docs


# The examples ask for ModelArts' 3 CPU / 6 GiB: a 2-core node schedules none of that.
SMALL_RESOURCES: dict[str, dict[str, str]] = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "3Gi"}}


def no_failure(obj: dict[str, Any]) -> str | None:
    phase = (obj.get("status") or {}).get("phase")
    return f"phase {phase}" if phase in ("Failed", "Invalid") else None


def run_seed_flow(cluster: rc.Cluster, namespace: str) -> Seed:
    data = cluster.claim(namespace, "flowers-data")
    small_dataset(data / "datasets" / "flowers")
    docs = seed_manifests(namespace)
    # As a user does: everything at once; the conversion and the service wait for what they reference.
    cluster.apply([docs[constants.TRAINING_JOB], docs[constants.MODEL_CONVERSION], docs[constants.INFERENCE_SERVICE]])
    job = docs[constants.TRAINING_JOB]["metadata"]["name"]

    # The operator's pod deleted while the trainer runs: the new one finishes the flow.
    def training_pod_running() -> str | None:
        for pod in cluster.list("pods", namespace):
            if rc.owned_by(pod, constants.TRAINING_JOB, job) and pod["status"].get("phase") == "Running":
                return str(pod["metadata"]["name"])
        return None

    rc.eventually(training_pod_running, timeout=300, what="the trainer's pod Running")
    [old] = [p["metadata"]["name"] for p in cluster.operator_pods()]
    cluster.operator_logs.append(cluster.operator_log(old))
    cluster.kubectl("delete", "pod", "-n", rc.SYSTEM_NAMESPACE, old, "--wait=false")

    def new_operator_ready() -> str | None:
        for pod in cluster.operator_pods():
            ready = [c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"]
            if pod["metadata"]["name"] != old and ready and ready[0]["status"] == "True":
                return str(pod["metadata"]["name"])
        return None

    new = rc.eventually(new_operator_ready, timeout=180, what="a new operator pod Ready")
    done = cluster.wait_condition(constants.TRAINING_JOB, job, namespace, "Succeeded", timeout=900, fail_on=no_failure)
    del done
    conversion = docs[constants.MODEL_CONVERSION]["metadata"]["name"]
    cluster.wait_condition(constants.MODEL_CONVERSION, conversion, namespace, "Succeeded", timeout=600, fail_on=no_failure)
    isvc = docs[constants.INFERENCE_SERVICE]["metadata"]["name"]
    cluster.wait_condition(constants.INFERENCE_SERVICE, isvc, namespace, "Ready", timeout=600)
    trained = cluster.get(constants.TRAINING_JOB, job, namespace)
    assert trained is not None
    return Seed(namespace, data, trained["status"]["outputVersion"], (old, new), held_out_photo())
