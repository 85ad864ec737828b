"""`ascend-mlops predict` as a real subprocess on the trainer's model: layout, bad images, backends, shards, restart, S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.api import contract
from ascend_mlops.api.progress import parse_batch
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.helpers import make_dataset, run_cli, wait_for
from tests.s3server import S3Server
from tests.workloads.batch.conftest import BAD_IMAGES, read_manifest, write_bad_images

TASK = "task1"
SIM = {contract.ENV_SIMULATOR: "1"}


def predict(
    model: Path | str, backend: str, input_path: Path | str, output: Path | str, log: Path, *,
    shard: int = 0, shards: int = 1, batch_size: int | None = 4, env: dict[str, str] | None = None,
    labels: str | None = None, task: str = TASK,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    args = contract.predict_args(  # exactly the command line the operator builds
        model=str(model), backend=backend, input_path=str(input_path), output=str(output), shard=shard, shards=shards,
        task_id=task, labels=labels, batch_size=batch_size, top_k=3, termination_log=str(log),
    )
    result = run_cli(args, env=env, timeout=300)
    summary = json.loads(log.read_text()) if log.exists() else {}
    return result, summary


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _labels(manifest: list[dict[str, Any]]) -> dict[str, str]:
    found = {}
    for line in manifest:
        if line["result"] == "SUCCESSFUL":
            found[Path(line["source"]).name] = json.loads(Path(line["inference-loc"]).read_text())["predicted_label"]
    return found


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory, trained_model: Path, photo_folder: Path) -> dict[str, Any]:
    """The folder input on the frozen graph in two shards, run one after the other."""
    out = tmp_path_factory.mktemp("batch-out")
    first, s0 = predict(trained_model / contract.FROZEN_GRAPH_DIR, "tensorflow", photo_folder, out, out.parent / "log0", shards=2)
    _ok(first)
    manifest_after_first = (out / contract.batch_manifest_name(TASK)).exists()
    second, s1 = predict(trained_model / contract.FROZEN_GRAPH_DIR, "tensorflow", photo_folder, out, out.parent / "log1", shard=1, shards=2)
    _ok(second)
    return {"out": out, "summaries": [s0, s1], "stdout": [first.stdout, second.stdout], "early": manifest_after_first}


def test_folder_results_and_manifest_in_modelarts_layout(folder_run: dict[str, Any], photo_folder: Path) -> None:
    out: Path = folder_run["out"]
    manifest = read_manifest(out / contract.batch_manifest_name(TASK))
    sources = [line["source"] for line in manifest]
    images = sorted(str(p) for p in photo_folder.rglob("*") if p.suffix in contract.BATCH_IMAGE_SUFFIXES)
    assert sources == images  # every input once, in sorted order
    good = [line for line in manifest if line["result"] == "SUCCESSFUL"]
    assert len(good) == len(TINY_CLASSES) * 4
    for line in good:
        rel = Path(line["source"]).relative_to(photo_folder)
        loc = Path(line["inference-loc"])
        assert loc == out / contract.batch_results_dir(TASK) / f"{rel}{contract.BATCH_RESULT_SUFFIX}"
        answer = json.loads(loc.read_text())  # the online POST / answer
        assert set(answer) == {"predicted_label", "scores"}
        assert answer["predicted_label"] in TINY_CLASSES and answer["scores"][0][0] == answer["predicted_label"]
        assert len(answer["scores"]) == 3 and abs(sum(s for _, s in answer["scores"]) - 1.0) < 1e-4
    assert not list(out.rglob("*.tmp"))


def test_bad_images_are_failed_lines_and_the_run_succeeds(folder_run: dict[str, Any], photo_folder: Path) -> None:
    manifest = read_manifest(folder_run["out"] / contract.batch_manifest_name(TASK))
    failed = {str(Path(line["source"]).relative_to(photo_folder)): line for line in manifest if line["result"] == "FAILED"}
    assert set(failed) == set(BAD_IMAGES)
    for name, words in BAD_IMAGES.items():
        assert words in failed[name]["error_message"], failed[name]
        assert "inference-loc" not in failed[name]
    s0, s1 = folder_run["summaries"]
    assert s0["failed"] + s1["failed"] == len(BAD_IMAGES)
    assert s0["total"] + s1["total"] == len(manifest)


def test_two_shards_are_disjoint_and_the_manifest_waits_for_both(folder_run: dict[str, Any]) -> None:
    out: Path = folder_run["out"]
    assert folder_run["early"] is False  # after shard 0 alone: no manifest
    s0, s1 = folder_run["summaries"]
    assert "manifest" not in s0 and s1["manifest"] == contract.batch_manifest_name(TASK)
    assert (s0["shard"], s1["shard"]) == ("0/2", "1/2")
    shards = out / contract.batch_results_dir(TASK) / ".shards"
    lines0 = {line["source"] for line in read_manifest(shards / "0-of-2.jsonl")}
    lines1 = {line["source"] for line in read_manifest(shards / "1-of-2.jsonl")}
    assert lines0 and lines1 and not lines0 & lines1
    assert len(lines0) == s0["total"] and len(lines1) == s1["total"]
    everything = [line["source"] for line in read_manifest(out / contract.batch_manifest_name(TASK))]
    assert sorted(lines0 | lines1) == sorted(everything) and len(everything) == len(set(everything))
    # The progress line the operator parses, at the end of each shard.
    final = [parse_batch(line) for line in folder_run["stdout"][1].splitlines() if parse_batch(line)][-1]
    assert final is not None and final.done == final.total == s1["total"]


def test_manifest_input_and_both_backends_give_the_same_labels(
    tmp_path: Path, folder_run: dict[str, Any], converted_model: Path, photo_folder: Path
) -> None:
    # A .manifest: relative sources, an absolute one, one that does not exist, and a duplicate line.
    listing = tmp_path / "in" / "images.manifest"
    listing.parent.mkdir()
    (tmp_path / "in" / "more").symlink_to(photo_folder / "circle")
    rows = [{"source": "more/circle_000.jpg", "usage": "inference"}, {"source": "more/circle_001.jpg"}]
    rows += [{"source": str(p)} for p in sorted((photo_folder / "square").glob("*.jpg"))]
    rows += [{"source": "more/missing.jpg"}, {"source": "more/circle_000.jpg"}, {"source": str(photo_folder / "bad/notes.jpg")}]
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    out = tmp_path / "out"
    result, summary = predict(converted_model, "acl", listing, out, tmp_path / "log", env=SIM)
    _ok(result)
    manifest = read_manifest(out / contract.batch_manifest_name(TASK))
    assert [line["source"] for line in manifest] == sorted({r["source"] for r in rows})
    by_source = {line["source"]: line for line in manifest}
    assert by_source["more/missing.jpg"]["result"] == "FAILED" and "no such file" in by_source["more/missing.jpg"]["error_message"]
    assert by_source["more/circle_000.jpg"]["inference-loc"] == str(out / f"infer-result-{TASK}/more/circle_000.jpg_result.txt")
    assert summary["succeeded"] == 6 and summary["failed"] == 2
    # acl (the .om on the pyACL simulator) and tensorflow (the frozen graph) agree on every label.
    acl = _labels(manifest)
    tf = _labels(read_manifest(folder_run["out"] / contract.batch_manifest_name(TASK)))
    assert acl and all(tf[name] == label for name, label in acl.items())


def test_a_shard_killed_halfway_and_rerun_produces_each_result_once(tmp_path: Path, trained_model: Path) -> None:
    inputs = make_dataset(tmp_path / "in", classes=TINY_CLASSES, per_class=100, size=TINY_IMAGE_SIZE, seed=3)
    total = len(TINY_CLASSES) * 100
    (inputs / "zz").mkdir()
    (inputs / "zz" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    results = out / contract.batch_results_dir(TASK)
    args = contract.predict_args(
        model=str(trained_model / contract.FROZEN_GRAPH_DIR), backend="tensorflow", input_path=str(inputs),
        output=str(out), shard=0, shards=1, task_id=TASK, batch_size=1, termination_log=str(tmp_path / "log1"),
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ascend_mlops", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: proc.poll() is not None or len(list(results.rglob("*_result.txt"))) >= 30, timeout=120,
                 interval=0.02, what="the first results")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in results.rglob("*_result.txt")}
    assert 30 <= len(before) < total, "the kill came too late to test a restart"
    assert not (out / contract.batch_manifest_name(TASK)).exists()
    for p in before:
        json.loads(p.read_text())  # every result that exists is complete

    # What a kill in the middle of a write leaves (the kill above may or may not have hit one): the rerun removes it.
    unfinished = next(p for p in sorted(inputs.rglob("*.jpg")) if not (results / p.parent.name / f"{p.name}_result.txt").exists())
    (results / unfinished.parent.name).mkdir(parents=True, exist_ok=True)
    (results / unfinished.parent.name / f".{unfinished.name}_result.txt.99999-1.tmp").write_bytes(b'{"predicted')
    time.sleep(0.05)
    result, summary = predict(trained_model / contract.FROZEN_GRAPH_DIR, "tensorflow", inputs, out, tmp_path / "log2", batch_size=8)
    _ok(result)
    # Nothing done twice: the first attempt's results are untouched (same inode, same mtime) ...
    for p, stamp in before.items():
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    assert summary["skipped"] >= len(before)
    assert summary["succeeded"] == total and summary["failed"] == 1 and summary["total"] == total + 1
    # ... and nothing lost: every input exactly once in the manifest, one result file per good input.
    manifest = read_manifest(out / contract.batch_manifest_name(TASK))
    assert len(manifest) == total + 1 and len({line["source"] for line in manifest}) == total + 1
    assert len(list(results.rglob("*_result.txt"))) == total
    assert not list(out.rglob("*.tmp"))


def test_object_storage_input_and_output(tmp_path: Path, s3: S3Server, trained_model: Path) -> None:
    bucket = s3.make_bucket("batch-e2e")
    client = s3.client()
    local = make_dataset(tmp_path / "in", classes=TINY_CLASSES, per_class=2, size=TINY_IMAGE_SIZE, seed=5)
    write_bad_images(local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=f"photos/{path.relative_to(local).as_posix()}", Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key="photos/readme.txt", Body=b"not an input")
    labels = f"s3://{bucket}/model/labels.txt"
    client.put_object(Bucket=bucket, Key="model/labels.txt", Body=(trained_model / contract.LABELS_FILE).read_bytes())
    env = s3.env()
    result, summary = predict(
        trained_model / contract.FROZEN_GRAPH_DIR, "tensorflow", f"s3://{bucket}/photos", f"obs://{bucket}/out", tmp_path / "log",
        env=env, labels=labels, shards=1,
    )
    _ok(result)
    assert summary["manifest"] == contract.batch_manifest_name(TASK)
    assert summary["succeeded"] == len(TINY_CLASSES) * 2 and summary["failed"] == len(BAD_IMAGES)
    body = client.get_object(Bucket=bucket, Key=f"out/{contract.batch_manifest_name(TASK)}")["Body"].read().decode()
    manifest = [json.loads(line) for line in body.splitlines()]
    assert len(manifest) == len(TINY_CLASSES) * 2 + len(BAD_IMAGES)
    for line in manifest:
        assert line["source"].startswith(f"s3://{bucket}/photos/")
        if line["result"] == "SUCCESSFUL":
            loc = line["inference-loc"]
            assert loc.startswith(f"obs://{bucket}/out/infer-result-{TASK}/") and loc.endswith("_result.txt")
            answer = json.loads(client.get_object(Bucket=bucket, Key=loc.split("/", 3)[3])["Body"].read())
            assert answer["predicted_label"] in TINY_CLASSES
    # A rerun of the finished shard does nothing again and rewrites the same manifest.
    again, summary2 = predict(
        trained_model / contract.FROZEN_GRAPH_DIR, "tensorflow", f"s3://{bucket}/photos", f"obs://{bucket}/out", tmp_path / "log2",
        env=env, labels=labels,
    )
    _ok(again)
    assert summary2["skipped"] == summary2["total"] == len(manifest)
    assert client.get_object(Bucket=bucket, Key=f"out/{contract.batch_manifest_name(TASK)}")["Body"].read().decode() == body


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"input_path": "missing-folder"}, contract.EXIT_INVALID_DATASET),
        ({"input_path": "EMPTY"}, contract.EXIT_INVALID_DATASET),
        ({"shard": 2, "shards": 2}, contract.EXIT_INVALID_PARAMETERS),
        ({"batch_size": 0}, contract.EXIT_INVALID_PARAMETERS),
        ({"model": "BADMODEL"}, contract.EXIT_INVALID_MODEL),
        ({"backend": "acl", "model": "OM"}, contract.EXIT_TOOLKIT_MISSING),
    ],
)
def test_errors_are_exit_codes_with_a_summary(
    tmp_path: Path, photo_folder: Path, converted_model: Path, change: dict[str, Any], code: int
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pb").write_bytes(b"not a graph")
    values: dict[str, Any] = {
        "model": str(converted_model), "backend": "tensorflow", "input_path": str(photo_folder / "circle"),
        "output": str(tmp_path / "out"), "shard": 0, "shards": 1, "task_id": TASK, "batch_size": 4,
        "termination_log": str(tmp_path / "log"),
    }
    values.update(change)
    named = {"EMPTY": str(tmp_path / "empty"), "missing-folder": str(tmp_path / "nope"),
             "BADMODEL": str(tmp_path / "bad.pb"), "OM": str(converted_model)}
    values["input_path"] = named.get(values["input_path"], values["input_path"])
    values["model"] = named.get(values["model"], values["model"])
    env = {contract.ENV_SIMULATOR: "0"}
    result = run_cli(contract.predict_args(**values), env=env, timeout=120)
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "log").read_text())
    assert summary["exitCode"] == code and summary["error"]
