"""BatchPrediction against the API: shard pods on Ascend nodes, success only after every shard,
retries, progress from the shards' logs, the manifest artifact, references, object storage."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import constants, contract
from ascend_mlops.api.progress import BatchProgress
from ascend_mlops.builders import batch as builder
from ascend_mlops.reconcilers import batch, credentials
from ascend_mlops.sandbox.apiserver import APIServer
from ascend_mlops.settings import Settings
from tests.integration.conftest import Cluster, Operator, eventually, running, terminated
from tests.integration.test_inference import converted

KIND = constants.BATCH_PREDICTION
NAME = "photos"
SETTINGS = Settings.from_env({})


def prediction(name: str = NAME, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"conversionRef": {"name": "flowers-om"}},
        "input": {"uri": "pvc://data/photos"},
        "output": {"uri": "pvc://data/batch/photos"},
        "parallelism": 2,
    }
    body.update(spec)
    return {"apiVersion": constants.API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}


def shard_summary(shard: int, shards: int, total: int, failed: int = 0, manifest: bool = False) -> str:
    summary: dict[str, Any] = {
        "total": total, "succeeded": total - failed, "failed": failed, "skipped": 0,
        "imagesPerSecond": 40.0, "shard": f"{shard}/{shards}",
    }
    if manifest:
        summary["manifest"] = contract.batch_manifest_name(NAME)
    return json.dumps(summary)


def done(shard: int, shards: int = 2, total: int = 50, failed: int = 0, manifest: bool = False) -> dict[str, Any]:
    return terminated(0, shard_summary(shard, shards, total, failed, manifest), name=builder.CONTAINER)


async def shard_pods(cluster: Cluster, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        pods = await cluster.pods(**{constants.LABEL_OWNER_KIND: KIND})
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return sorted(live, key=lambda p: p["metadata"]["name"]) if len(live) >= count else None

    return await eventually(probe, what=f"{count} shard pods")


class Logs:
    """Plays the kubelet's part for pods/log: one file per (pod, container)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, pod: str, container: str) -> Path:
        return self.root / f"{pod}.{container}.log"

    def __call__(self, namespace: str, pod: str, container: str | None, previous: bool) -> Path | None:
        return None if container is None or previous else self.path(pod, container)

    def write(self, pod: str, lines: list[str]) -> None:
        self.path(pod, builder.CONTAINER).write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def logs(api: APIServer, tmp_path: Path) -> Logs:
    reader = Logs(tmp_path)
    api.handler.log_reader = reader
    return reader


async def status_of(cluster: Cluster) -> dict[str, Any]:
    obj = await cluster.get_cr(KIND, NAME)
    return dict((obj or {}).get("status") or {})


