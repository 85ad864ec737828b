"""The CRDs: structural schemas, and every example valid against its CRD.

Validation mirrors what `kubectl apply` gets from the API server: defaults are
applied, then the object is validated against the openAPIV3Schema turned into
JSON Schema, with unknown fields rejected as kubectl's strict field validation
(the default since Kubernetes 1.27) does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ascend_mlops.api import catalog, constants, specs
from ascend_mlops.api.specs import (
    parse_batch_prediction,
    parse_inference_service,
    parse_model_conversion,
    parse_training_job,
)
from tests.helpers import REPO_ROOT

CRD_DIR = REPO_ROOT / "crds"
EXAMPLES = REPO_ROOT / "examples"


def load_crds() -> dict[str, dict[str, Any]]:
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


CRDS = load_crds()


def open_api_schema(kind: str) -> dict[str, Any]:
    version = CRDS[kind]["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"])


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema draft 7, strict about unknown fields."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("default", "description", "format"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            continue  # handled with minimum/maximum below
        else:
            out[key] = to_json_schema(value)
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True  # what the API server enforces for a set
    if node.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def admit(obj: dict[str, Any]) -> dict[str, Any]:
    """Default and validate as the API server would; raise jsonschema.ValidationError if rejected."""
    schema = open_api_schema(obj["kind"])
    defaulted = apply_defaults(copy.deepcopy(obj), schema)
    json_schema = to_json_schema(schema)
    # metadata is the API server's own business, never part of a CRD's schema.
    json_schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.Draft7Validator(json_schema).validate(defaulted)
    return defaulted


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, sub in (node.get("properties") or {}).items():
            yield from walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*.yaml"))


def example_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in example_files():
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc.get("apiVersion") == constants.API_VERSION:
                docs.append((f"{path.relative_to(REPO_ROOT)}#{index}", doc))
    return docs


# --- the CRDs themselves -----------------------------------------------------------------
def test_one_crd_per_kind_with_names_scope_and_status() -> None:
    assert set(CRDS) == set(constants.PLURALS)
    assert len(list(CRD_DIR.glob("*.yaml"))) == len(constants.PLURALS)
    all_short_names: list[str] = []
    for kind, crd in CRDS.items():
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        spec = crd["spec"]
        plural = constants.PLURALS[kind]
        assert crd["metadata"]["name"] == f"{plural}.{constants.GROUP}"
        assert spec["group"] == constants.GROUP
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["plural"] == plural
        assert spec["names"]["shortNames"] == constants.SHORT_NAMES[kind]
        assert constants.CATEGORY in spec["names"]["categories"]
        all_short_names += spec["names"]["shortNames"]
        [version] = spec["versions"]
        assert version["name"] == constants.VERSION and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
        assert "Age" in columns
        assert "Phase" in columns or "Ready" in columns
    # Must not collide with KServe or Kubeflow.
    assert not set(all_short_names) & {"isvc", "tfjob", "ptjob", "tj", "mc", "is"}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schemas_are_structural(kind: str) -> None:
    schema = open_api_schema(kind)
    spec_schema = schema["properties"]["spec"]
    assert not spec_schema.get("x-kubernetes-preserve-unknown-fields")
    assert not schema["properties"]["status"].get("x-kubernetes-preserve-unknown-fields")
    for path, node in walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{kind}{path}: every schema node needs a type to be structural"
        if node["type"] == "object" and "properties" in node:
            assert "additionalProperties" not in node, f"{kind}{path}: properties and additionalProperties exclude each other"
        for branch in node.get("oneOf", []) + node.get("anyOf", []):
            assert "type" not in branch and "properties" not in branch, f"{kind}{path}: value validations only in oneOf"
        if "default" in node:
            # A default must itself be valid, or the API server refuses the CRD.
            jsonschema.Draft7Validator(to_json_schema(node)).validate(node["default"])


def test_conditions_follow_metav1_condition() -> None:
    for kind in CRDS:
        conditions = open_api_schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["required"]) == {"type", "status", "reason", "lastTransitionTime"}


def test_schema_enums_match_the_catalog() -> None:
    tj = open_api_schema(constants.TRAINING_JOB)["properties"]["spec"]["properties"]
    assert tj["algorithm"]["properties"]["name"]["enum"] == list(catalog.ALGORITHMS)
    assert set(tj["algorithm"]["properties"]["hyperparameters"]["properties"]) == set(catalog.HYPERPARAMETERS)
    assert tj["dataset"]["properties"]["trainRatio"]["default"] == catalog.DEFAULT_TRAIN_RATIO
    mc = open_api_schema(constants.MODEL_CONVERSION)["properties"]["spec"]["properties"]
    assert mc["template"]["enum"] == list(catalog.TEMPLATES)
    assert set(mc["options"]["properties"]) == set(catalog.CONVERSION_OPTIONS)
    isvc = open_api_schema(constants.INFERENCE_SERVICE)["properties"]["spec"]["properties"]
    assert isvc["runtime"]["enum"] == list(catalog.BACKENDS)
    # The ATC option values the converter maps to flags (ascend/atc.py): what the schema admits, the converter knows.
    options = mc["options"]["properties"]
    for name, known in (
        ("inputFormat", specs.INPUT_FORMATS),
        ("outputType", specs.OUTPUT_TYPES),
        ("preferredDataFormat", specs.PREFERRED_DATA_FORMATS),
        ("precisionMode", specs.PRECISION_MODES),
    ):
        assert options[name]["enum"] == list(known), name


# --- examples -----------------------------------------------------------------------------
def test_flowers_has_one_example_per_kind() -> None:
    kinds = sorted(doc["kind"] for name, doc in example_docs() if name.startswith("examples/flowers/") and "canary" not in name)
    assert kinds == sorted(CRDS)


@pytest.mark.parametrize(("name", "doc"), example_docs(), ids=[n for n, _ in example_docs()])
def test_every_example_is_admitted_and_parses(name: str, doc: dict[str, Any]) -> None:
    admitted = admit(doc)
    # What the API server stores must also satisfy the operator's own parsing.
    if doc["kind"] == constants.TRAINING_JOB:
        parse_training_job(admitted["spec"])
    elif doc["kind"] == constants.MODEL_CONVERSION:
        parse_model_conversion(admitted["spec"])
    elif doc["kind"] == constants.BATCH_PREDICTION:
        parse_batch_prediction(admitted["spec"], catalog.DEFAULT_ACCELERATOR_RESOURCE)
    else:
        parse_inference_service(admitted["spec"], catalog.DEFAULT_ACCELERATOR_RESOURCE)


def test_flowers_examples_mirror_the_seed() -> None:
    docs = {doc["kind"]: doc for name, doc in example_docs() if name.startswith("examples/flowers/") and "canary" not in name}
    tj = admit(docs[constants.TRAINING_JOB])["spec"]
    assert tj["algorithm"]["name"] == "resnet_v1_50"
    assert tj["dataset"]["trainRatio"] == 0.8
    mc = admit(docs[constants.MODEL_CONVERSION])["spec"]
    assert mc["source"]["trainingJobRef"]["name"] == docs[constants.TRAINING_JOB]["metadata"]["name"]
    assert mc["template"] == "TF-FrozenGraph-To-Ascend-C32"
    assert mc["options"] == {
        "inputShape": "images:1,224,224,3",
        "inputFormat": "NHWC",
        "outNodes": "logits:0",
        "outputType": "FP32",
        "preferredDataFormat": "5D",
        "highPrecision": 0,
        "l2Optimize": True,
    }
    isvc = admit(docs[constants.INFERENCE_SERVICE])["spec"]
    assert isvc["model"]["conversionRef"]["name"] == docs[constants.MODEL_CONVERSION]["metadata"]["name"]
    assert isvc["accelerator"] == {"resource": "huawei.com/Ascend310", "count": 1}
    assert isvc["resources"]["limits"] == {"cpu": "3", "memory": "6Gi"}
    bp = admit(docs[constants.BATCH_PREDICTION])["spec"]
    assert bp["model"]["conversionRef"]["name"] == docs[constants.MODEL_CONVERSION]["metadata"]["name"]
    assert bp["input"]["uri"] == tj["dataset"]["uri"] and bp["parallelism"] == 2
    assert bp["output"]["uri"].startswith("pvc://flowers-data/")


def test_defaults_are_applied() -> None:
    admitted = admit(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.TRAINING_JOB,
            "metadata": {"name": "x"},
            "spec": {
                "algorithm": {"name": "mobilenet_v1"},
                "dataset": {"uri": "pvc://d/x"},
                "output": {"uri": "pvc://d/y"},
            },
        }
    )
    spec = admitted["spec"]
    assert (spec["dataset"]["trainRatio"], spec["workers"], spec["backoffLimit"], spec["cleanPodPolicy"]) == (
        0.8,
        1,
        3,
        "Running",
    )


# --- malformed manifests are rejected at apply time ------------------------------------------
def flowers(kind: str) -> dict[str, Any]:
    for name, doc in example_docs():
        if name.startswith("examples/flowers/") and "canary" not in name and doc["kind"] == kind:
            return copy.deepcopy(doc)
    raise AssertionError(kind)


def set_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return doc


DELETE = object()

MALFORMED = [
    (constants.TRAINING_JOB, "spec.algorithm.name", "vgg16"),
    (constants.TRAINING_JOB, "spec.algorithm.hyperparameters.epochs", 0),
    (constants.TRAINING_JOB, "spec.algorithm.hyperparameters.learning_rate", 0),
    (constants.TRAINING_JOB, "spec.algorithm.hyperparameters.batch_size", "32"),
    (constants.TRAINING_JOB, "spec.algorithm.hyperparameters.dropout", 0.5),
    (constants.TRAINING_JOB, "spec.dataset.trainRatio", 1.0),
    (constants.TRAINING_JOB, "spec.dataset.uri", "flowers"),
    (constants.TRAINING_JOB, "spec.output", DELETE),
    (constants.TRAINING_JOB, "spec.workers", 0),
    (constants.TRAINING_JOB, "spec.backoffLimit", -1),
    (constants.TRAINING_JOB, "spec.cleanPodPolicy", "Never"),
    (constants.TRAINING_JOB, "spec.resources.limits.cpu", "three"),
    (constants.TRAINING_JOB, "spec.tolerations", [{"operator": "Sometimes"}]),
    (constants.TRAINING_JOB, "spec.unknownField", True),
    (constants.TRAINING_JOB, "spec", DELETE),
    (constants.MODEL_CONVERSION, "spec.template", "Caffe-To-Ascend"),
    (constants.MODEL_CONVERSION, "spec.options.inputShape", "images"),
    (constants.MODEL_CONVERSION, "spec.options.highPrecision", 2),
    (constants.MODEL_CONVERSION, "spec.options.l2Optimize", "yes"),
    (constants.MODEL_CONVERSION, "spec.options.inputFormat", "nhwc"),
    (constants.MODEL_CONVERSION, "spec.options.dynamicBatchSizes", [1]),
    (constants.MODEL_CONVERSION, "spec.source.uri", "pvc://d/frozen_graph"),  # both sources
    (constants.MODEL_CONVERSION, "spec.source.trainingJobRef", DELETE),  # no source
    (constants.MODEL_CONVERSION, "spec.source.trainingJobRef.name", "Not_A_Name"),
    (constants.MODEL_CONVERSION, "spec.socVersion", "Ascend910"),
    (constants.INFERENCE_SERVICE, "spec.runtime", "onnx"),
    (constants.INFERENCE_SERVICE, "spec.replicas", 0),
    (constants.INFERENCE_SERVICE, "spec.accelerator.count", -1),
    (constants.INFERENCE_SERVICE, "spec.accelerator.resource", "Ascend310"),
    (constants.INFERENCE_SERVICE, "spec.model.uri", "pvc://d/om/model"),  # both models
    (constants.INFERENCE_SERVICE, "spec.model", DELETE),
    (constants.INFERENCE_SERVICE, "spec.batching.maxBatchSize", 0),
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "trafficPercent": 120}),
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "trafficPercent": -1}),
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "conversionRef": {"name": "v2"}, "trafficPercent": 20}),
    (constants.INFERENCE_SERVICE, "spec.canary", {"trafficPercent": 20}),  # no model
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "analysis": {"steps": [0, 50]}}),
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "analysis": {"steps": [50, 50]}}),  # a set
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "analysis": {"maxErrorRate": 2}}),
    (constants.INFERENCE_SERVICE, "spec.canary", {"uri": "pvc://d/V2/om/model", "analysis": {"interval": 5}}),
    (constants.INFERENCE_SERVICE, "spec.exposure", {"host": "flowers.example.com"}),  # no type
    (constants.INFERENCE_SERVICE, "spec.exposure", {"type": "NodePort"}),
    (constants.INFERENCE_SERVICE, "spec.exposure", {"type": "Ingress", "host": "Flowers.example.com"}),
    (constants.INFERENCE_SERVICE, "spec.exposure", {"type": "Ingress", "path": "/flowers"}),
    (constants.INFERENCE_SERVICE, "spec.auth", {}),
    (constants.INFERENCE_SERVICE, "spec.auth", {"secretName": "Tokens"}),
    (constants.INFERENCE_SERVICE, "spec.autoscaling", {"minReplicas": 1}),  # no maxReplicas
    (constants.INFERENCE_SERVICE, "spec.autoscaling", {"maxReplicas": 2, "metric": "rps"}),
    (constants.INFERENCE_SERVICE, "spec.autoscaling", {"maxReplicas": 2, "target": 0}),
    (constants.INFERENCE_SERVICE, "spec.autoscaling", {"maxReplicas": 0}),
]


@pytest.mark.parametrize(("kind", "path", "value"), MALFORMED, ids=[f"{k}:{p}" for k, p, _ in MALFORMED])
def test_malformed_manifests_are_rejected(kind: str, path: str, value: Any) -> None:
    doc = set_path(flowers(kind), path, value)
    with pytest.raises(jsonschema.ValidationError):
        admit(doc)


def test_status_written_by_the_operator_is_valid() -> None:
    """A status as the operator writes it passes the status schema (nothing would be pruned)."""
    status = {
        "phase": "Succeeded",
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "Succeeded",
                "message": "done",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
                "observedGeneration": 2,
            }
        ],
        "startTime": "2024-05-01T11:00:00Z",
        "completionTime": "2024-05-01T12:00:00Z",
        "attempts": 1,
        "workers": {"active": 0, "succeeded": 1, "failed": 0},
        "outputVersion": "V001",
        "artifacts": {"frozenGraph": "pvc://d/runs/V001/frozen_graph", "labels": "pvc://d/runs/V001/labels.txt"},
        "metrics": {"accuracy": 0.9, "loss": 0.3, "epochs": 12},
        "lastFailure": {"attempt": 0, "pod": "p", "exitCode": 137, "reason": "OOMKilled", "message": "", "retryable": True},
    }
    admit({**flowers(constants.TRAINING_JOB), "status": status})
    with pytest.raises(jsonschema.ValidationError):
        admit({**flowers(constants.TRAINING_JOB), "status": {**status, "freeForm": {"x": 1}}})


def test_serving_fields_are_admitted_and_replicas_has_no_default() -> None:
    """spec.replicas has no schema default: a defaulted replicas would collide with every spec.autoscaling."""
    doc = flowers(constants.INFERENCE_SERVICE)
    doc["spec"].pop("replicas", None)
    doc["spec"].update(
        exposure={"type": "Ingress", "host": "flowers.example.com", "ingressClassName": "nginx", "tlsSecretName": "flowers-tls"},
        auth={"secretName": "flowers-tokens"},
        autoscaling={"maxReplicas": 4},
    )
    admitted = admit(doc)["spec"]
    assert "replicas" not in admitted
    assert admitted["autoscaling"] == {"minReplicas": 1, "maxReplicas": 4, "metric": "concurrency"}
    spec = parse_inference_service(admitted, catalog.DEFAULT_ACCELERATOR_RESOURCE)
    assert spec.autoscaling is not None and spec.exposure is not None and spec.auth is not None


def test_cel_rules_guard_what_the_structural_schema_cannot() -> None:
    """replicas xor autoscaling, and minReplicas <= maxReplicas: CEL on a cluster, the operator's Valid condition everywhere."""
    spec = open_api_schema(constants.INFERENCE_SERVICE)["properties"]["spec"]
    rules = {rule["rule"]: rule["message"] for rule in spec["x-kubernetes-validations"]}
    assert rules["!(has(self.replicas) && has(self.autoscaling))"].startswith("set either replicas or autoscaling")
    scaling = spec["properties"]["autoscaling"]
    [rule] = scaling["x-kubernetes-validations"]
    assert "self.minReplicas <= self.maxReplicas" in rule["rule"]
