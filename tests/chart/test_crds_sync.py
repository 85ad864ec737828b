"""crds/ is the single source of the CRDs; the chart's copy and its rendering must match it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from ascend_mlops.api import constants
from tests.chart.chartutil import CHART_CRDS, CRDS, crd_files, load_crds, of_kind, render
from tests.helpers import REPO_ROOT

SYNC = REPO_ROOT / "scripts" / "sync-crds.sh"


def test_crds_define_the_kinds_of_the_shared_api() -> None:
    files = crd_files()
    assert len(files) == len(constants.PLURALS), files
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        # The chart renders each file with fromYaml: one document per file.
        assert len(docs) == 1, f"{path.name} holds {len(docs)} documents; keep one CRD per file"
    by_kind = {crd["spec"]["names"]["kind"]: crd for crd in load_crds()}
    assert set(by_kind) == set(constants.PLURALS)
    for kind, crd in by_kind.items():
        names = crd["spec"]["names"]
        assert crd["spec"]["group"] == constants.GROUP
        assert names["plural"] == constants.PLURALS[kind]
        assert crd["metadata"]["name"] == f"{constants.PLURALS[kind]}.{constants.GROUP}"
        assert names["shortNames"] == constants.SHORT_NAMES[kind]
        assert constants.CATEGORY in names["categories"]
        (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
        assert version["name"] == constants.VERSION
        # Status is a subresource: users' `kubectl apply` never overwrites it.
        assert version["subresources"]["status"] == {}


def test_chart_copy_is_identical_to_crds() -> None:
    source = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    copy = {p.name: p.read_bytes() for p in CHART_CRDS.glob("*.yaml")}
    assert copy == source, "charts/ascend-mlops/files/crds drifted from crds/: run scripts/sync-crds.sh"
    result = subprocess.run([str(SYNC), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_sync_check_fails_on_drift(tmp_path: Path) -> None:
    # A copy of the relevant tree, so the real chart is never touched.
    (tmp_path / "scripts").mkdir()
    shutil.copy(SYNC, tmp_path / "scripts" / SYNC.name)
    shutil.copytree(CRDS, tmp_path / "crds")
    copy = tmp_path / CHART_CRDS.relative_to(REPO_ROOT)
    shutil.copytree(CRDS, copy)  # an in-sync starting point, whatever the real chart holds
    script = tmp_path / "scripts" / SYNC.name
    assert subprocess.run([str(script), "--check"], capture_output=True, check=False).returncode == 0

    victim = sorted(copy.glob("*.yaml"))[0]
    victim.write_text(victim.read_text(encoding="utf-8").replace("served: true", "served: false"), encoding="utf-8")
    drifted = subprocess.run([str(script), "--check"], capture_output=True, text=True, check=False)
    assert drifted.returncode == 1
    assert victim.name in drifted.stderr and "run scripts/sync-crds.sh" in drifted.stderr

    # The script itself repairs the drift, and removes copies with no source.
    (copy / "stale.yaml").write_text("kind: Stale\n", encoding="utf-8")
    assert subprocess.run([str(script)], capture_output=True, check=False).returncode == 0
    assert subprocess.run([str(script), "--check"], capture_output=True, check=False).returncode == 0
    assert not (copy / "stale.yaml").exists()


def test_rendered_crds_equal_the_source_apart_from_labels_and_keep_policy() -> None:
    source = {crd["metadata"]["name"]: crd for crd in load_crds()}
    rendered = {crd["metadata"]["name"]: crd for crd in of_kind(render(), "CustomResourceDefinition")}
    assert rendered.keys() == source.keys()
    for name, crd in rendered.items():
        original = source[name]
        assert crd["spec"] == original["spec"], name
        assert crd["apiVersion"] == original["apiVersion"]
        labels = crd["metadata"]["labels"]
        assert (original["metadata"].get("labels") or {}).items() <= labels.items()
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        # `helm uninstall` must not delete the CRDs (and with them every resource of their kinds).
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    no_keep = of_kind(render(sets=("crds.keep=false",)), "CustomResourceDefinition")
    assert all("helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {}) for c in no_keep)
    assert not of_kind(render(sets=("crds.enabled=false",)), "CustomResourceDefinition")
