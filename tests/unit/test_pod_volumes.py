"""Every pod the operator builds names each claim (and each host directory) in one volume only.

A kubelet mounts a PersistentVolumeClaim once per pod: a second volume for the
same claim never becomes mounted and the pod stays ContainerCreating
(kubernetes/kubernetes#51853). The examples put every location on one claim,
so each builder is run here with all its locations on the same claim, and on
the same host directory, in every combination a spec allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from ascend_mlops.api import catalog, constants
from ascend_mlops.api.specs import (
    parse_batch_prediction,
    parse_inference_service,
    parse_model_conversion,
    parse_storage_uri,
    parse_training_job,
)
from ascend_mlops.builders import batch, common, conversion, inference, training
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.settings import Settings
from ascend_mlops.storage import claims_mounted_twice

SETTINGS = Settings.from_env({})
SIMULATOR = Settings.from_env({"ASCEND_MLOPS_SIMULATOR": "1", "ASCEND_MLOPS_DRIVER_MOUNTS": "hostpath"})
ACC = catalog.DEFAULT_ACCELERATOR_RESOURCE


def owner(kind: str) -> common.Owner:
    return common.Owner(kind=kind, name="flowers", namespace="ml", uid=f"uid-{kind}")


# Every location on one claim, and on one host directory ("shared"), or the files in it.
LAYOUTS = {
    "pvc": {
        "dataset": "pvc://flowers-data/datasets/flowers",
        "output": "pvc://flowers-data/runs/flowers",
        "weights": "pvc://flowers-data/weights/mobilenet.h5",
        "source": "pvc://flowers-data/runs/flowers/V001/frozen_graph",
        "om": "pvc://flowers-data/runs/flowers/V001/om/model",
        "model_file": "pvc://flowers-data/runs/flowers/V001/om/model/model.om",
        "labels": "pvc://flowers-data/runs/flowers/V001/labels.txt",
        "batch_out": "pvc://flowers-data/batch/flowers",
        "manifest": "pvc://flowers-data/datasets/photos.manifest",
    },
    "hostPath": {  # batch results beside the inputs, never inside them
        "dataset": "file:///srv/shared",
        "output": "file:///srv/shared/runs",
        "weights": "file:///srv/shared/mobilenet.h5",
        "source": "file:///srv/shared",
        "om": "file:///srv/shared",
        "model_file": "file:///srv/shared/model.om",
        "labels": "file:///srv/shared/labels.txt",
        "batch_out": "file:///srv/results",
        "manifest": "file:///srv/shared/photos.manifest",
    },
}


def uri(text: str):  # type: ignore[no-untyped-def]
    return parse_storage_uri(text, "spec.x")


def pod_specs(where: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for workers in (1, 3):
        for weights in (None, where["weights"]):
            algorithm: dict[str, Any] = {"name": "mobilenet_v1"}
            if weights:
                algorithm["weights"] = weights
            spec = parse_training_job(
                {"algorithm": algorithm, "dataset": {"uri": where["dataset"]}, "output": {"uri": where["output"]},
                 "workers": workers}
            )
            for pod in training.build_pods(spec, owner(constants.TRAINING_JOB), SETTINGS, attempt=0):
                yield f"training workers={workers} weights={bool(weights)}", pod["spec"]

    for source in (where["source"], where["source"] + "/frozen_graph.pb"):
        spec = parse_model_conversion({"source": {"uri": source}, "output": {"uri": where["om"]}})
        assert spec.source is not None and spec.output is not None
        for settings in (SETTINGS, SIMULATOR):
            pod = conversion.build_pod(
                spec, owner(constants.MODEL_CONVERSION), settings, source=spec.source, output=spec.output, attempt=0
            )
            yield f"conversion from {source}", pod["spec"]

    for model_uri in (where["om"], where["model_file"]):
        for labels in (None, where["labels"]):
            model = ResolvedModel(uri(model_uri), uri(labels) if labels else None, "acl")
            for settings in (SETTINGS, SIMULATOR):
                isvc = parse_inference_service(
                    {"model": {"uri": model_uri}, "auth": {"secretName": "tokens"}}, ACC
                )
                for revision in (constants.REVISION_STABLE, constants.REVISION_CANARY):
                    deployment = inference.build_deployment(
                        isvc, owner(constants.INFERENCE_SERVICE), settings, model, revision=revision, replicas=1
                    )
                    yield f"inference {revision} model={model_uri} labels={bool(labels)}", deployment["spec"]["template"]["spec"]
                for input_uri in (where["dataset"], where["manifest"]):
                    spec = parse_batch_prediction(
                        {"model": {"uri": model_uri}, "input": {"uri": input_uri}, "output": {"uri": where["batch_out"]},
                         "parallelism": 2}, ACC
                    )
                    for pod in batch.build_pods(spec, owner(constants.BATCH_PREDICTION), settings, model, attempt=0):
                        yield f"batch input={input_uri} model={model_uri} labels={bool(labels)}", pod["spec"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_builder_names_a_claim_or_host_directory_twice(layout: str) -> None:
    built = list(pod_specs(LAYOUTS[layout]))
    assert len(built) > 40  # every builder, in every combination above
    for what, spec in built:
        assert claims_mounted_twice(spec) == [], what
        host_dirs = Counter(v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v)
        assert [d for d, n in host_dirs.items() if n > 1] == [], what
        names = [v["name"] for v in spec["volumes"]]
        assert len(names) == len(set(names)), what
        # Every mount names a volume of the pod, and the locations still get their own mount paths.
        for container in spec["containers"]:
            mounts = container.get("volumeMounts") or []
            assert {m["name"] for m in mounts} <= set(names), what
            paths = [m["mountPath"] for m in mounts]
            assert len(paths) == len(set(paths)), what
        if layout == "pvc":
            claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
            assert len(claims) == 1 and "readOnly" not in claims[0]["persistentVolumeClaim"], what


def test_the_check_fails_on_one_volume_per_role() -> None:
    # The layout before the fix (a volume per role, one claim twice) is what the test above refuses.
    spec = {"volumes": [
        {"name": "dataset-storage", "persistentVolumeClaim": {"claimName": "flowers-data", "readOnly": True}},
        {"name": "output-storage", "persistentVolumeClaim": {"claimName": "flowers-data"}},
    ]}
    assert claims_mounted_twice(spec) == ["flowers-data"]
