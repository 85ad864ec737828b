"""Versioned output: next free number, atomic publish, races, and runs killed before publishing."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import signal
from pathlib import Path

from ascend_mlops.workloads.trainer import versions

CTX = multiprocessing.get_context("spawn")  # no TensorFlow/threads inherited from the test process


def _write_and_publish(root: Path, payload: str) -> str:
    stage = versions.Staging(root)
    (stage.path / "payload.txt").write_text(payload)
    return stage.publish()


def test_versions_count_up_and_never_reuse_a_number(tmp_path: Path) -> None:
    root = tmp_path / "out"
    assert _write_and_publish(root, "a") == "V001"
    assert _write_and_publish(root, "b") == "V002"
    (root / "notes").mkdir()  # unrelated entries are ignored
    (root / "V1x").mkdir()
    assert versions.existing_versions(root) == ["V001", "V002"]
    (root / "V001").rename(tmp_path / "gone")
    assert _write_and_publish(root, "c") == "V003"
    (root / "V999").mkdir()
    assert _write_and_publish(root, "d") == "V1000"
    assert (root / "V002" / "payload.txt").read_text() == "b"
    assert {p.name for p in root.iterdir()} == {"V002", "V003", "V999", "V1000", "V1x", "notes"}


def test_publish_never_replaces_an_existing_version(tmp_path: Path) -> None:
    root = tmp_path / "out"
    stage = versions.Staging(root)
    (stage.path / "f").write_text("new")
    # Another run publishes V001 after our staging began.
    (root / "V001").mkdir()
    (root / "V001" / "f").write_text("old")
    assert stage.publish() == "V002"
    assert (root / "V001" / "f").read_text() == "old"


def test_discarded_staging_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "out"
    stage = versions.Staging(root)
    (stage.path / "half").write_text("x")
    stage.discard()
    assert list(root.iterdir()) == []


def _stage_then_die(root: str, ready: multiprocessing.synchronize.Event) -> None:
    stage = versions.Staging(Path(root))
    (stage.path / "frozen_graph.pb").write_bytes(b"half written")
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def _stage_and_wait(root: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    stage = versions.Staging(Path(root))
    (stage.path / "f").write_text("live")
    ready.set()
    release.wait(60)
    stage.publish()


def test_killed_run_leaves_no_version_and_its_staging_is_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "out"
    ready = CTX.Event()
    proc = CTX.Process(target=_stage_then_die, args=(str(root), ready))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL and ready.is_set()
    leftovers = sorted(p.name for p in root.iterdir())
    assert not versions.existing_versions(root)
    assert any(n.endswith(versions.STAGE_SUFFIX) for n in leftovers)
    # The next run removes the abandoned staging directory and its lock.
    assert _write_and_publish(root, "next") == "V001"
    assert sorted(p.name for p in root.iterdir()) == ["V001"]


def test_a_live_runs_staging_is_not_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "out"
    ready, release = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_stage_and_wait, args=(str(root), ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        assert versions.clean_stale(root) == []
        assert _write_and_publish(root, "mine") == "V001"
        assert any(p.name.endswith(versions.STAGE_SUFFIX) for p in root.iterdir())
    finally:
        release.set()
        proc.join(60)
    assert proc.exitcode == 0
    assert versions.existing_versions(root) == ["V001", "V002"]
    assert (root / "V002" / "f").read_text() == "live"


def _race(root: str, start: multiprocessing.synchronize.Barrier, payload: str, results: multiprocessing.queues.Queue[tuple[str, str]]) -> None:
    stage = versions.Staging(Path(root))
    (stage.path / "payload.txt").write_text(payload)
    start.wait(60)
    results.put((payload, stage.publish()))


def test_concurrent_runs_get_distinct_versions(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    n = 6
    start = CTX.Barrier(n)
    results = CTX.Queue()
    procs = [CTX.Process(target=_race, args=(str(root), start, f"run{i}", results)) for i in range(n)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(got.values()) == [f"V00{i}" for i in range(1, n + 1)]
    for payload, version in got.items():
        assert (root / version / "payload.txt").read_text() == payload
    assert sorted(p.name for p in root.iterdir()) == sorted(got.values())
