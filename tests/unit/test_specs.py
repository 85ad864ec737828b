from __future__ import annotations

from typing import Any

import pytest

from ascend_mlops.api import catalog
from ascend_mlops.api.specs import (
    Auth,
    Autoscaling,
    Exposure,
    FieldError,
    SpecError,
    StorageOptions,
    StorageURI,
    parse_inference_service,
    parse_model_conversion,
    parse_storage_uri,
    parse_training_job,
)

RESOURCE = "huawei.com/Ascend310"


def training(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "algorithm": {"name": "resnet_v1_50", "hyperparameters": {"epochs": 2, "batch_size": 8}},
        "dataset": {"uri": "pvc://data/flowers"},
        "output": {"uri": "pvc://data/runs/flowers"},
    }
    spec.update(overrides)
    return spec


def errors_of(fn: Any, *args: Any) -> str:
    with pytest.raises(SpecError) as info:
        fn(*args)
    return str(info.value)


# --- storage URIs -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pvc://data/flowers", StorageURI("pvc", "data", "flowers")),
        ("pvc://data", StorageURI("pvc", "data", "")),
        ("pvc://data//a/./b/", StorageURI("pvc", "data", "a/b")),
        ("file:///srv/flowers", StorageURI("file", None, "/srv/flowers")),
        ("file:///srv/runs/../runs", None),
        ("s3://runs/flowers/", StorageURI("s3", "runs", "flowers")),
        ("obs://flowers-data", StorageURI("obs", "flowers-data", "")),
        ("s3://Bad_Bucket/x", None),
        ("obs://bucket/a/../b", None),
    ],
)
def test_storage_uris_parse(text: str, expected: StorageURI | None) -> None:
    if expected is None:
        with pytest.raises(FieldError):
            parse_storage_uri(text, "spec.x")
    else:
        assert parse_storage_uri(text, "spec.x") == expected


