"""What a real API server does with a CRD's structural schema: default, prune, validate.

Applied on every create, update and patch of a custom resource, in the same order
as Kubernetes (defaults, then pruning of unknown fields, then validation), so that
an operator that writes a status field its CRD does not declare sees that field
dropped here, as it would be on a cluster. CEL rules (`x-kubernetes-validations`)
and `format` are not checked.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

Schema = Mapping[str, Any]

# Kept at the top of every object whatever the schema says.
_TOP_LEVEL_KEEP = ("apiVersion", "kind", "metadata")


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill absent fields that have a `default`, recursively, where their parent exists."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for name in list(value):
                if name not in properties:
                    value[name] = apply_defaults(value[name], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def prune(value: Any, schema: Schema, top_level: bool = False) -> Any:
    """Drop fields the schema does not declare (unless it preserves unknown fields)."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            return value
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        result: dict[str, Any] = {}
        for name, sub_value in value.items():
            if name in properties:
                result[name] = prune(sub_value, properties[name])
            elif isinstance(additional, Mapping):
                result[name] = prune(sub_value, additional)
            elif additional is True or preserve or ((top_level or embedded) and name in _TOP_LEVEL_KEEP):
                result[name] = sub_value
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune(item, schema["items"]) for item in value]
    return value


def _type_ok(value: Any, expected: str, schema: Schema) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    match expected:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
    return True


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, dict | list) else json.dumps(value)[:80]


def validate(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Errors in the API server's wording: `spec.workers: Invalid value: 0: ... >= 1`."""
    errors: list[str] = []
    where = path or "<root>"
    expected = schema.get("type")
    if expected and not _type_ok(value, expected, schema):
        if value is None:
            errors.append(f"{where}: Invalid value: \"null\": {where} in body must be of type {expected}: \"null\"")
        else:
            errors.append(
                f"{where}: Invalid value: {_show(value)}: {where} in body must be of type {expected}: "
                f"\"{type(value).__name__}\""
            )
        return errors
    if value is None:
        return errors
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        errors.append(f"{where}: Unsupported value: {_show(value)}: supported values: {supported}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            low = schema["minimum"]
            if value < low or (schema.get("exclusiveMinimum") is True and value == low):
                errors.append(
                    f"{where}: Invalid value: {_show(value)}: {where} in body should be greater than "
                    f"{'' if schema.get('exclusiveMinimum') is True else 'or equal to '}{low}"
                )
        if "maximum" in schema:
            high = schema["maximum"]
            if value > high or (schema.get("exclusiveMaximum") is True and value == high):
                errors.append(
                    f"{where}: Invalid value: {_show(value)}: {where} in body should be less than "
                    f"{'' if schema.get('exclusiveMaximum') is True else 'or equal to '}{high}"
                )
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                f"{where}: Invalid value: {_show(value)}: {where} in body should be at least "
                f"{schema['minLength']} chars long"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                f"{where}: Invalid value: {_show(value)}: {where} in body should match '{schema['pattern']}'"
            )
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: Invalid value: {len(value)}: {where} in body should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                errors += validate(item, items, f"{path}[{index}]")
    if isinstance(value, dict):
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path + '.' if path else ''}{name}: Required value")
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for name, sub_value in value.items():
            sub_path = f"{path}.{name}" if path else name
            if name in properties:
                errors += validate(sub_value, properties[name], sub_path)
            elif isinstance(additional, Mapping):
                errors += validate(sub_value, additional, sub_path)
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errors.append(f"{where}: Invalid value: {len(value)}: {where} in body should have at least {schema['minProperties']} properties")
    for option in ("anyOf", "oneOf"):
        choices = schema.get(option)
        if isinstance(choices, list) and choices and value is not None:
            passing = [choice for choice in choices if not validate(value, choice, path)]
            if option == "anyOf" and not passing:
                errors.append(f"{where}: Invalid value: {_show(value)}: {where} in body must match at least one schema in anyOf")
            if option == "oneOf" and len(passing) != 1:
                errors.append(f"{where}: Invalid value: {_show(value)}: {where} in body must match exactly one schema in oneOf")
    return errors


def admit(obj: dict[str, Any], schema: Schema | None) -> tuple[dict[str, Any], list[str]]:
    """Default, prune and validate a whole custom resource; returns (object, errors)."""
    if not schema:
        return obj, []
    result = apply_defaults(copy.deepcopy(obj), schema)
    result = prune(result, schema, top_level=True)
    body = {k: v for k, v in result.items() if k not in _TOP_LEVEL_KEEP}
    body_schema = dict(schema)
    body_schema["properties"] = {
        k: v for k, v in (schema.get("properties") or {}).items() if k not in _TOP_LEVEL_KEEP
    }
    body_schema["required"] = [r for r in schema.get("required") or [] if r not in _TOP_LEVEL_KEEP]
    return result, validate(body, body_schema)
