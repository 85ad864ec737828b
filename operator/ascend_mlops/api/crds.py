"""The CustomResourceDefinitions as data: the one place where the resources' fields, defaults,
bounds, enums and descriptions are written.

`crds/` at the top of a checkout (an editable install reads it in place) or
`ascend_mlops/crds/` in a wheel (setup.py copies it there at build time). The
API server applies the schema at `kubectl apply`; the operator reads the same
schema to parse specs (api/specs.py), so that an object admitted by an older
CRD, or by an API server that skipped validation, is judged by the same rules.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

_INDEX: Final = re.compile(r"\[\d+\]")


class CRDsNotFound(RuntimeError):
    pass


def crd_dirs() -> tuple[Path, ...]:
    """The folder of the product's CRDs: `crds/` in the package (a wheel) or above it (a checkout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "crds"
        if candidate.is_dir() and any(candidate.glob("*.y*ml")):
            return (candidate,)
    return ()


@functools.cache
def _by_kind() -> dict[str, dict[str, Any]]:
    dirs = crd_dirs()
    if not dirs:
        raise CRDsNotFound(
            "the CustomResourceDefinitions were not found (a crds/ folder in or above the ascend_mlops package); "
            "install the package from a wheel built from the repository, or run from a checkout"
        )
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(dirs[0].glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                found[doc["spec"]["names"]["kind"]] = doc
    return found


def kinds() -> tuple[str, ...]:
    return tuple(_by_kind())


@functools.cache
def spec_schema(kind: str) -> Mapping[str, Any]:
    """The openAPIV3Schema of `kind`'s spec, in the version the API server stores."""
    crd = _by_kind()[kind]
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: Mapping[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def node(kind: str, path: str) -> Mapping[str, Any]:
    """The schema of the field at `path` ("spec.canary.analysis.maxErrorRate", "spec.env[0].name");
    {} for a field the schema does not describe."""
    parts = _INDEX.sub(".[]", path).split(".")
    if parts[0] != "spec":
        return {}
    current: Mapping[str, Any] = spec_schema(kind)
    for part in parts[1:]:
        if part == "[]":
            current = current.get("items") or {}
        else:
            current = (current.get("properties") or {}).get(part) or {}
        if not current:
            return {}
    return current


def default(kind: str, path: str) -> Any:
    """The schema's default of a field (KeyError if it has none: a caller relies on it)."""
    return node(kind, path)["default"]


def enum(kind: str, path: str) -> tuple[Any, ...]:
    return tuple(node(kind, path)["enum"])
