"""Object storage (s3://, obs://) against the API: pods without volumes for it, the
Secret wired by reference and checked first, and URIs in status that keep the scheme.

Every test's Secret holds known values; none of them may show up in a pod spec,
a resource's status or an Event."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ascend_mlops.api import constants, contract
from ascend_mlops.reconcilers import credentials
from tests.integration.conftest import (
    Backend,
    Cluster,
    Operator,
    eventually,
    operator_running,
    terminated,
)
from tests.integration.test_conversion import conversion
from tests.integration.test_inference import DEPLOYMENT, deployment, service
from tests.integration.test_training import SUMMARY, job, pod_names, wait_pod

TJ = constants.TRAINING_JOB
MC = constants.MODEL_CONVERSION
IS = constants.INFERENCE_SERVICE
SECRET_VALUES = {
    contract.ENV_AWS_ACCESS_KEY_ID: "AKIAEXAMPLEKEYID0042",
    contract.ENV_AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI-known-secret-value-0042",
    contract.ENV_AWS_ENDPOINT_URL: "https://obs.cn-north-4.myhuaweicloud.com",
}
# The endpoint is not a credential, but nothing of the Secret is copied anywhere.
LEAKS = [v for v in SECRET_VALUES.values()] + [base64.b64encode(v.encode()).decode() for v in SECRET_VALUES.values()]


@pytest.fixture(autouse=True)
def fast_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator re-checks a missing Secret every 30 s; the tests do not wait that long."""
    monkeypatch.setattr(credentials, "RETRY_SECONDS", 0.2)


@pytest.fixture
async def operator_with_default_secret(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Operator]:
    async with operator_running(backend, monkeypatch, STORAGE_SECRET="storage-creds", SCRATCH_SIZE="8Gi", strict_stop=True) as op:
        yield op


def secret(name: str, keys: dict[str, str] | None = None) -> dict[str, Any]:
    values = SECRET_VALUES if keys is None else keys
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


async def assert_no_secret_value_leaks(cluster: Cluster, *names: tuple[str, str]) -> None:
    """No value of the Secret in any pod, Deployment, resource (spec and status) or Event."""
    texts = [json.dumps(p) for p in await cluster.pods()]
    texts += [json.dumps(d) for d in await cluster.client.list("apps/v1", "deployments", cluster.namespace)]
    for kind, name in names:
        texts.append(json.dumps(await cluster.get_cr(kind, name)))
        texts += [json.dumps(e) for e in await cluster.events_for(name)]
    for text in texts:
        for value in LEAKS:
            assert value not in text


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env") or [] if "valueFrom" in e}


def assert_wired(pod_spec: dict[str, Any], secret_name: str, scratch: str) -> None:
    container = pod_spec["containers"][0]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": scratch}} in pod_spec["volumes"]
    assert {"name": "scratch", "mountPath": contract.MOUNT_SCRATCH} in container["volumeMounts"]
    assert {"name": contract.ENV_SCRATCH, "value": contract.MOUNT_SCRATCH} in container["env"]
    refs = secret_refs(container)
    assert set(refs) == {*contract.STORAGE_SECRET_REQUIRED_KEYS, *contract.STORAGE_SECRET_OPTIONAL_KEYS}
    for key in contract.STORAGE_SECRET_REQUIRED_KEYS:
        assert refs[key] == {"name": secret_name, "key": key}
    for key in contract.STORAGE_SECRET_OPTIONAL_KEYS:
        assert refs[key] == {"name": secret_name, "key": key, "optional": True}
    assert "envFrom" not in container