def test_unsupported_scheme_names_field_and_fix() -> None:
    with pytest.raises(FieldError) as info:
        parse_storage_uri("http://example/flowers.tgz", "spec.dataset.uri")
    assert str(info.value) == (
        "spec.dataset.uri: unsupported scheme 'http'; "
        "use pvc://<claim>/<path>, file:///<path>, s3://<bucket>/<prefix> or obs://<bucket>/<prefix>"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("file://host/data", "three slashes"),
        ("pvc://Bad_Claim/x", "not a PersistentVolumeClaim name"),
        ("pvc://claim/../etc", "'..'"),
        ("flowers", "is not a URI"),
    ],
)
def test_malformed_uris(text: str, fragment: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_storage_uri(text, "spec.output.uri")
    assert str(info.value).startswith("spec.output.uri: ")
    assert fragment in str(info.value)


def test_uri_join_parent_and_str_round_trip() -> None:
    root = parse_storage_uri("pvc://data/runs/flowers", "f")
    assert str(root.join("V001", "frozen_graph")) == "pvc://data/runs/flowers/V001/frozen_graph"
    assert str(parse_storage_uri("pvc://data", "f").join("V001")) == "pvc://data/V001"
    assert str(root.parent()) == "pvc://data/runs"
    host = parse_storage_uri("file:///srv/runs", "f")
    assert str(host.join("V002/om/model")) == "file:///srv/runs/V002/om/model"
    for uri in (root, host):
        assert parse_storage_uri(str(uri), "f") == uri
    with pytest.raises(ValueError):
        root.join("../escape")


def test_object_storage_uris_join_in_their_scheme() -> None:
    root = parse_storage_uri("s3://bucket/runs/flowers", "f")
    assert root.is_object_storage and root.bucket == "bucket"
    assert str(root.join("V001/frozen_graph")) == "s3://bucket/runs/flowers/V001/frozen_graph"
    assert str(parse_storage_uri("obs://bucket", "f").join("V002", "om/model")) == "obs://bucket/V002/om/model"


# --- spec.storage (every kind) ---------------------------------------------------------
def test_storage_options_on_every_kind() -> None:
    storage = {"secretName": "obs-creds", "scratchSize": "50Gi"}
    expected = StorageOptions(secret_name="obs-creds", scratch_size="50Gi")
    assert parse_training_job(training(storage=storage)).storage == expected
    conversion = {"source": {"uri": "s3://bucket/runs/V001/frozen_graph"}, "storage": storage}
    assert parse_model_conversion(conversion).storage == expected
    isvc = {"model": {"uri": "obs://bucket/runs/V001/om/model"}, "storage": storage}
    assert parse_inference_service(isvc, RESOURCE).storage == expected
    assert parse_training_job(training()).storage == StorageOptions()


def test_storage_options_errors_name_the_field() -> None:
    text = errors_of(
        parse_training_job, training(storage={"secretName": "S3_Creds", "scratchSize": "huge", "bucket": "x"})
    )
    for fragment in (
        "spec.storage.secretName: 'S3_Creds' is not valid",
        "spec.storage.scratchSize: 'huge' is not a size",
        "spec.storage.bucket: unknown field",
    ):
        assert fragment in text


# --- TrainingJob -----------------------------------------------------------------------
def test_training_job_defaults() -> None:
    spec = parse_training_job(training())
    assert spec.algorithm == "resnet_v1_50"
    assert spec.hyperparameters == {"epochs": 2, "batch_size": 8}
    assert spec.train_ratio == catalog.DEFAULT_TRAIN_RATIO
    assert spec.workers == 1
    assert spec.backoff_limit == 3
    assert spec.clean_pod_policy == "Running"
    assert spec.active_deadline_seconds is None
    assert str(spec.dataset) == "pvc://data/flowers"


def test_training_job_collects_every_error() -> None:
    text = errors_of(
        parse_training_job,
        training(
            algorithm={"name": "vgg16", "hyperparameters": {"epochs": 0, "lr": 0.1, "batch_size": 2.5}},
            dataset={"uri": "gs://bucket/flowers", "trainRatio": 1.0},
            workers=0,
            cleanPodPolicy="Sometimes",
        ),
    )
    for fragment in (
        "spec.algorithm.name: unknown value 'vgg16'",
        "spec.algorithm.hyperparameters.epochs: 0 is outside [1, 10000]",
        "spec.algorithm.hyperparameters.lr: unknown hyperparameter",
        "spec.algorithm.hyperparameters.batch_size: expected an integer",
        "spec.dataset.uri: unsupported scheme 'gs'",
        "spec.dataset.trainRatio: 1.0 must be less than 1",
        "spec.workers: 0 is below the minimum 1",
        "spec.cleanPodPolicy: unknown value 'Sometimes'",
    ):
        assert fragment in text


def test_training_job_requires_sections() -> None:
    text = errors_of(parse_training_job, {"algorithm": {"name": "resnet_v1_50"}})
    assert "spec.dataset: is required" in text
    assert "spec.output: is required" in text
    assert "spec: is required" in errors_of(parse_training_job, None)


def test_training_job_output_must_differ_from_dataset() -> None:
    text = errors_of(parse_training_job, training(output={"uri": "pvc://data/flowers"}))
    assert "spec.output.uri: is the same location as spec.dataset.uri" in text


def test_pod_options_are_checked() -> None:
    text = errors_of(
        parse_training_job,
        training(
            env=[{"name": "1BAD", "value": "x"}, {"name": "OK", "value": 3}],
            resources={"requests": {"cpu": "lots"}},
            tolerations=[{"key": "k", "operator": "Maybe"}],
        ),
    )
    assert "spec.env[0].name" in text
    assert "spec.env[1].value: expected a string" in text
    assert "spec.resources.requests.cpu: 'lots' is not a quantity" in text
    assert "spec.tolerations[0].operator" in text
    ok = parse_training_job(training(env=[{"name": "A", "value": "1"}], resources={"limits": {"cpu": 2, "memory": "4Gi"}}))
    assert ok.pod.env == (("A", "1"),)
    assert ok.pod.resources == {"limits": {"cpu": "2", "memory": "4Gi"}}


# --- ModelConversion -----------------------------------------------------------------
SEED_OPTIONS = {
    "inputShape": "images:1,224,224,3",
    "inputFormat": "NHWC",
    "outNodes": "logits:0",
    "outputType": "FP32",
    "preferredDataFormat": "5D",
    "highPrecision": 0,
    "l2Optimize": True,
}


def test_conversion_with_reference_and_seed_options() -> None:
    spec = parse_model_conversion({"source": {"trainingJobRef": {"name": "flowers"}}, "options": SEED_OPTIONS})
    assert spec.training_job_ref == "flowers"
    assert spec.source is None
    assert spec.template == catalog.TEMPLATE_SEED
    assert spec.soc_version == "Ascend310"
    assert spec.options == SEED_OPTIONS
    assert spec.output is None


def test_conversion_needs_exactly_one_source() -> None:
    both = {"source": {"trainingJobRef": {"name": "a"}, "uri": "pvc://d/x"}}
    assert "set exactly one of trainingJobRef" in errors_of(parse_model_conversion, both)
    assert "set exactly one of trainingJobRef" in errors_of(parse_model_conversion, {"source": {}})


def test_conversion_options_are_checked() -> None:
    text = errors_of(
        parse_model_conversion,
        {
            "source": {"uri": "pvc://d/V001/frozen_graph"},
            "template": "Caffe-To-Ascend",
            "options": {"inputShape": "images", "l2Optimize": "yes", "colour": 1, "dynamicBatchSizes": [1]},
        },
    )
    assert "spec.template: unknown value 'Caffe-To-Ascend'" in text
    assert "spec.options.inputShape: 'images' is not valid" in text
    assert "spec.options.l2Optimize: expected true or false" in text
    assert "spec.options.colour: unknown option" in text
    assert "spec.options.dynamicBatchSizes" in text


def test_dynamic_batch_needs_minus_one() -> None:
    text = errors_of(
        parse_model_conversion,
        {
            "source": {"uri": "pvc://d/x"},
            "options": {"inputShape": "images:1,224,224,3", "dynamicBatchSizes": [1, 2, 4]},
        },
    )
    assert "use -1 as the batch dimension" in text
    ok = parse_model_conversion(
        {"source": {"uri": "pvc://d/x"}, "options": {"inputShape": "images:-1,224,224,3", "dynamicBatchSizes": [1, 2, 4]}}
    )
    assert ok.options["dynamicBatchSizes"] == [1, 2, 4]


# --- InferenceService ----------------------------------------------------------------
def test_inference_defaults_acl_to_one_device() -> None:
    spec = parse_inference_service({"model": {"conversionRef": {"name": "flowers-om"}}}, RESOURCE)
    assert spec.runtime == "acl"
    assert spec.replicas == 1
    assert spec.accelerator is not None
    assert (spec.accelerator.resource, spec.accelerator.count) == (RESOURCE, 1)
    assert not spec.accelerator_explicit


def test_tensorflow_runtime_asks_for_no_device_unless_told() -> None:
    spec = parse_inference_service({"model": {"uri": "pvc://d/V001/saved_model"}, "runtime": "tensorflow"}, RESOURCE)
    assert spec.accelerator is None
    told = parse_inference_service(
        {"model": {"uri": "pvc://d/m"}, "runtime": "tensorflow", "accelerator": {"count": 2}}, RESOURCE
    )
    assert told.accelerator is not None and told.accelerator.count == 2


def test_inference_errors() -> None:
    text = errors_of(
        parse_inference_service,
        {"model": {"uri": "pvc://d/V001/frozen_graph/frozen_graph.pb", "labels": "ftp://x"}, "accelerator": {"count": 0}, "replicas": 0},
        RESOURCE,
    )
    assert "spec.model.labels: unsupported scheme 'ftp'" in text
    assert "spec.accelerator.count: the acl runtime needs an Ascend device" in text
    assert "spec.replicas: 0 is below the minimum 1" in text
    assert "is a TensorFlow graph" in text
    assert "set exactly one of conversionRef" in errors_of(parse_inference_service, {"model": {}}, RESOURCE)


CANARY_BASE = {"model": {"uri": "pvc://d/runs/V001/om/model"}}


@pytest.mark.parametrize(
    ("canary", "error"),
    [
        ({"uri": "pvc://d/runs/V002/om/model", "trafficPercent": 101}, "spec.canary.trafficPercent: 101 is above the maximum 100"),
        ({"uri": "pvc://d/runs/V002/om/model", "trafficPercent": -5}, "spec.canary.trafficPercent: -5 is below the minimum 0"),
        ({"uri": "pvc://d/runs/V002/om/model", "conversionRef": {"name": "v2"}, "trafficPercent": 20}, "spec.canary: set exactly one of"),
        ({"trafficPercent": 20}, "spec.canary: set exactly one of"),
        ({"uri": "pvc://d/runs/V002/om/model"}, "spec.canary.trafficPercent: is required without analysis"),
        ({"uri": "pvc://d/runs/V001/om/model", "trafficPercent": 20}, "spec.canary: names the same model as spec.model"),
        ({"uri": "pvc://d/runs/V002/om/model", "analysis": {"steps": [50, 10, 100]}}, "spec.canary.analysis.steps: steps must increase"),
        ({"uri": "pvc://d/runs/V002/om/model", "analysis": {"steps": [10, 10]}}, "spec.canary.analysis.steps: steps must increase"),
        ({"uri": "pvc://d/runs/V002/om/model", "analysis": {"steps": [0, 100]}}, "spec.canary.analysis.steps: every step is an integer"),
        ({"uri": "pvc://d/runs/V002/om/model", "analysis": {"steps": []}}, "spec.canary.analysis.steps: expected a non-empty list"),
        ({"uri": "pvc://d/runs/V002/om/model", "analysis": {"maxErrorRate": 1.5}}, "spec.canary.analysis.maxErrorRate: 1.5 is a share"),
        ({"uri": "pvc://d/runs/V002/om/model", "trafficPercent": 5, "analysis": {"steps": [10, 100]}},
         "spec.canary.trafficPercent: is 5 but analysis.steps starts at 10"),
        ({"uri": "pvc://d/runs/V002/graph.pb", "trafficPercent": 5}, "spec.canary.uri: pvc://d/runs/V002/graph.pb is a TensorFlow graph"),
    ],
)
def test_bad_canary_specs_name_the_field(canary: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_inference_service({**CANARY_BASE, "canary": canary}, catalog.DEFAULT_ACCELERATOR_RESOURCE)
    assert error in str(info.value)


def test_canary_defaults() -> None:
    spec = parse_inference_service(
        {**CANARY_BASE, "canary": {"uri": "pvc://d/runs/V002/om/model", "analysis": {}}}, catalog.DEFAULT_ACCELERATOR_RESOURCE
    )
    assert spec.canary is not None and spec.canary.analysis is not None
    assert spec.canary.traffic_percent == 10 and spec.canary.replicas == 1 and spec.canary.progress_deadline_seconds == 600
    assert spec.canary.analysis.steps == (10, 50, 100) and spec.canary.analysis.max_error_rate == 0.01
    assert spec.canary.analysis.interval_seconds == 60 and spec.canary.analysis.min_requests == 20
    plain = parse_inference_service(
        {**CANARY_BASE, "canary": {"uri": "pvc://d/runs/V002/om/model", "trafficPercent": 20, "replicas": 2}}, catalog.DEFAULT_ACCELERATOR_RESOURCE
    )
    assert plain.canary is not None and plain.canary.traffic_percent == 20 and plain.canary.replicas == 2 and plain.canary.analysis is None


# --- serving real clients: exposure, auth, autoscaling (issue 12) ----------------------------
SERVING_BASE = {"model": {"uri": "pvc://d/runs/V001/om/model"}}


def serving(**spec: Any) -> Any:
    return parse_inference_service({**SERVING_BASE, **spec}, RESOURCE)


def test_exposure_auth_and_autoscaling_defaults() -> None:
    plain = serving()
    assert plain.exposure is None and plain.auth is None and plain.autoscaling is None and plain.replicas == 1
    spec = serving(
        exposure={"type": "Ingress", "host": "flowers.example.com", "ingressClassName": "nginx", "tlsSecretName": "flowers-tls"},
        auth={"secretName": "flowers-tokens"},
        autoscaling={"maxReplicas": 4},
    )
    assert spec.exposure == Exposure("Ingress", "flowers.example.com", "nginx", "flowers-tls")
    assert spec.auth == Auth("flowers-tokens")
    assert spec.autoscaling == Autoscaling(max_replicas=4, min_replicas=1, metric="concurrency", target=4.0)
    assert spec.replicas == 1  # what a new Deployment starts with: minReplicas
    cpu = serving(autoscaling={"minReplicas": 2, "maxReplicas": 3, "metric": "cpu"})
    assert cpu.autoscaling == Autoscaling(max_replicas=3, min_replicas=2, metric="cpu", target=80.0) and cpu.replicas == 2
    fractional = serving(autoscaling={"maxReplicas": 3, "target": 2.5}, exposure={"type": "HTTPRoute"})
    assert fractional.autoscaling is not None and fractional.autoscaling.target == 2.5
    assert fractional.exposure == Exposure("HTTPRoute")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"replicas": 2, "autoscaling": {"maxReplicas": 4}}, "spec.replicas: and spec.autoscaling exclude each other"),
        # Both fields are reported even when autoscaling has errors of its own.
        ({"replicas": 2, "autoscaling": {"maxReplicas": 0}}, "spec.replicas: and spec.autoscaling exclude each other"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}, "spec.autoscaling.minReplicas: 5 is above maxReplicas 4; lower minReplicas or raise"),
        ({"autoscaling": {"minReplicas": 2}}, "spec.autoscaling.maxReplicas: is required"),
        ({"autoscaling": {"maxReplicas": 101}}, "spec.autoscaling.maxReplicas: 101 is above the maximum 100"),
        ({"autoscaling": {"maxReplicas": 2, "minReplicas": 0}}, "spec.autoscaling.minReplicas: 0 is below the minimum 1"),
        ({"autoscaling": {"maxReplicas": 2, "metric": "qps"}}, "spec.autoscaling.metric: unknown value 'qps'; use one of: concurrency, cpu"),
        ({"autoscaling": {"maxReplicas": 2, "target": 0}}, "spec.autoscaling.target: 0 must be greater than 0"),
        ({"autoscaling": {"maxReplicas": 2, "metric": "cpu", "target": 75.5}}, "spec.autoscaling.target: expected an integer, got 75.5"),
        ({"autoscaling": {"maxReplicas": 2, "scaleDown": 1}}, "spec.autoscaling.scaleDown: unknown field"),
        ({"exposure": {"host": "a.example.com"}}, "spec.exposure.type: is required; Ingress"),
        ({"exposure": {"type": "LoadBalancer"}}, "spec.exposure.type: unknown value 'LoadBalancer'; use one of: Ingress, HTTPRoute"),
        ({"exposure": {"type": "Ingress", "host": "Flowers.Example.com"}}, "spec.exposure.host: 'Flowers.Example.com' is not valid"),
        ({"exposure": {"type": "Ingress", "host": "*.example.com"}}, "spec.exposure.host: '*.example.com' is not valid; a DNS name"),
        ({"exposure": {"type": "HTTPRoute", "tlsSecretName": "tls"}}, "spec.exposure.tlsSecretName: applies to type Ingress only"),
        ({"exposure": {"type": "HTTPRoute", "ingressClassName": "nginx"}}, "spec.exposure.ingressClassName: applies to type Ingress only"),
        ({"auth": {}}, "spec.auth.secretName: is required"),
        ({"auth": {"secretName": "Tokens"}}, "spec.auth.secretName: 'Tokens' is not valid"),
        ({"auth": "tokens"}, "spec.auth: expected an object"),
    ],
)
def test_bad_serving_specs_name_the_field_and_the_fix(spec: dict[str, Any], error: str) -> None:
    assert error in errors_of(parse_inference_service, {**SERVING_BASE, **spec}, RESOURCE)
