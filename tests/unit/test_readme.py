"""README.md carries the reference docs verbatim and the two commands a new user pastes."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_readme_reference_sections_match_docs() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "sync-readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_readme_has_the_sandbox_and_test_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "ascend-mlops sandbox run examples/flowers" in readme
    assert "bash .ci/run" in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # .ci/run must run the test command the README names.
    assert "python -m pytest" in readme and "python -m pytest" in ci
