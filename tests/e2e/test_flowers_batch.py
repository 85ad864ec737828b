"""End to end: `ascend-mlops sandbox run examples/flowers --batch` on 500 of the real flower photos.

The real operator, trainer, converter (ATC simulator) and the BatchPrediction's
two `ascend-mlops predict` shards (pyACL simulator) run the flow; the batch
classifies every photo of the dataset folder, and the test checks the
ModelArts layout it left behind, its counts, and the accuracy against the
class folders, computed here from the result files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import contract
from tests.helpers import FLOWERS_DIR, REPO_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not FLOWERS_DIR.is_dir(), reason=f"the flower photos are not at {FLOWERS_DIR}"),
]

PER_CLASS = 100  # 5 classes: 500 photos
BATCH = "flowers-batch"
OUTPUT = Path("data/pvc/flowers-data/batch/flowers-batch")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("sandbox-batch")
    command = [
        sys.executable, "-m", "ascend_mlops", "sandbox", "run", "examples/flowers", "--quick", "--batch",
        "--data", str(FLOWERS_DIR), "--max-per-class", str(PER_CLASS), "--exit-after-predict",
        "--dir", str(root), "--timeout", "900",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=1100,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    print(f"\nsandbox run --batch took {time.monotonic() - started:.0f}s:\n{output[-3000:]}")
    return root, output, json.loads((root / "run.json").read_text())


def test_the_batch_classified_every_photo_once_in_modelarts_layout(run: tuple[Path, str, dict[str, Any]]) -> None:
    root, _, _ = run
    output = root / OUTPUT
    manifest = output / contract.batch_manifest_name(BATCH)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == 5 * PER_CLASS
    assert len({line["source"] for line in lines}) == len(lines)
    assert {line["result"] for line in lines} == {"SUCCESSFUL"}
    results = output / contract.batch_results_dir(BATCH)
    files = sorted(results.rglob(f"*{contract.BATCH_RESULT_SUFFIX}"))
    assert len(files) == len(lines)
    # Both shards of parallelism 2 ran and left their part.
    shards = sorted(p.name for p in (results / ".shards").iterdir())
    assert shards == ["0-of-2.jsonl", "1-of-2.jsonl"]


def test_counts_and_accuracy_against_the_folder_names(run: tuple[Path, str, dict[str, Any]]) -> None:
    root, output, report = run
    results = root / OUTPUT / contract.batch_results_dir(BATCH)
    classes = sorted(p.name for p in FLOWERS_DIR.iterdir() if p.is_dir())
    correct = 0
    per_class = dict.fromkeys(classes, 0)
    files = list(results.rglob(f"*{contract.BATCH_RESULT_SUFFIX}"))
    for path in files:
        truth = path.relative_to(results).parts[0]
        answer = json.loads(path.read_text())
        assert answer["predicted_label"] in classes
        assert {label for label, _ in answer["scores"]} <= set(classes)
        per_class[truth] += 1
        correct += answer["predicted_label"] == truth
    assert per_class == dict.fromkeys(classes, PER_CLASS)
    accuracy = correct / len(files)
    batch = report["batch"]
    assert batch["inputs"] == batch["succeeded"] == 5 * PER_CLASS and batch["failed"] == 0
    assert batch["accuracy"] == pytest.approx(accuracy, abs=1e-4) and batch["compared"] == len(files)
    assert f"accuracy {accuracy:.4f} against the folder names" in output
    # A trained model, not chance (0.2): 0.39 measured with the quick profile (two epochs).
    assert accuracy > 0.25, accuracy
    status = report["resources"][f"BatchPrediction/{BATCH}"]
    assert status["phase"] == "Succeeded"
    assert status["progress"]["total"] == status["progress"]["succeeded"] == 5 * PER_CLASS
