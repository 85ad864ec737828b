"""examples/flowers' BatchPrediction on the real node: the seed's model over the photos on 2 shard pods."""

from __future__ import annotations

import json

from ascend_mlops.api import constants, contract
from tests.cluster import realcluster as rc
from tests.cluster.conftest import SMALL_RESOURCES, Seed, no_failure, seed_manifests


def test_a_batch_prediction_on_two_shards(cluster: rc.Cluster, seed: Seed) -> None:
    with cluster.namespace("batch") as ns:
        cluster.claim(ns, "flowers-data", host_dir=seed.data)
        doc = seed_manifests(ns)[constants.BATCH_PREDICTION]
        name = doc["metadata"]["name"]
        # The seed's conversion is in another namespace: the same model by its URI, and a folder of its own.
        version = f"pvc://flowers-data/runs/flowers-resnet50/{seed.version}"
        doc["spec"]["model"] = {"uri": f"{version}/om/model", "labels": f"{version}/labels.txt"}
        doc["spec"]["output"]["uri"] = f"pvc://flowers-data/batch/{ns}"
        doc["spec"]["resources"] = SMALL_RESOURCES
        assert doc["spec"]["parallelism"] == 2
        cluster.apply(doc)
        cluster.wait_condition(constants.BATCH_PREDICTION, name, ns, "Succeeded", timeout=900, fail_on=no_failure)
        shards = [p for p in cluster.list("pods", ns) if rc.owned_by(p, constants.BATCH_PREDICTION, name)]
        assert len(shards) == 2 and all(p["status"]["phase"] == "Succeeded" for p in shards)
        assert {p["spec"]["containers"][0]["resources"]["limits"]["huawei.com/Ascend310"] for p in shards} == {"1"}
        photos = sorted((seed.data / "datasets" / "flowers").glob("*/*.jp*g"))
        manifest = seed.data / "batch" / ns / contract.batch_manifest_name(name)
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        assert len(lines) == len(photos) and {line["result"] for line in lines} == {"SUCCESSFUL"}
        status = cluster.get(constants.BATCH_PREDICTION, name, ns)
        assert status is not None and status["status"]["progress"]["done"] == len(photos)
