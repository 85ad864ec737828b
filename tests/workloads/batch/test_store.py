"""The local batch output: temporaries a killed writer leaves are never results, and a rerun removes only its own."""

from __future__ import annotations

from pathlib import Path

from ascend_mlops.workloads.batch.store import LocalOutput


def test_interrupted_writes_are_not_listed_and_only_the_callers_are_discarded(tmp_path: Path) -> None:
    out = LocalOutput(tmp_path)
    out.prepare()
    out.write("r/a/one.jpg_result.txt", b"{}")
    (tmp_path / "r/a/.two.jpg_result.txt.123-456.tmp").write_bytes(b"{")  # killed mid-write, this shard's
    (tmp_path / "r/a/.three.jpg_result.txt.77-8.tmp").write_bytes(b"{")  # another shard, maybe still writing
    (tmp_path / "r/a/.hidden.tmp").write_bytes(b"user file")  # not our naming: a real (odd) file, left alone
    assert out.listing("r") == {"r/a/one.jpg_result.txt", "r/a/.hidden.tmp"}
    assert out.discard_partial({"r/a/two.jpg_result.txt", "r/a/four.jpg_result.txt"}) == 1
    assert not (tmp_path / "r/a/.two.jpg_result.txt.123-456.tmp").exists()
    assert (tmp_path / "r/a/.three.jpg_result.txt.77-8.tmp").exists()
    assert (tmp_path / "r/a/.hidden.tmp").exists()
    assert out.discard_partial({"r/a/two.jpg_result.txt"}) == 0  # once only


def test_a_write_replaces_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = LocalOutput(tmp_path)
    out.write("x/y.txt", b"first")
    out.write("x/y.txt", b"second", durable=True)
    assert (tmp_path / "x/y.txt").read_bytes() == b"second"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.txt"]
