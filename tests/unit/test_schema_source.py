"""The CRD schema is the one source of the specs' defaults, bounds, enums, patterns and lengths:
the operator's parser (api/specs.py) must enforce every one of them, read from the schema.

For each field of each kind's spec that carries a default, minimum, maximum, enum,
pattern or maxLength, starting from the kind's flowers example: a value just outside
the bound must fail parsing with an error naming that field, and leaving a defaulted
field out must parse to the same spec as writing the default. A field the test cannot
reach is a failure unless UNREACHED names it with the reason.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ascend_mlops.api import catalog, constants, crds
from ascend_mlops.api.specs import (
    SpecError,
    parse_batch_prediction,
    parse_inference_service,
    parse_model_conversion,
    parse_training_job,
)
from tests.unit.test_crds import example_docs

ACC = catalog.DEFAULT_ACCELERATOR_RESOURCE
PARSERS: dict[str, Callable[[Any], Any]] = {
    constants.TRAINING_JOB: parse_training_job,
    constants.MODEL_CONVERSION: parse_model_conversion,
    constants.INFERENCE_SERVICE: lambda spec: parse_inference_service(spec, ACC),
    constants.BATCH_PREDICTION: lambda spec: parse_batch_prediction(spec, ACC),
}
KEYS = ("default", "minimum", "maximum", "enum", "pattern", "maxLength")

# The smallest valid content of an optional section, so that a field inside it can be tried.
SECTIONS: dict[str, dict[str, Any]] = {
    "spec.canary": {"uri": "pvc://flowers-data/V002/om/model.om", "trafficPercent": 20},
    "spec.canary.analysis": {},
    "spec.autoscaling": {"maxReplicas": 4},
    "spec.exposure": {"type": "Ingress"},
    "spec.auth": {"secretName": "tokens"},
    "spec.batching": {},
    "spec.accelerator": {"count": 1},
    "spec.options": {},
    "spec.storage": {},
    "spec.algorithm.hyperparameters": {},
    "spec.resources": {},
    "spec.output": {},
    "spec.canary.conversionRef": {},
}
# Fields in lists: the one element the test writes there.
ITEMS: dict[str, Any] = {
    "spec.env[]": {"name": "A", "value": "1"},
    "spec.tolerations[]": {"key": "k", "operator": "Exists"},
    "spec.canary.analysis.steps[]": 10,
    "spec.options.dynamicBatchSizes[]": 1,
}
UNREACHED: dict[tuple[str, str], str] = {
    # trafficPercent with analysis must equal the first step; tried without analysis, where it is free.
}


def example(kind: str) -> dict[str, Any]:
    for name, doc in example_docs():
        if name.startswith("examples/flowers/") and "canary" not in name and doc["kind"] == kind:
            return copy.deepcopy(doc["spec"])
    raise AssertionError(kind)


def leaves(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if any(key in node for key in KEYS) and node.get("type") in ("string", "integer", "number", "boolean"):
            yield path, node
        for name, sub in (node.get("properties") or {}).items():
            yield from walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")

    yield from walk(dict(crds.spec_schema(kind)), "spec")


def place(kind: str, path: str, value: Any) -> tuple[dict[str, Any], str] | None:
    """The example with `value` at `path` (sections and list items created as needed), and the path as
    the parser names it; None if a section on the way is not one the test can create."""
    spec = {"spec": example(kind)}
    parts = path.replace("[]", ".[]").split(".")
    node: Any = spec["spec"]
    named = "spec"
    for depth, part in enumerate(parts[1:], start=1):
        prefix = ".".join(parts[: depth + 1]).replace(".[]", "[]")
        last = depth == len(parts) - 1
        if part == "[]":
            if last:
                node[:] = [value]
            else:
                node[:] = [copy.deepcopy(ITEMS[prefix])]
                node = node[0]
            named += "[0]"
            continue
        named += f".{part}"
        if last:
            node[part] = value
        elif part not in node or node[part] is None:
            if prefix in SECTIONS:
                node[part] = copy.deepcopy(SECTIONS[prefix])
            elif f"{prefix}[]" in ITEMS:
                node[part] = []
            else:
                return None
        node = node[part]
    if "autoscaling" in path:
        spec["spec"].pop("replicas", None)
    if path.startswith("spec.canary.analysis"):
        spec["spec"]["canary"].pop("trafficPercent", None)
    return spec["spec"], named


def violations(node: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    kind = node.get("type")
    if "enum" in node:
        yield "enum", (max(node["enum"]) + 1) if kind == "integer" else "not-one-of-them"
    if "minimum" in node:
        low = node["minimum"]
        yield "minimum", low if node.get("exclusiveMinimum") else (low - 1 if kind == "integer" else low - 0.5)
    if "maximum" in node:
        high = node["maximum"]
        yield "maximum", high if node.get("exclusiveMaximum") else (high + 1 if kind == "integer" else high + 0.5)
    if "pattern" in node:
        bad = next(v for v in ("Not A_Valid:Value!", "-", "0") if not re.search(node["pattern"], v))
        yield "pattern", bad
    if "maxLength" in node:
        pattern = node.get("pattern") or ".*"
        n = node["maxLength"] + 1
        candidates = ["a" * n, ".".join(["a" * 40] * (n // 41 + 1)), "A" * n]
        long = next((v for v in candidates if len(v) > node["maxLength"] and re.fullmatch(pattern, v)), None)
        if long is not None:
            yield "maxLength", long


CASES = [(kind, path, node) for kind in PARSERS for path, node in leaves(kind)]


@pytest.mark.parametrize(("kind", "path", "node"), CASES, ids=[f"{k}:{p}" for k, p, _ in CASES])
def test_the_parser_enforces_the_schema(kind: str, path: str, node: dict[str, Any]) -> None:
    parse = PARSERS[kind]
    if (kind, path) in UNREACHED:
        pytest.skip(UNREACHED[(kind, path)])
    tried = 0
    for rule, value in violations(node):
        placed = place(kind, path, value)
        assert placed is not None, f"{kind} {path}: add its section to SECTIONS or ITEMS"
        spec, named = placed
        with pytest.raises(SpecError) as caught:
            parse(spec)
        # A bad list item may be reported on the list.
        accepted = {named, named.removesuffix("[0]")}
        assert accepted & {e.path for e in caught.value.errors}, (rule, value, str(caught.value))
        tried += 1
    if "default" in node:
        with_default = place(kind, path, node["default"])
        assert with_default is not None
        spec, _ = with_default
        explicit = parse(spec)
        *parents, name = path.split(".")
        section: Any = spec
        for part in parents[1:]:
            section = section[part]
        section.pop(name)
        assert parse(spec) == explicit, f"{path}: leaving it out is not its default {node['default']!r}"
        tried += 1
    assert tried, f"{kind} {path}: nothing to check"


def test_every_kind_has_fields_checked() -> None:
    counts = {kind: sum(1 for k, _, _ in CASES if k == kind) for kind in PARSERS}
    assert all(count >= 5 for count in counts.values()), counts