async def test_training_on_s3_and_obs(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(secret("s3-creds"))
    await cluster.create(
        job(
            dataset={"uri": "obs://flowers-data/flowers"},
            output={"uri": "s3://ml-bucket/runs/flowers"},
            storage={"secretName": "s3-creds", "scratchSize": "30Gi"},
        )
    )
    pod = await wait_pod(cluster, "flowers-worker-0")
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index(contract.FLAG_DATA) + 1] == "obs://flowers-data/flowers"
    assert args[args.index(contract.FLAG_OUTPUT) + 1] == "s3://ml-bucket/runs/flowers"
    # No volume for either location: only scratch and /tmp.
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["scratch", "tmp"]
    assert_wired(pod["spec"], "s3-creds", "30Gi")

    await cluster.set_pod_status("flowers-worker-0", terminated(0, json.dumps(SUMMARY)))
    done = await cluster.wait_condition(TJ, "flowers", "Succeeded", "True", "Succeeded")
    assert "s3://ml-bucket/runs/flowers/V001" in done["message"]
    status = (await cluster.get_cr(TJ, "flowers"))["status"]  # type: ignore[index]
    assert status["artifacts"]["frozenGraph"] == "s3://ml-bucket/runs/flowers/V001/frozen_graph"
    assert status["artifacts"]["labels"] == "s3://ml-bucket/runs/flowers/V001/labels.txt"
    await assert_no_secret_value_leaks(cluster, (TJ, "flowers"))


async def test_missing_secret_then_missing_key_then_the_pod(
    cluster: Cluster, operator_with_default_secret: Operator
) -> None:
    # No spec.storage: the operator's default Secret (ASCEND_MLOPS_STORAGE_SECRET) applies.
    await cluster.create(job(output={"uri": "s3://ml-bucket/runs/flowers"}))
    missing = await cluster.wait_condition(TJ, "flowers", "Succeeded", "Unknown", constants.Reason.STORAGE_SECRET_MISSING)
    message = missing["message"]
    assert "Secret 'storage-creds'" in message and f"not found in namespace '{cluster.namespace}'" in message
    assert "ASCEND_MLOPS_STORAGE_SECRET" in message
    assert f"kubectl create secret generic storage-creds -n {cluster.namespace} --from-literal=AWS_ACCESS_KEY_ID=..." in message
    assert "s3://ml-bucket/runs/flowers" in message
    reconciling = await cluster.condition(TJ, "flowers", "Reconciling")
    assert reconciling is not None and reconciling["status"] == "True"
    obj = await cluster.get_cr(TJ, "flowers")
    assert obj is not None and obj["status"]["phase"] == "Pending" and "startTime" not in obj["status"]
    assert await pod_names(cluster) == []

    # The Secret appears, but without the secret key: still no pod, the key is named.
    await cluster.create(secret("storage-creds", {contract.ENV_AWS_ACCESS_KEY_ID: SECRET_VALUES["AWS_ACCESS_KEY_ID"]}))

    async def names_the_key() -> dict[str, Any] | None:
        c = await cluster.condition(TJ, "flowers", "Succeeded")
        return c if c and "has no key AWS_SECRET_ACCESS_KEY" in c["message"] else None

    keyless = await eventually(names_the_key, what="a condition naming the missing key")
    assert keyless["reason"] == constants.Reason.STORAGE_SECRET_MISSING
    assert f"kubectl patch secret storage-creds -n {cluster.namespace}" in keyless["message"]
    assert await pod_names(cluster) == []

    # Completing the Secret un-sticks the job on the next re-check; nothing else is touched.
    await cluster.client.patch(
        "v1", "secrets", cluster.namespace, "storage-creds", {"data": secret("storage-creds")["data"]}
    )
    pod = await wait_pod(cluster, "flowers-worker-0")
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["pvc-data", "scratch", "tmp"]
    assert_wired(pod["spec"], "storage-creds", "8Gi")
    await cluster.wait_condition(TJ, "flowers", "Succeeded", "Unknown", "Pending")
    await assert_no_secret_value_leaks(cluster, (TJ, "flowers"))


