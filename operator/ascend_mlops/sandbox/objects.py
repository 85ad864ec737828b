"""Object-level Kubernetes semantics the sandbox API applies: patches, selectors, JSONPath.

Pure functions on plain JSON dicts, shared by the API server (which applies
patches and filters lists) and the kubelet (which matches node selectors).
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Mapping
from typing import Any


class PatchError(ValueError):
    """A patch that cannot be applied; `status` is the HTTP code Kubernetes would answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------
def now_rfc3339() -> str:
    """A metav1.Time: seconds precision, UTC, 'Z' suffix."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_duration(since: str | None) -> str:
    """kubectl's AGE column: 5s, 3m12s, 2h5m, 4d."""
    if not since:
        return "<unknown>"
    try:
        seconds = int((datetime.datetime.now(datetime.UTC) - parse_time(since)).total_seconds())
    except ValueError:
        return "<invalid>"
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 8 else f"{hours}h"
    return f"{hours // 24}d"


# ---------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists that a strategic merge patch merges by a key instead of replacing (the common ones).
_SMP_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "conditions": "type",
    "ownerReferences": "uid",
    "tolerations": "key",
    "imagePullSecrets": "name",
}


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge patch for the usual fields: like a merge patch, but keyed lists merge.

    Only the merge keys of the common core fields are known (no OpenAPI); any other list
    is replaced, as in a JSON merge patch. `$patch: delete|replace` directives are honoured.
    """
    if isinstance(patch, Mapping):
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if directive == "delete":
            return None
        result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                merged = strategic_merge_patch(result.get(key), value, key)
                if merged is None:
                    result.pop(key, None)
                else:
                    result[key] = merged
        return result
    if isinstance(patch, list) and field in _SMP_MERGE_KEYS and isinstance(target, list):
        key = _SMP_MERGE_KEYS[field]
        merged_list = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, Mapping) or key not in item:
                return copy.deepcopy(patch)
            index = next(
                (i for i, old in enumerate(merged_list) if isinstance(old, Mapping) and old.get(key) == item[key]),
                None,
            )
            if item.get("$patch") == "delete":
                if index is not None:
                    del merged_list[index]
            elif index is None:
                merged_list.append({k: v for k, v in item.items() if k != "$patch"})
            else:
                merged_list[index] = strategic_merge_patch(merged_list[index], item, "")
        return merged_list
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON patch path {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise PatchError(f"JSON patch path {path!r} does not exist")
            doc = doc[part]
        elif isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"JSON patch path {path!r} has a bad list index {part!r}") from None
        else:
            raise PatchError(f"JSON patch path {path!r} goes through a scalar")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); a failed test raises 422."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations", status=400)
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
            raise PatchError(f"a JSON patch operation needs 'op' and 'path': {op!r}", status=400)
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind == "test":
            actual = _resolve(doc, parts, path) if parts else doc
            if actual != op.get("value"):
                raise PatchError(f"the JSON patch test at {path!r} failed: {actual!r} != {op.get('value')!r}")
            continue
        if kind in ("move", "copy"):
            source_parts = _pointer(op.get("from", ""))
            value = copy.deepcopy(_resolve(doc, source_parts, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, source_parts, op.get("from", ""))
            doc = _add(doc, parts, value, path)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            doc = _remove(doc, parts, path)
        elif kind == "replace":
            _resolve(doc, parts, path)  # must exist
            doc = _remove(doc, parts, path)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}", status=400)
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                index = int(last)
            except ValueError:
                raise PatchError(f"JSON patch path {path!r} has a bad list index {last!r}") from None
            if not 0 <= index <= len(parent):
                raise PatchError(f"JSON patch path {path!r} is out of range")
            parent.insert(index, value)
    else:
        raise PatchError(f"JSON patch path {path!r} goes through a scalar")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        return None
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"JSON patch path {path!r} does not exist")
        del parent[last]
    elif isinstance(parent, list):
        try:
            del parent[int(last)]
        except (ValueError, IndexError):
            raise PatchError(f"JSON patch path {path!r} has a bad list index {last!r}") from None
    else:
        raise PatchError(f"JSON patch path {path!r} goes through a scalar")
    return doc


# ---------------------------------------------------------------------------
# Label and field selectors
# ---------------------------------------------------------------------------
_SET_EXPR = re.compile(r"^\s*(!?)\s*([^\s!=<>(),]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


class SelectorError(ValueError):
    pass


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def label_selector_matches(selector: str, labels: Mapping[str, str] | None) -> bool:
    """A label selector string (`a=b,c!=d,e in (f,g),!h,i`) against a label map."""
    labels = labels or {}
    for requirement in _split_selector(selector):
        for op in ("!=", "==", "="):
            if op in requirement and "(" not in requirement:
                key, _, value = requirement.partition(op)
                key, value = key.strip(), value.strip()
                if op == "!=":
                    if labels.get(key) == value:
                        return False
                elif labels.get(key) != value:
                    return False
                break
        else:
            match = _SET_EXPR.match(requirement)
            if not match:
                raise SelectorError(f"unable to parse requirement {requirement!r}")
            negated, key, operator, values_text = match.groups()
            if operator:
                values = {v.strip() for v in values_text.split(",") if v.strip()}
                present = key in labels and labels[key] in values
                if (operator == "in") != present:
                    return False
            elif bool(negated) == (key in labels):
                return False
    return True


def match_labels_selector(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions) against a label map."""
    if not selector:
        return True
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """`metadata.name=x,status.phase!=Running`: dotted paths compared as strings."""
    for requirement in _split_selector(selector):
        negate = "!=" in requirement
        key, _, value = requirement.partition("!=" if negate else ("==" if "==" in requirement else "="))
        actual = get_path(obj, key.strip())
        text = "" if actual is None else str(actual)
        if (text == value.strip()) == negate:
            return False
    return True


# ---------------------------------------------------------------------------
# JSONPath: the subset printer columns use
# ---------------------------------------------------------------------------
_JSONPATH_TOKEN = re.compile(
    r"""\.([A-Za-z0-9_\-]+)                                  # .field
      | \[(\d+|\*)\]                                         # [0] or [*]
      | \[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["']([^"']*)["']\)\]  # [?(@.type=="Ready")]
      | \[["']([^"']+)["']\]                                 # ['field.with.dots']
    """,
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate a printer-column JSONPath (`.status.conditions[?(@.type=="Ready")].status`)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current: list[Any] = [obj]
    position = 0
    while position < len(path):
        match = _JSONPATH_TOKEN.match(path, position)
        if not match:
            return []
        position = match.end()
        field, index, filter_key, filter_value, quoted = match.groups()
        following: list[Any] = []
        for item in current:
            if field is not None or quoted is not None:
                name = field if field is not None else quoted
                if isinstance(item, Mapping) and name in item:
                    following.append(item[name])
            elif index is not None:
                if isinstance(item, list):
                    if index == "*":
                        following.extend(item)
                    elif int(index) < len(item):
                        following.append(item[int(index)])
            else:
                if isinstance(item, list):
                    following.extend(
                        element
                        for element in item
                        if str(get_path(element, filter_key)) == filter_value
                    )
        current = following
    return current
