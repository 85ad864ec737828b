"""examples/flowers-obs on the real node: the dataset, the versions and the model on an S3 server running in the cluster."""

from __future__ import annotations

import json
import tempfile

from ascend_mlops.api import constants
from ascend_mlops.builders import inference
from tests import s3server
from tests.cluster import realcluster as rc
from tests.cluster.conftest import held_out_photo, no_failure, photos, seed_manifests

S3_IMAGE = "localhost/ascend-mlops/s3-test:0.1.0"
SECRET = "flowers-obs-storage"
BUCKET = "flowers"


def s3_pod(namespace: str) -> list[dict[str, object]]:
    labels = {"app.kubernetes.io/name": "s3-test"}
    return [
        {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s3", "namespace": namespace, "labels": labels},
            "spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "s3", "image": S3_IMAGE, "imagePullPolicy": "Never",
                    "ports": [{"containerPort": 5000}],
                    "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
        {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s3", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 5000, "targetPort": 5000}]},
        },
    ]


def test_the_seed_flow_on_object_storage_in_the_cluster(cluster: rc.Cluster) -> None:
    # S3_IMAGE is built and loaded into the node by tests/cluster/prepare.sh, with ours.
    with cluster.namespace("obs") as ns:
        cluster.apply(s3_pod(ns))
        rc.eventually(lambda: any(c["type"] == "Ready" and c["status"] == "True"
                                  for c in (cluster.get("pod", "s3", ns) or {}).get("status", {}).get("conditions") or []),
                      timeout=180, what="the S3 server pod Ready")
        # The pods and this host reach the server through its ClusterIP (the node has no DNS),
        # once kube-proxy has the new Service's endpoint.
        endpoint = cluster.service_address("s3", ns)
        rc.eventually(lambda: rc.reachable(endpoint), timeout=60, what=f"{endpoint} through kube-proxy")
        server = s3server.provision(endpoint)
        server.make_bucket(BUCKET)
        client = server.client()
        for name, files in photos(16).items():
            for f in files:
                client.upload_file(str(f), BUCKET, f"datasets/flowers/{name}/{f.name}")
        env = server.env(AWS_DEFAULT_REGION=s3server.REGION)
        with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
            env_file.write("".join(f"{k}={v}\n" for k, v in env.items() if k != "AWS_MAX_ATTEMPTS"))
            env_file.flush()
            cluster.kubectl("create", "secret", "generic", SECRET, "-n", ns, f"--from-env-file={env_file.name}")

        docs = seed_manifests(ns, example="flowers-obs")
        cluster.apply(list(docs.values()))
        cluster.wait_condition(constants.TRAINING_JOB, "flowers-obs", ns, "Succeeded", timeout=900, fail_on=no_failure)
        cluster.wait_condition(constants.MODEL_CONVERSION, "flowers-obs-om", ns, "Succeeded", timeout=600, fail_on=no_failure)
        cluster.wait_condition(constants.INFERENCE_SERVICE, "flowers-obs", ns, "Ready", timeout=600)

        keys = server.keys(BUCKET, "runs/flowers-obs/")
        assert "runs/flowers-obs/V001/manifest.json" in keys, keys[:20]
        assert "runs/flowers-obs/V001/om/model/model.om" in keys, keys[:20]
        url = rc.http_url(cluster, inference.service_name("flowers-obs"), ns)
        body, headers = rc.multipart_image(held_out_photo())
        status, _, answer = rc.http("POST", url + "/", body, headers, timeout=60)
        assert status == 200, answer[:300]
        assert json.loads(answer)["predicted_label"] in photos(1)
        # The keys reach the pods through secretKeyRef only.
        for text in (cluster.kubectl("get", "pods", "-n", ns, "-o", "json"), cluster.all_operator_logs()):
            assert server.secret_key not in text
