"""Rendering the Helm chart with the real `helm` binary (installed by .ci/checks/tools.sh)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO_ROOT

CHART = REPO_ROOT / "charts" / "ascend-mlops"
CI_VALUES = CHART / "ci"
CRDS = REPO_ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"
NAMESPACE = "ascend-mlops-system"
RELEASE = "ascend-mlops"


def helm_binary() -> str | None:
    local = REPO_ROOT / ".ci" / "tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


def require_helm() -> str:
    helm = helm_binary()
    if helm is None:
        pytest.skip("helm is not installed: run .ci/checks/tools.sh helm")
    return helm


@functools.cache
def _render(values_files: tuple[str, ...], sets: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    helm = require_helm()
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values_files:
        args += ["--values", path]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(*values_files: Path | str, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """`helm template` with these values files (relative to the chart's ci/ when bare names)."""
    paths = tuple(str(p if Path(p).is_absolute() else CI_VALUES / p) for p in values_files)
    return [dict(doc) for doc in _render(paths, sets)]


def render_failure(*sets: str) -> str:
    """Render with `--set` values that must fail; returns helm's error output."""
    helm = require_helm()
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0, f"helm template unexpectedly succeeded with {sets}"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def crd_files() -> list[Path]:
    return sorted(CRDS.glob("*.yaml"))


def load_crds() -> Iterator[dict[str, Any]]:
    for path in crd_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield doc
