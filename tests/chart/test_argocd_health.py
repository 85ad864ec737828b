"""The Argo CD health checks in docs/argocd: one per kind, sample tests pass, config patch in sync."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_mlops.api import constants
from ascend_mlops.api.constants import ConditionType, Reason
from tests.helpers import REPO_ROOT

ARGOCD = REPO_ROOT / "docs" / "argocd"
SCRIPTS = REPO_ROOT / "scripts"


def test_one_health_check_with_tests_per_kind() -> None:
    for kind in constants.PLURALS:
        folder = ARGOCD / constants.GROUP / kind
        assert (folder / "health.lua").is_file(), kind
        assert (folder / "health_test.yaml").is_file(), kind
        assert len(list((folder / "testdata").glob("*.yaml"))) >= 5, kind


def test_health_checks_name_only_real_condition_types_and_reasons() -> None:
    known_types = {v for k, v in vars(ConditionType).items() if k.isupper()}
    known_reasons = {v for k, v in vars(Reason).items() if k.isupper()}
    for script in ARGOCD.glob("*/*/health.lua"):
        text = script.read_text(encoding="utf-8")
        for used in re.findall(r'condition\("(\w+)"\)', text):
            assert used in known_types, f"{script}: condition type {used} is not in api/constants.py"
        for used in re.findall(r"^\s+(\w+) = true,$", text, flags=re.M):
            assert used in known_reasons, f"{script}: reason {used} is not in api/constants.py"


def test_sample_resources_get_their_expected_health(tmp_path: Path) -> None:
    lua = shutil.which("lua5.1")
    if lua is None:
        pytest.skip("lua5.1 is not installed: run .ci/checks/tools.sh lua5.1")
    cases = tmp_path / "cases.lua"
    generated = subprocess.run(
        [sys.executable, str(SCRIPTS / "argocd-health-cases.py"), str(ARGOCD)],
        capture_output=True, text=True, check=False,
    )
    assert generated.returncode == 0, generated.stderr
    cases.write_text(generated.stdout, encoding="utf-8")
    result = subprocess.run(
        [lua, str(SCRIPTS / "argocd-health-test.lua"), str(cases)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = int(re.search(r"^(\d+) passed, 0 failed$", result.stdout, flags=re.M).group(1))  # type: ignore[union-attr]
    assert passed >= 20


def test_the_runner_fails_a_wrong_expectation(tmp_path: Path) -> None:
    lua = shutil.which("lua5.1")
    if lua is None:
        pytest.skip("lua5.1 is not installed: run .ci/checks/tools.sh lua5.1")
    script = ARGOCD / constants.GROUP / constants.TRAINING_JOB / "health.lua"
    cases = tmp_path / "cases.lua"
    cases.write_text(
        f'return {{ {{name = "no status", script = "{script}", input = {{metadata = {{name = "x"}}}},'
        ' expected = {status = "Healthy"}} }',
        encoding="utf-8",
    )
    result = subprocess.run([lua, str(SCRIPTS / "argocd-health-test.lua"), str(cases)], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "FAIL  no status: status Progressing, want Healthy" in result.stdout


def test_argocd_config_patch_is_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "sync-argocd-health.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
