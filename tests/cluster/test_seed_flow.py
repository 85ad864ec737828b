"""examples/flowers on a real kubelet: train -> convert -> serve -> classify a held-out photo through the ClusterIP."""

from __future__ import annotations

import json

from ascend_mlops.api import constants
from ascend_mlops.builders import inference
from tests.cluster import realcluster as rc
from tests.cluster.conftest import Seed


def test_the_seed_flow_serves_a_real_photo(cluster: rc.Cluster, seed: Seed) -> None:
    ns = seed.namespace
    isvc = cluster.get(constants.INFERENCE_SERVICE, "flowers", ns)
    assert isvc is not None and isvc["status"]["phase"] == "Ready"
    assert isvc["status"]["model"]["simulated"] is True
    url = rc.http_url(cluster, inference.service_name("flowers"), ns)
    body, headers = rc.multipart_image(seed.photo)
    status, _, answer = rc.http("POST", url + "/", body, headers, timeout=60)
    assert status == 200, answer[:500]
    result = json.loads(answer)
    classes = {p.name for p in seed.photo.parent.parent.iterdir() if p.is_dir()}
    assert result["predicted_label"] in classes, result
    assert {label for label, _ in result["scores"]} <= classes
    # The artifacts are on the claim, where the next pod found them.
    version = seed.data / "runs" / "flowers-resnet50" / seed.version
    assert (version / "frozen_graph" / "frozen_graph.pb").is_file()
    assert (version / "om" / "model" / "model.om").is_file()


def test_the_server_pod_was_given_an_ascend_device_by_the_plugin(cluster: rc.Cluster, seed: Seed) -> None:
    [pod] = [p for p in cluster.list("pods", seed.namespace) if rc.owned_by(p, constants.INFERENCE_SERVICE, "flowers")]
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["huawei.com/Ascend310"] == "1"
    # The simulated plugin's Allocate answer (what Huawei's plugin sets too), seen inside the container.
    devices = cluster.kubectl("exec", "-n", seed.namespace, pod["metadata"]["name"], "--", "printenv", "ASCEND_VISIBLE_DEVICES")
    assert devices.strip().isdigit(), devices
    assert int(devices) < rc.SIMULATED_DEVICES


def test_the_operator_deleted_mid_flow_left_no_duplicates(cluster: rc.Cluster, seed: Seed) -> None:
    old, new = seed.operator_pods
    assert old != new  # (later tests upgrade the release: its pod may have changed again since)
    pods = cluster.list("pods", seed.namespace)
    names = sorted(p["metadata"]["name"] for p in pods)
    training = [n for n in names if n.startswith("flowers-resnet50-worker")]
    conversion = [n for n in names if n.startswith("flowers-resnet50-om-convert")]
    assert training == ["flowers-resnet50-worker-0"], names
    assert conversion == ["flowers-resnet50-om-convert"], names
    deployments = [d["metadata"]["name"] for d in cluster.list("deployments", seed.namespace)]
    assert deployments == [inference.deployment_name("flowers")]
    job = cluster.get(constants.TRAINING_JOB, "flowers-resnet50", seed.namespace)
    assert job is not None and job["status"]["attempts"] == 1
