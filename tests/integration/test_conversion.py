"""ModelConversion against the API: waiting for its TrainingJob, converting, failing, restarting."""

from __future__ import annotations

import json
from typing import Any

from ascend_mlops.api import constants, contract
from tests.integration.conftest import Cluster, Operator, eventually, terminated
from tests.integration.test_training import SUMMARY, job

KIND = constants.MODEL_CONVERSION
SEED_OPTIONS = {
    "inputShape": "images:1,224,224,3",
    "inputFormat": "NHWC",
    "outNodes": "logits:0",
    "outputType": "FP32",
    "preferredDataFormat": "5D",
    "highPrecision": 0,
    "l2Optimize": True,
}
ATC = "atc --model=/mnt/source/runs/flowers/V001/frozen_graph/frozen_graph.pb --framework=3 --output=/mnt/output/runs/flowers/V001/om/model/model --soc_version=Ascend310"


def conversion(name: str = "flowers-om", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"source": {"trainingJobRef": {"name": "flowers"}}, "options": dict(SEED_OPTIONS)}
    body.update(spec)
    return {"apiVersion": constants.API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}


async def finish_training(cluster: Cluster) -> None:
    await eventually(lambda: cluster.pod("flowers-worker-0"), what="training pod")
    await cluster.set_pod_status("flowers-worker-0", terminated(0, json.dumps(SUMMARY)))
    await cluster.wait_condition(constants.TRAINING_JOB, "flowers", "Succeeded", "True")


async def test_waits_for_the_training_job_then_converts(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(conversion())
    missing = await cluster.wait_condition(KIND, "flowers-om", "SourceReady", "False", "ReferenceNotFound")
    assert missing["message"].startswith("spec.source.trainingJobRef.name: TrainingJob 'flowers' not found")
    await cluster.create(job())
    waiting = await cluster.wait_condition(KIND, "flowers-om", "SourceReady", "False", "WaitingForTrainingJob")
    assert "waiting for TrainingJob 'flowers' to succeed" in waiting["message"]
    obj = await cluster.get_cr(KIND, "flowers-om")
    assert obj is not None and obj["status"]["phase"] == "Waiting"
    assert await cluster.pod("flowers-om-convert") is None

    await finish_training(cluster)
    # The conversion starts by itself: the TrainingJob's status change woke it up.
    pod = await eventually(lambda: cluster.pod("flowers-om-convert"), what="conversion pod")
    container = pod["spec"]["containers"][0]
    assert container["args"] == contract.convert_args(
        template="TF-FrozenGraph-To-Ascend-C32",
        input_path=f"{contract.MOUNT_SOURCE}/runs/flowers/V001/frozen_graph",
        output=f"{contract.MOUNT_OUTPUT}/runs/flowers/V001/om/model",
        options=SEED_OPTIONS,
    )
    assert contract.ENV_SIMULATOR not in {e["name"] for e in container["env"]}
    await cluster.wait_condition(KIND, "flowers-om", "SourceReady", "True", "SourceReady")

    summary = {contract.SUMMARY_MODEL: "model.om", contract.SUMMARY_ATC_COMMAND: ATC, contract.SUMMARY_SIMULATED: False}
    await cluster.set_pod_status("flowers-om-convert", terminated(0, json.dumps(summary), name="converter"))
    done = await cluster.wait_condition(KIND, "flowers-om", "Succeeded", "True", "Succeeded")
    assert "pvc://data/runs/flowers/V001/om/model/model.om" in done["message"]
    status = (await cluster.get_cr(KIND, "flowers-om"))["status"]  # type: ignore[index]
    assert status["artifacts"] == {
        "model": "pvc://data/runs/flowers/V001/om/model",
        "om": "pvc://data/runs/flowers/V001/om/model/model.om",
    }
    assert status["atcCommand"] == ATC
    assert status["source"] == {
        "uri": "pvc://data/runs/flowers/V001/frozen_graph",
        "trainingJob": "flowers",
        "outputVersion": "V001",
    }
    assert status["simulated"] is False


async def test_failure_records_atc_log_and_is_not_retried(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(conversion(source={"uri": "file:///srv/runs/V001/frozen_graph"}, backoffLimit=2))
    pod = await eventually(lambda: cluster.pod("flowers-om-convert"), what="conversion pod")
    host_paths = [v["hostPath"] for v in pod["spec"]["volumes"] if "hostPath" in v]
    assert {"path": "/srv/runs/V001/om/model", "type": "DirectoryOrCreate"} in host_paths
    summary = {
        contract.SUMMARY_ERROR: "ATC run failed: out node logits:0 not found in the graph",
        contract.SUMMARY_ERROR_CODES: ["E10016"],
        contract.SUMMARY_LOG_TAIL: "E10016: Input parameter [--out_nodes]'s opname [logits] is not exist in model\nATC run failed",
        contract.SUMMARY_ATC_COMMAND: ATC,
    }
    await cluster.set_pod_status(
        "flowers-om-convert", terminated(contract.EXIT_INVALID_MODEL, json.dumps(summary), name="converter")
    )
    failed = await cluster.wait_condition(KIND, "flowers-om", "Succeeded", "False", "ConversionFailed")
    assert "exit code 5 (invalid model)" in failed["message"] and "logits:0 not found" in failed["message"]
    status = (await cluster.get_cr(KIND, "flowers-om"))["status"]  # type: ignore[index]
    assert status["errorCodes"] == ["E10016"]
    assert status["logTail"].endswith("ATC run failed")
    assert status["atcCommand"] == ATC
    assert status["attempts"] == 1
    assert await cluster.pod("flowers-om-convert-retry-1") is None


async def test_failed_training_job_fails_the_reference(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(job(backoffLimit=0))
    await cluster.create(conversion())
    await eventually(lambda: cluster.pod("flowers-worker-0"), what="training pod")
    await cluster.set_pod_status("flowers-worker-0", terminated(1, json.dumps({"error": "boom"})))
    failed = await cluster.wait_condition(KIND, "flowers-om", "SourceReady", "False", "ReferenceFailed")
    assert "TrainingJob 'flowers' failed" in failed["message"] and "boom" in failed["message"]
    await cluster.wait_condition(KIND, "flowers-om", "Stalled", "True", "ReferenceFailed")


async def test_invalid_source_uri_and_simulator_note(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(conversion(source={"uri": "http://models.example/frozen.pb"}))
    invalid = await cluster.wait_condition(KIND, "flowers-om", "Succeeded", "False", "InvalidSpec")
    assert invalid["message"].startswith("spec.source.uri: unsupported scheme 'http'")
    assert await cluster.pod("flowers-om-convert") is None


async def test_restart_does_not_duplicate_the_conversion(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(conversion(source={"uri": "pvc://data/runs/flowers/V001/frozen_graph"}))
    first = await eventually(lambda: cluster.pod("flowers-om-convert"), what="conversion pod")
    await operator.restart()
    await cluster.wait_condition(KIND, "flowers-om", "Succeeded", "Unknown", "Pending")
    pods = await cluster.pods(**{constants.LABEL_OWNER_KIND: KIND})
    assert [p["metadata"]["uid"] for p in pods] == [first["metadata"]["uid"]]
