"""The input list and sharding, in-process (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_mlops.workloads.batch import inputs as inp


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_a_folder_is_read_recursively_sorted_with_image_suffixes_only(tmp_path: Path) -> None:
    _touch(tmp_path, "b/2.PNG", "a/1.jpg", "a/0.jpeg", "c.bmp", "notes.txt", ".hidden/x.jpg", "a/.x.jpg")
    items = inp.list_inputs(str(tmp_path))
    assert [i.name for i in items] == ["a/0.jpeg", "a/1.jpg", "b/2.PNG", "c.bmp"]
    assert [i.index for i in items] == [0, 1, 2, 3]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_everything(tmp_path: Path, count: int) -> None:
    _touch(tmp_path, *(f"{n:02d}.jpg" for n in range(20)))
    items = inp.list_inputs(str(tmp_path))
    parts = [inp.shard(items, i, count) for i in range(count)]
    seen = [item.index for part in parts for item in part]
    assert sorted(seen) == list(range(20)) and len(seen) == len(set(seen))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["1", "2/2", "-1/2", "a/b", "0/0"])
def test_bad_shards(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        inp.parse_shard(text)


def test_a_manifest_resolves_relative_absolute_and_duplicate_names(tmp_path: Path) -> None:
    _touch(tmp_path, "x/a.jpg", "y/a.jpg")
    listing = tmp_path / "list.manifest"
    rows = [{"source": "x/a.jpg"}, {"source": str(tmp_path / "y/a.jpg")}, {"source": "./x/a.jpg"}, {"source": "s3://bucket/k/a.jpg"}]
    listing.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = {i.source: i for i in inp.list_inputs(str(listing))}
    assert len(items) == 4  # "./x/a.jpg" is another source string, kept; duplicates of one string are not
    assert items["x/a.jpg"].location == items["./x/a.jpg"].location == tmp_path / "x/a.jpg"
    assert items["./x/a.jpg"].name == "x/a.jpg"  # first in sorted order keeps the name
    names = [i.name for i in items.values()]
    assert len(set(names)) == len(names)  # later "a.jpg"s get index-prefixed names


@pytest.mark.parametrize(("text", "words"), [("not json\n", "not JSON"), ('{"usage": "x"}\n', "no \"source\""), ("\n", "no images")])
def test_bad_manifests(tmp_path: Path, text: str, words: str) -> None:
    listing = tmp_path / "bad.manifest"
    listing.write_text(text)
    with pytest.raises(inp.InputError, match=words):
        inp.list_inputs(str(listing))


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(inp.InputError, match="no such file"):
        inp.list_inputs(str(tmp_path / "nope"))
