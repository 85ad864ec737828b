"""Finding the real kubectl for the end-to-end test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO_ROOT

TOOLS_BIN = REPO_ROOT / ".ci" / "tools" / "bin"
TOOLS_SCRIPT = REPO_ROOT / ".ci" / "checks" / "tools.sh"


def find_kubectl(install: bool = True) -> tuple[Path | None, str]:
    """(kubectl, "") or (None, why not). $KUBECTL, .ci/tools/bin, PATH, else .ci/checks/tools.sh installs it."""
    candidates = [os.environ.get("KUBECTL"), str(TOOLS_BIN / "kubectl"), shutil.which("kubectl")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate), ""
    if not install:
        return None, "kubectl is not in $KUBECTL, .ci/tools/bin or PATH"
    if not TOOLS_SCRIPT.is_file():
        return None, f"kubectl is not installed and {TOOLS_SCRIPT} is missing"
    try:
        result = subprocess.run(["bash", str(TOOLS_SCRIPT), "kubectl"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{TOOLS_SCRIPT} kubectl failed: {e}"
    if (TOOLS_BIN / "kubectl").is_file():
        return TOOLS_BIN / "kubectl", ""
    return None, f"{TOOLS_SCRIPT} kubectl did not install it: {(result.stdout + result.stderr)[-800:]}"
