"""InferenceService against the API: Deployment and Service, readiness from the pods, references, restart."""

from __future__ import annotations

import json
from typing import Any

from ascend_mlops.api import constants, contract
from tests.integration.conftest import Cluster, Operator, eventually, terminated
from tests.integration.test_conversion import conversion, finish_training
from tests.integration.test_training import job

KIND = constants.INFERENCE_SERVICE
DEPLOYMENT = "flowers-predictor"


def service(name: str = "flowers", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"conversionRef": {"name": "flowers-om"}}}
    body.update(spec)
    return {"apiVersion": constants.API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}


async def converted(cluster: Cluster) -> None:
    """A ModelConversion of a frozen graph on a PVC, succeeded."""
    await cluster.create(conversion(source={"uri": "pvc://data/runs/flowers/V001/frozen_graph"}))
    await eventually(lambda: cluster.pod("flowers-om-convert"), what="conversion pod")
    summary = {contract.SUMMARY_MODEL: "model.om", contract.SUMMARY_ATC_COMMAND: "atc ...", contract.SUMMARY_SIMULATED: True}
    await cluster.set_pod_status("flowers-om-convert", terminated(0, json.dumps(summary), name="converter"))
    await cluster.wait_condition(constants.MODEL_CONVERSION, "flowers-om", "Succeeded", "True")


async def deployment(cluster: Cluster) -> dict[str, Any] | None:
    return await cluster.client.get("apps/v1", "deployments", cluster.namespace, DEPLOYMENT)


async def set_deployment_status(cluster: Cluster, ready: int, replicas: int = 1) -> None:
    dep = await deployment(cluster)
    assert dep is not None
    await cluster.client.patch(
        "apps/v1",
        "deployments",
        cluster.namespace,
        DEPLOYMENT,
        {
            "status": {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
        },
        subresource="status",
    )


async def server_pod(cluster: Cluster, name: str, container_status: dict[str, Any], phase: str = "Running") -> None:
    """What the Deployment's controller and the kubelet would create and report.

    Owned by the Deployment, as the sandbox's controller does (a cluster's has a ReplicaSet in
    between): a real garbage collector deletes a pod whose owner does not exist.
    """
    dep = await deployment(cluster)
    assert dep is not None
    template = dep["spec"]["template"]
    await cluster.client.create(
        "v1",
        "pods",
        cluster.namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": template["metadata"]["labels"],
                "annotations": template["metadata"]["annotations"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT, "uid": dep["metadata"]["uid"], "controller": True}],
            },
            "spec": template["spec"],
        },
    )
    await cluster.set_pod_status(name, {"phase": phase, "containerStatuses": [{"name": "server", **container_status}]})