async def test_waits_for_the_conversion_then_runs_disjoint_shards_on_ascend_nodes(
    cluster: Cluster, operator: Operator
) -> None:
    await cluster.create(prediction(parallelism=3))
    missing = await cluster.wait_condition(KIND, NAME, "SourceReady", "False", "ReferenceNotFound")
    assert missing["message"].startswith("spec.model.conversionRef.name: ModelConversion 'flowers-om' not found")
    assert (await cluster.condition(KIND, NAME, "Reconciling"))["status"] == "True"  # type: ignore[index]
    assert not await cluster.pods(**{constants.LABEL_OWNER_KIND: KIND})

    await converted(cluster)
    source = await cluster.wait_condition(KIND, NAME, "SourceReady", "True", "ModelResolved")
    assert "pvc://data/runs/flowers/V001/om/model" in source["message"]
    pods = await shard_pods(cluster, 3)
    assert [p["metadata"]["name"] for p in pods] == [f"{NAME}-shard-{i}" for i in range(3)]
    shards = []
    for pod in pods:
        spec = pod["spec"]
        container = spec["containers"][0]
        args = container["args"]
        assert args[0] == contract.CMD_PREDICT
        shards.append(args[args.index(contract.FLAG_SHARD) + 1])
        assert args[args.index(contract.FLAG_TASK_ID) + 1] == NAME
        assert spec["restartPolicy"] == "Never"
        assert spec["nodeSelector"] == SETTINGS.accelerator_node_selector
        assert {"key": SETTINGS.accelerator_toleration_key, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        resources = container["resources"]
        assert resources["requests"][SETTINGS.accelerator_resource] == resources["limits"][SETTINGS.accelerator_resource] == "1"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == KIND
    assert shards == ["0/3", "1/3", "2/3"]
    obj = await cluster.get_cr(KIND, NAME)
    assert obj is not None and obj["status"]["model"]["conversion"] == "flowers-om"


async def test_succeeds_only_after_every_shard_and_publishes_the_manifest(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(prediction())
    await shard_pods(cluster, 2)
    for i in range(2):
        await cluster.set_pod_status(f"{NAME}-shard-{i}", running(builder.CONTAINER))
    await cluster.wait_condition(KIND, NAME, "Running", "True", "Running")

    # Shard 0 (not the last one) finishing does not finish the batch.
    await cluster.set_pod_status(f"{NAME}-shard-0", done(0, failed=1))
    await eventually(lambda: _workers_succeeded(cluster, 1), what="one shard counted as succeeded")
    assert (await cluster.condition(KIND, NAME, "Succeeded"))["status"] == "Unknown"  # type: ignore[index]
    assert "artifacts" not in await status_of(cluster)

    await cluster.set_pod_status(f"{NAME}-shard-1", done(1, manifest=True))
    succeeded = await cluster.wait_condition(KIND, NAME, "Succeeded", "True", "Succeeded")
    manifest = f"pvc://data/batch/photos/{contract.batch_manifest_name(NAME)}"
    assert manifest in succeeded["message"] and "99 succeeded, 1 failed" in succeeded["message"]
    status = await status_of(cluster)
    assert status["phase"] == "Succeeded" and status["completionTime"]
    assert status["artifacts"]["manifest"] == manifest
    assert status["progress"] == {"done": 100, "total": 100, "succeeded": 99, "failed": 1, "imagesPerSecond": 80.0, "fraction": "100/100"}
    assert (await cluster.condition(KIND, NAME, "Stalled"))["status"] == "False"  # type: ignore[index]
    events = [e["reason"] for e in await cluster.events_for(NAME)]
    assert "Succeeded" in events


async def _workers_succeeded(cluster: Cluster, count: int) -> bool:
    return ((await status_of(cluster)).get("workers") or {}).get("succeeded") == count


async def test_a_failed_shard_is_retried_and_the_batch_still_succeeds(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(prediction(backoffLimit=1))
    await shard_pods(cluster, 2)
    await cluster.set_pod_status(f"{NAME}-shard-0", done(0))
    await cluster.set_pod_status(f"{NAME}-shard-1", terminated(137, "", name=builder.CONTAINER, reason="OOMKilled"))
    restarting = await cluster.wait_condition(KIND, NAME, "Restarting", "True", "PodRestarted")
    assert "photos-shard-1" in restarting["message"] and "exit code 137" in restarting["message"]

    async def retried() -> list[str] | None:
        names = [p["metadata"]["name"] for p in await cluster.pods(**{constants.LABEL_ATTEMPT: "1"})]
        return sorted(names) if len(names) == 2 else None

    # The attempt restarts every shard; a rerun shard skips its complete results.
    assert await eventually(retried, what="attempt 2") == [f"{NAME}-shard-0-retry-1", f"{NAME}-shard-1-retry-1"]
    await cluster.set_pod_status(f"{NAME}-shard-1-retry-1", done(1))
    await cluster.set_pod_status(f"{NAME}-shard-0-retry-1", done(0, manifest=True))
    await cluster.wait_condition(KIND, NAME, "Succeeded", "True", "Succeeded")
    status = await status_of(cluster)
    assert status["attempts"] == 2 and status["lastFailure"]["pod"] == f"{NAME}-shard-1"
    assert status["lastFailure"]["retryable"] is True


async def test_a_permanent_shard_failure_fails_the_batch(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(prediction(backoffLimit=3))
    await shard_pods(cluster, 2)
    error = json.dumps({"error": "model.om is not an offline model", "exitCode": contract.EXIT_INVALID_MODEL})
    await cluster.set_pod_status(f"{NAME}-shard-1", terminated(contract.EXIT_INVALID_MODEL, error, name=builder.CONTAINER))
    failed = await cluster.wait_condition(KIND, NAME, "Succeeded", "False", "PermanentError")
    assert "model.om is not an offline model" in failed["message"]
    assert (await cluster.condition(KIND, NAME, "Stalled"))["status"] == "True"  # type: ignore[index]


@pytest.mark.sandbox_only("the shards' logs are the sandbox API's log reader (a real apiserver asks a kubelet)")
async def test_progress_is_summed_over_the_running_shards_logs(
    cluster: Cluster, operator: Operator, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "PROGRESS_INTERVAL", 0.2)
    await converted(cluster)
    await cluster.create(prediction())
    await shard_pods(cluster, 2)
    logs.write(f"{NAME}-shard-0", ["loading model", BatchProgress(10, 50, 9, 1, 20.0).line()])
    logs.write(f"{NAME}-shard-1", [BatchProgress(5, 50, 5, 0, 10.0).line(), "noise", BatchProgress(20, 50, 20, 0, 21.5).line()])
    for i in range(2):
        await cluster.set_pod_status(f"{NAME}-shard-{i}", running(builder.CONTAINER))
    expected = {"done": 30, "total": 100, "succeeded": 29, "failed": 1, "imagesPerSecond": 41.5, "fraction": "30/100"}

    async def progress_is(want: dict[str, Any]) -> bool:
        return (await status_of(cluster)).get("progress") == want

    await eventually(lambda: progress_is(expected), what=f"status.progress {expected}")
    # Later lines are picked up by the periodic re-read, without a pod event.
    logs.write(f"{NAME}-shard-0", [BatchProgress(40, 50, 38, 2, 25.0).line()])
    later = {"done": 60, "total": 100, "succeeded": 58, "failed": 2, "imagesPerSecond": 46.5, "fraction": "60/100"}
    await eventually(lambda: progress_is(later), what=f"status.progress {later}")


async def test_a_bad_spec_is_a_condition_naming_the_field(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(prediction(output={"uri": "pvc://data/photos/out"}))
    invalid = await cluster.wait_condition(KIND, NAME, "Valid", "False", "InvalidSpec")
    assert invalid["message"].startswith("spec.output.uri:")
    assert (await cluster.condition(KIND, NAME, "Succeeded"))["reason"] == "InvalidSpec"  # type: ignore[index]
    assert (await status_of(cluster))["phase"] == "Invalid"
    await cluster.patch_cr(KIND, NAME, {"spec": {"output": {"uri": "pvc://data/out"}}})
    await cluster.wait_condition(KIND, NAME, "Valid", "True", "SpecValid")


async def test_object_storage_waits_for_the_secret_then_wires_it(
    cluster: Cluster, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "RETRY_SECONDS", 0.2)
    await cluster.create(
        prediction(
            model={"uri": "s3://models/flowers/V001/om/model"},
            input={"uri": "s3://photos/in"},
            output={"uri": "obs://results/out"},
            storage={"secretName": "bucket-creds"},
            parallelism=1,
        )
    )
    blocked = await cluster.wait_condition(KIND, NAME, "Succeeded", "Unknown", "StorageSecretMissing")
    assert "bucket-creds" in blocked["message"]
    assert not await cluster.pods(**{constants.LABEL_OWNER_KIND: KIND})
    values = {contract.ENV_AWS_ACCESS_KEY_ID: "AKIAEXAMPLE", contract.ENV_AWS_SECRET_ACCESS_KEY: "s3cr3t-value"}
    await cluster.create({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bucket-creds"}, "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    })
    [pod] = await shard_pods(cluster, 1)
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index(contract.FLAG_INPUT) + 1] == "s3://photos/in"
    assert args[args.index(contract.FLAG_OUTPUT) + 1] == "obs://results/out"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs[contract.ENV_AWS_ACCESS_KEY_ID] == refs[contract.ENV_AWS_SECRET_ACCESS_KEY] == "bucket-creds"
    assert any(v["name"] == "scratch" for v in pod["spec"]["volumes"])
    assert "s3cr3t-value" not in json.dumps(pod)
    await cluster.set_pod_status(pod["metadata"]["name"], done(0, shards=1, manifest=True))
    await cluster.wait_condition(KIND, NAME, "Succeeded", "True")
    assert (await status_of(cluster))["artifacts"]["manifest"] == f"obs://results/out/{contract.batch_manifest_name(NAME)}"


async def test_ttl_after_finished_deletes_the_batch(cluster: Cluster, operator: Operator) -> None:
    await converted(cluster)
    await cluster.create(prediction(parallelism=1, ttlSecondsAfterFinished=0))
    [pod] = await shard_pods(cluster, 1)
    await cluster.set_pod_status(pod["metadata"]["name"], done(0, shards=1, manifest=True))

    async def gone() -> bool:
        return await cluster.get_cr(KIND, NAME) is None

    assert await eventually(gone, what="the BatchPrediction deleted by its TTL")
