"""BatchPrediction: spec parsing, the shard pods, progress arithmetic (no API server)."""

from __future__ import annotations

from typing import Any

import pytest

from ascend_mlops.api import catalog, constants, contract
from ascend_mlops.api.progress import BatchProgress
from ascend_mlops.api.specs import SpecError, parse_batch_prediction, parse_storage_uri
from ascend_mlops.builders import batch, common
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.reconcilers.batch import progress_from_summary, sum_progress
from ascend_mlops.settings import Settings
from tests.unit.test_builders import assert_hardened

SETTINGS = Settings.from_env({})
BP = common.Owner(kind=constants.BATCH_PREDICTION, name="flowers-batch", namespace="ml", uid="uid-bp")
ACC = catalog.DEFAULT_ACCELERATOR_RESOURCE


def raw(**extra: Any) -> dict[str, Any]:
    return {
        "model": {"conversionRef": {"name": "flowers-om"}},
        "input": {"uri": "pvc://data/photos"},
        "output": {"uri": "pvc://data/batch/out"},
        **extra,
    }


def errors(spec: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_batch_prediction(spec, ACC)
    return str(info.value)


def test_defaults() -> None:
    spec = parse_batch_prediction(raw(), ACC)
    assert (spec.conversion_ref, spec.runtime, spec.parallelism, spec.backoff_limit) == ("flowers-om", "acl", 1, 3)
    assert spec.accelerator is not None and (spec.accelerator.resource, spec.accelerator.count) == (ACC, 1)
    assert spec.batch_size is None and spec.top_k is None and spec.ttl_seconds_after_finished is None


def test_model_is_parsed_exactly_as_the_inference_service() -> None:
    assert "spec.model: set exactly one of conversionRef" in errors(
        raw(model={"conversionRef": {"name": "a"}, "uri": "pvc://m/x"})
    )
    assert "spec.model.uri" in errors(raw(model={"uri": "pvc://m/frozen_graph.pb"}))
    cpu = parse_batch_prediction(raw(model={"uri": "pvc://m/frozen_graph.pb"}, runtime="tensorflow"), ACC)
    assert cpu.accelerator is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"parallelism": 0}, "spec.parallelism"),
        ({"parallelism": 65}, "spec.parallelism"),
        ({"batchSize": 0}, "spec.batchSize"),
        ({"topK": "5"}, "spec.topK"),
        ({"runtime": "onnx"}, "spec.runtime"),
        ({"input": {"uri": "http://x/y"}}, "spec.input.uri"),
        ({"output": {}}, "spec.output.uri"),
        ({"output": {"uri": "pvc://data/photos/results"}}, "spec.output.uri"),
        ({"output": {"uri": "pvc://data/photos"}}, "spec.output.uri"),
        ({"storage": {"secretName": "Bad_Name"}}, "spec.storage.secretName"),
        ({"accelerator": {"count": 0}}, "spec.accelerator.count"),
    ],
)
def test_errors_name_the_field(extra: dict[str, Any], field: str) -> None:
    assert field in errors(raw(**extra))


def test_a_manifest_input_may_share_its_folder_with_the_output() -> None:
    spec = parse_batch_prediction(raw(input={"uri": "s3://bucket/in/list.manifest"}, output={"uri": "s3://bucket/in"}), ACC)
    assert spec.input.name == "list.manifest"


def pods(**extra: Any) -> list[dict[str, Any]]:
    spec = parse_batch_prediction(raw(parallelism=3, batchSize=8, topK=3, **extra), ACC)
    model = ResolvedModel(
        parse_storage_uri("pvc://models/V001/om/model", "m"), parse_storage_uri("pvc://models/V001/labels.txt", "l"), "acl"
    )
    return batch.build_pods(spec, BP, SETTINGS, model, attempt=0)


def test_one_pod_per_shard_with_disjoint_shard_arguments() -> None:
    built = pods()
    assert [p["metadata"]["name"] for p in built] == [f"flowers-batch-shard-{i}" for i in range(3)]
    shards = []
    for index, pod in enumerate(built):
        args = pod["spec"]["containers"][0]["args"]
        assert args[0] == contract.CMD_PREDICT
        shards.append(args[args.index(contract.FLAG_SHARD) + 1])
        assert args[args.index(contract.FLAG_TASK_ID) + 1] == "flowers-batch"
        assert args[args.index(contract.FLAG_INPUT) + 1] == "/mnt/dataset/photos"
        assert args[args.index(contract.FLAG_OUTPUT) + 1] == "/mnt/output/batch/out"
        assert args[args.index(contract.FLAG_BATCH_SIZE) + 1] == "8"
        assert args[args.index(contract.FLAG_TOP_K) + 1] == "3"
        assert args[args.index(contract.FLAG_LABELS) + 1].endswith("labels.txt")
        assert pod["metadata"]["labels"][constants.LABEL_REPLICA_INDEX] == str(index)
        assert pod["metadata"]["ownerReferences"][0]["kind"] == constants.BATCH_PREDICTION
    assert shards == ["0/3", "1/3", "2/3"]


def test_pods_run_once_on_ascend_nodes_hardened() -> None:
    pod = pods()[0]
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert_hardened(spec)
    resources = spec["containers"][0]["resources"]
    assert resources["requests"][ACC] == resources["limits"][ACC] == "1"
    assert spec["nodeSelector"] == SETTINGS.accelerator_node_selector
    assert {"key": SETTINGS.accelerator_toleration_key, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # The predict command ships in the server image.
    assert spec["containers"][0]["image"] == SETTINGS.server_image
    output = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == "/mnt/output")
    assert "readOnly" not in output


def test_object_storage_gets_scratch_and_the_secret() -> None:
    pod = pods(input={"uri": "s3://photos/in"}, output={"uri": "obs://results/out"}, storage={"secretName": "s3-creds"})[0]
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index(contract.FLAG_INPUT) + 1] == "s3://photos/in"
    assert args[args.index(contract.FLAG_OUTPUT) + 1] == "obs://results/out"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs[contract.ENV_AWS_ACCESS_KEY_ID] == "s3-creds"
    assert any(v["name"] == "scratch" for v in pod["spec"]["volumes"])


def test_progress_is_summed_over_shards() -> None:
    total = sum_progress([BatchProgress(10, 50, 9, 1, 20.0), BatchProgress(25, 50, 25, 0, 21.5)])
    assert total == {"done": 35, "total": 100, "succeeded": 34, "failed": 1, "imagesPerSecond": 41.5, "fraction": "35/100"}
    finished = progress_from_summary({"total": 50, "succeeded": 48, "failed": 2, "imagesPerSecond": 40.0, "shard": "0/2"})
    assert finished == BatchProgress(50, 50, 48, 2, 40.0)
    assert progress_from_summary({"error": "boom"}) is None