async def test_deployment_service_and_readiness(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(service())
    dep = await eventually(lambda: deployment(cluster), what="deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    # The Ascend device, where it is, and leave to go there.
    assert container["resources"]["requests"]["huawei.com/Ascend310"] == "1"
    assert container["resources"]["limits"]["huawei.com/Ascend310"] == "1"
    assert container["resources"]["requests"]["cpu"] == "3" and container["resources"]["limits"]["memory"] == "6Gi"
    assert pod_spec["nodeSelector"] == {"accelerator": "huawei-Ascend310"}
    assert {"key": "huawei.com/Ascend310", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]
    assert container["readinessProbe"]["httpGet"]["path"] == contract.HEALTH_READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == contract.HEALTH_LIVE_PATH
    args = container["args"]
    assert args[args.index(contract.FLAG_MODEL) + 1] == f"{contract.MOUNT_MODEL}/runs/flowers/V001/om/model"
    assert args[args.index(contract.FLAG_BACKEND) + 1] == "acl"
    # Labels come from the source TrainingJob when there is one; here the source is a URI.
    assert contract.FLAG_LABELS not in args
    svc = await eventually(lambda: cluster.client.get("v1", "services", cluster.namespace, DEPLOYMENT), what="service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    [owner] = dep["metadata"]["ownerReferences"]
    assert owner["kind"] == KIND and owner["name"] == "flowers"

    progressing = await cluster.wait_condition(KIND, "flowers", "Ready", "False", "DeploymentProgressing")
    assert "0 ready" in progressing["message"]
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None
    assert obj["status"]["address"] == {"url": f"http://flowers-predictor.{cluster.namespace}.svc.cluster.local"}
    assert "url" not in obj["status"]  # not exposed: no external URL
    assert obj["status"]["model"]["uri"] == "pvc://data/runs/flowers/V001/om/model"
    assert obj["status"]["model"]["simulated"] is True

    await server_pod(cluster, f"{DEPLOYMENT}-abc-1", {"ready": True, "restartCount": 0, "state": {"running": {}}})
    await set_deployment_status(cluster, ready=1)
    ready = await cluster.wait_condition(KIND, "flowers", "Ready", "True", "MinimumReplicasAvailable")
    assert "1/1 replica(s) ready" in ready["message"]
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None and obj["status"]["readyReplicas"] == 1 and obj["status"]["phase"] == "Ready"


async def test_crash_loop_makes_ready_false_with_the_reason(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(service())
    await eventually(lambda: deployment(cluster), what="deployment")
    # Even a Deployment that claims a ready replica does not make the service Ready while a pod crash-loops.
    await set_deployment_status(cluster, ready=1)
    await cluster.wait_condition(KIND, "flowers", "Ready", "True")
    crash = {
        "ready": False,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        "lastState": {
            "terminated": {
                "exitCode": contract.EXIT_INVALID_MODEL,
                "reason": "Error",
                "message": json.dumps({"error": "model.om is not an offline model for Ascend310"}),
            }
        },
    }
    await server_pod(cluster, f"{DEPLOYMENT}-abc-1", crash)
    failed = await cluster.wait_condition(KIND, "flowers", "Ready", "False", "ModelLoadFailed")
    assert "model.om is not an offline model for Ascend310" in failed["message"]
    assert "after 4 restart(s)" in failed["message"]
    await cluster.wait_condition(KIND, "flowers", "Stalled", "True", "ModelLoadFailed")

    # A crash for another reason (exit 1) is reported as a crash loop, and is not "stalled".
    crash["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "message": "Traceback ... MemoryError"}}
    await cluster.set_pod_status(f"{DEPLOYMENT}-abc-1", {"phase": "Running", "containerStatuses": [{"name": "server", **crash}]})
    looping = await cluster.wait_condition(KIND, "flowers", "Ready", "False", "CrashLoopBackOff")
    assert "exit code 1" in looping["message"] and "MemoryError" in looping["message"]
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None and obj["status"]["phase"] == "NotReady"


async def test_waits_for_conversion_and_rolls_on_model_change(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(service())
    missing = await cluster.wait_condition(KIND, "flowers", "Ready", "False", "ReferenceNotFound")
    assert missing["message"].startswith("spec.model.conversionRef.name: ModelConversion 'flowers-om' not found")
    assert await deployment(cluster) is None
    await converted(cluster)
    first = await eventually(lambda: deployment(cluster), what="deployment after the conversion")
    annotation = first["spec"]["template"]["metadata"]["annotations"][constants.ANNOTATION_MODEL_DIGEST]
    assert annotation == "pvc://data/runs/flowers/V001/om/model"

    await cluster.patch_cr(KIND, "flowers", {"spec": {"model": {"conversionRef": None, "uri": "pvc://data/runs/flowers/V002/om/model"}}})

    async def rolled() -> dict[str, Any] | None:
        dep = await deployment(cluster)
        annotations = (dep or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        return dep if annotations.get(constants.ANNOTATION_MODEL_DIGEST, "").endswith("V002/om/model") else None

    second = await eventually(rolled, what="deployment rolled to V002")
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["metadata"]["generation"] > first["metadata"]["generation"]


async def test_restart_keeps_one_deployment_untouched(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(service())
    first = await eventually(lambda: deployment(cluster), what="deployment")
    await cluster.wait_condition(KIND, "flowers", "Ready", "False", "DeploymentProgressing")
    await operator.restart()
    await set_deployment_status(cluster, ready=1)
    await cluster.wait_condition(KIND, "flowers", "Ready", "True")
    deployments = await cluster.client.list("apps/v1", "deployments", cluster.namespace)
    assert [d["metadata"]["name"] for d in deployments] == [DEPLOYMENT]
    after = deployments[0]
    assert after["metadata"]["uid"] == first["metadata"]["uid"]
    # Unchanged spec: no write since creation (only the status we set).
    assert after["metadata"]["generation"] == first["metadata"]["generation"]
    services = await cluster.client.list("v1", "services", cluster.namespace, {constants.LABEL_OWNER_KIND: KIND})
    assert len(services) == 1


async def test_invalid_spec_and_cpu_runtime(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(service(name="broken", accelerator={"count": 0}))
    invalid = await cluster.wait_condition(KIND, "broken", "Ready", "False", "InvalidSpec")
    assert invalid["message"].startswith("spec.accelerator.count: the acl runtime needs an Ascend device")
    await cluster.create(
        service(name="cpu", model={"uri": "pvc://data/runs/flowers/V001/saved_model", "labels": "pvc://data/runs/flowers/V001/labels.txt"}, runtime="tensorflow")
    )

    async def cpu_deployment() -> dict[str, Any] | None:
        return await cluster.client.get("apps/v1", "deployments", cluster.namespace, "cpu-predictor")

    dep = await eventually(cpu_deployment, what="cpu deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    assert "huawei.com/Ascend310" not in pod_spec["containers"][0]["resources"]["requests"]
    assert "nodeSelector" not in pod_spec
    args = pod_spec["containers"][0]["args"]
    assert args[args.index(contract.FLAG_LABELS) + 1] == "/mnt/labels/runs/flowers/V001/labels.txt"
    assert await cluster.client.get("apps/v1", "deployments", cluster.namespace, "broken-predictor") is None


async def test_labels_follow_the_chain_back_to_the_training_job(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job())
    await cluster.create(conversion())
    await cluster.create(service())
    await finish_training(cluster)
    await eventually(lambda: cluster.pod("flowers-om-convert"), what="conversion pod")
    await cluster.set_pod_status("flowers-om-convert", terminated(0, json.dumps({"model": "model.om"}), name="converter"))
    dep = await eventually(lambda: deployment(cluster), what="deployment once the chain succeeded")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index(contract.FLAG_MODEL) + 1] == f"{contract.MOUNT_MODEL}/runs/flowers/V001/om/model"
    assert args[args.index(contract.FLAG_LABELS) + 1] == "/mnt/labels/runs/flowers/V001/labels.txt"
    obj = await cluster.get_cr(KIND, "flowers")
    assert obj is not None
    assert obj["status"]["model"]["labels"] == "pvc://data/runs/flowers/V001/labels.txt"
    assert obj["status"]["model"]["conversion"] == "flowers-om"
