"""Two workers on loopback with TF_CONFIG (MultiWorkerMirroredStrategy): they train in step,
and only the chief writes the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from ascend_mlops.workloads.trainer import progress

from .conftest import free_port, start_cli, summary, train_args


@pytest.mark.slow
def test_two_workers_train_together_and_only_the_chief_writes(tmp_path: Path, tiny_dataset: Path) -> None:
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    output = tmp_path / "out"  # shared by both, as a PVC would be
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        args = train_args(tiny_dataset, output, tmp_path / f"log{index}", "mobilenet_v1", "epochs=2")
        procs.append(start_cli(args, tmp_path / f"worker{index}.out", env={contract.ENV_TF_CONFIG: tf_config}))
    try:
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [(tmp_path / f"worker{i}.out").read_text(errors="replace") for i in range(2)]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "worker 0 of 2 workers (chief)" in outputs[0]
    assert "worker 1 of 2 workers (non-chief)" in outputs[1]

    chief, other = summary(tmp_path / "log0"), summary(tmp_path / "log1")
    assert chief[contract.SUMMARY_VERSION] == "V001"
    assert contract.SUMMARY_VERSION not in other and contract.SUMMARY_ARTIFACTS not in other
    assert sorted(p.name for p in output.iterdir()) == ["V001"]
    assert (output / "V001" / contract.FROZEN_GRAPH_DIR / contract.FROZEN_GRAPH_FILE).is_file()

    # Gradients are all-reduced: both workers see the same global loss at every epoch.
    def losses(text: str) -> list[float]:
        parsed = [progress.parse(line) for line in text.splitlines()]
        return [p.loss for p in parsed if p is not None]

    assert len(losses(outputs[0])) == 2
    assert losses(outputs[0]) == losses(outputs[1])