async def test_mixed_chain_pvc_training_s3_conversion_served_by_reference(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(secret("s3-creds"))
    # Training on a PVC needs no Secret and gets no scratch.
    await cluster.create(job())
    await cluster.create(
        conversion(output={"uri": "s3://ml-bucket/models/flowers"}, storage={"secretName": "s3-creds"})
    )
    await cluster.create(service(storage={"secretName": "s3-creds"}))
    training_pod = await wait_pod(cluster, "flowers-worker-0")
    assert "scratch" not in [v["name"] for v in training_pod["spec"]["volumes"]]
    assert secret_refs(training_pod["spec"]["containers"][0]) == {}
    await cluster.set_pod_status("flowers-worker-0", terminated(0, json.dumps(SUMMARY)))

    convert_pod = await wait_pod(cluster, "flowers-om-convert")
    args = convert_pod["spec"]["containers"][0]["args"]
    assert args[args.index(contract.FLAG_INPUT) + 1] == f"{contract.MOUNT_SOURCE}/runs/flowers/V001/frozen_graph"
    assert args[args.index(contract.FLAG_OUTPUT) + 1] == "s3://ml-bucket/models/flowers"
    assert [v["name"] for v in convert_pod["spec"]["volumes"]] == ["pvc-data", "scratch", "tmp"]
    assert_wired(convert_pod["spec"], "s3-creds", "20Gi")
    summary = {contract.SUMMARY_MODEL: "model.om", contract.SUMMARY_ATC_COMMAND: "atc ..."}
    await cluster.set_pod_status("flowers-om-convert", terminated(0, json.dumps(summary), name="converter"))
    await cluster.wait_condition(MC, "flowers-om", "Succeeded", "True", "Succeeded")
    mc_status = (await cluster.get_cr(MC, "flowers-om"))["status"]  # type: ignore[index]
    assert mc_status["artifacts"] == {
        "model": "s3://ml-bucket/models/flowers",
        "om": "s3://ml-bucket/models/flowers/model.om",
    }

    dep = await eventually(lambda: deployment(cluster), what=f"Deployment {DEPLOYMENT}")
    template = dep["spec"]["template"]
    args = template["spec"]["containers"][0]["args"]
    assert args[args.index(contract.FLAG_MODEL) + 1] == "s3://ml-bucket/models/flowers"
    assert args[args.index(contract.FLAG_LABELS) + 1] == "/mnt/labels/runs/flowers/V001/labels.txt"
    assert [v["name"] for v in template["spec"]["volumes"]] == ["pvc-data", "scratch", "tmp"]
    assert template["metadata"]["annotations"][constants.ANNOTATION_MODEL_DIGEST] == "s3://ml-bucket/models/flowers"
    assert_wired(template["spec"], "s3-creds", "20Gi")
    isvc = await cluster.get_cr(IS, "flowers")
    assert isvc is not None
    assert isvc["status"]["model"]["uri"] == "s3://ml-bucket/models/flowers"
    assert isvc["status"]["model"]["labels"] == "pvc://data/runs/flowers/V001/labels.txt"
    await assert_no_secret_value_leaks(cluster, (TJ, "flowers"), (MC, "flowers-om"), (IS, "flowers"))


async def test_inference_service_waits_for_its_secret(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(
        service(model={"uri": "obs://ml-bucket/models/flowers/om/model"}, storage={"secretName": "obs-creds"})
    )
    blocked = await cluster.wait_condition(IS, "flowers", "Ready", "False", constants.Reason.STORAGE_SECRET_MISSING)
    assert "Secret 'obs-creds' (spec.storage.secretName) not found" in blocked["message"]
    predictor = await cluster.condition(IS, "flowers", "PredictorReady")
    assert predictor is not None and predictor["reason"] == constants.Reason.STORAGE_SECRET_MISSING
    assert await deployment(cluster) is None
    events = await cluster.events_for("flowers")
    assert any("obs-creds" in (e.get("message") or "") for e in events)

    await cluster.create(secret("obs-creds"))
    dep = await eventually(lambda: deployment(cluster), what="Deployment once the Secret exists")
    template = dep["spec"]["template"]
    assert [v["name"] for v in template["spec"]["volumes"]] == ["scratch", "tmp"]
    assert_wired(template["spec"], "obs-creds", "20Gi")
    await cluster.wait_condition(IS, "flowers", "Ready", "False", "DeploymentProgressing")
    await assert_no_secret_value_leaks(cluster, (IS, "flowers"))
