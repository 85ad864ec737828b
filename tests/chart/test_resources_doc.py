"""docs/resources.md documents every field of every CRD, and is regenerated from crds/."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from tests.chart.chartutil import load_crds
from tests.helpers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "resources.md"


def leaf_and_branch_paths(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Every property path, independently of the generator's own walk."""
    for name, child in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        yield here
        yield from leaf_and_branch_paths(child, here)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from leaf_and_branch_paths(items, f"{path}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from leaf_and_branch_paths(extra, f"{path}.<key>")


def test_every_crd_field_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"\| `([^`]+)` \|", text))
    missing: list[str] = []
    count = 0
    for crd in load_crds():
        kind = crd["spec"]["names"]["kind"]
        assert f"## {kind}" in text
        (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
        schema = version["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            for path in leaf_and_branch_paths(schema["properties"][part], part):
                count += 1
                if path not in documented:
                    missing.append(f"{kind} {path}")
    assert count > 50
    assert not missing, f"fields missing from docs/resources.md (run scripts/gen-resources-doc.py): {missing}"


def test_resources_doc_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen-resources-doc.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
