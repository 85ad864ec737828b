"""Scanning, validating and splitting the folder-per-class dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ascend_mlops.api import contract
from ascend_mlops.workloads.trainer import dataset
from ascend_mlops.workloads.trainer.errors import DatasetError
from tests.helpers import make_dataset


def _add_junk(folder: Path) -> None:
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.new("RGB", (8, 8)).save(folder / "picture.tiff", "TIFF")
    (folder / ".hidden.jpg").write_bytes(b"ignored entirely")


def test_scan_sorts_classes_and_counts_skipped_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, classes=("zebra", "apple", "mango"), per_class=4, size=16)
    _add_junk(root / "apple")
    Image.new("L", (20, 10)).save(root / "mango" / "grey.png")  # grey PNG is fine
    index = dataset.scan(root)
    assert index.classes == ("apple", "mango", "zebra")
    assert [len(f) for f in index.files] == [4, 5, 4]
    reasons = {s.path: s.reason for s in index.skipped}
    assert set(reasons) == {"apple/notes.txt", "apple/broken.jpg", "apple/picture.tiff"}
    assert reasons["apple/notes.txt"] == "not an image"
    assert "TIFF" in reasons["apple/picture.tiff"]
    assert reasons["apple/broken.jpg"].startswith("unreadable")
    assert dataset.skipped_report(index.skipped)["count"] == 3


def test_nested_folders_belong_to_their_class(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, classes=("a", "b"), per_class=2, size=16)
    (root / "a" / "more").mkdir()
    Image.new("RGB", (16, 16)).save(root / "a" / "more" / "x.png")
    assert [len(f) for f in dataset.scan(root).files] == [3, 2]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("file", "not a directory"),
        ("empty", "dataset is empty"),
        ("empty_class", "class(es) with no readable image: roses"),
        ("junk_class", "class(es) with no readable image: roses (1 file(s) skipped"),
        ("one_class", "at least two class"),
    ],
)
def test_invalid_datasets(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("x")
    elif layout != "missing":
        root.mkdir()
    if layout in ("empty_class", "junk_class"):
        make_dataset(root, classes=("daisy",), per_class=2, size=16)
        (root / "roses").mkdir()
        if layout == "junk_class":
            (root / "roses" / "a.jpg").write_text("junk")
    if layout == "one_class":
        make_dataset(root, classes=("daisy",), per_class=2, size=16)
    with pytest.raises(DatasetError) as err:
        dataset.scan(root)
    assert message in str(err.value)
    assert err.value.exit_code == contract.EXIT_INVALID_DATASET


@pytest.mark.parametrize(("n", "ratio", "expected"), [(1, 0.8, 0), (2, 0.8, 1), (10, 0.8, 2), (12, 0.8, 2), (13, 0.8, 3), (10, 0.99, 1), (10, 0.01, 9)])
def test_validation_count(n: int, ratio: float, expected: int) -> None:
    assert dataset.validation_count(n, ratio) == expected


def test_split_is_stratified_disjoint_and_deterministic(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, classes=("a", "b", "c"), per_class=10, size=16)
    index = dataset.scan(root)
    first = dataset.split(index, 0.8, seed=7)
    assert first == dataset.split(index, 0.8, seed=7)
    assert first.counts() == {name: {"train": 8, "validation": 2} for name in ("a", "b", "c")}
    train_paths = {p for p, _ in first.train}
    val_paths = {p for p, _ in first.validation}
    assert not train_paths & val_paths
    assert len(train_paths | val_paths) == 30
    for path, label in first.train + first.validation:
        assert Path(path).parent.name == first.classes[label]
    other = dataset.split(index, 0.8, seed=8)
    assert {p for p, _ in other.validation} != val_paths


def test_split_needs_some_validation_image(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, classes=("a", "b"), per_class=1, size=16)
    with pytest.raises(DatasetError, match="validation"):
        dataset.split(dataset.scan(root), 0.8, seed=0)
