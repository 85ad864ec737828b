"""The folder-per-class dataset: scan, validate every file, split train/validation per class.

No TensorFlow here: a bad dataset is reported before TensorFlow loads, and
the split is plain, seeded Python so every worker of a multi-worker run
computes the same one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ascend_mlops.api import contract

from .errors import DatasetError

log = logging.getLogger(__name__)

# What tf.io.decode_image reads; PIL reads more (TIFF, WebP...) but the
# training pipeline decodes with TensorFlow, so anything else is skipped.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP"})
# Keep the report (log, metrics.json) short on a dataset full of junk.
MAX_LISTED_SKIPPED = 20


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the dataset root
    reason: str


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
    root: Path
    classes: tuple[str, ...]  # sorted; index = label = logit index
    files: tuple[tuple[Path, ...], ...]  # per class, sorted
    skipped: tuple[SkippedFile, ...]

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.files)


@dataclasses.dataclass(frozen=True)
class Split:
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # (path, label)
    validation: tuple[tuple[str, int], ...]

    def counts(self) -> dict[str, dict[str, int]]:
        result = {name: {"train": 0, "validation": 0} for name in self.classes}
        for part, items in (("train", self.train), ("validation", self.validation)):
            for _, label in items:
                result[self.classes[label]][part] += 1
        return result


def check_image(path: Path, size_hint: int = 224) -> str | None:
    """None if TensorFlow will decode the file, else why not."""
    try:
        with Image.open(path) as img:
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                return f"unsupported format {fmt} (use JPEG, PNG, GIF or BMP)"
            if fmt == "JPEG" and img.mode == "CMYK":
                return "CMYK JPEG (convert it to RGB)"
            # A JPEG decodes at 1/2..1/8 scale in a fraction of the time; the
            # full decode still catches truncated and corrupt files.
            img.draft("RGB", (size_hint, size_hint))
            img.load()
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for broken files
        return f"unreadable: {exc}"
    return None


def _class_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(files)


def scan(root: Path, size_hint: int = 224, workers: int = 8) -> DatasetIndex:
    """Index `root` (one sub-directory per class); raise DatasetError if it cannot be trained on."""
    if not root.exists():
        raise DatasetError(
            f"{contract.FLAG_DATA} {root}: the dataset directory does not exist "
            "(check the TrainingJob's dataset.uri and its volume)"
        )
    if not root.is_dir():
        raise DatasetError(f"{contract.FLAG_DATA} {root}: not a directory; give the folder that holds one sub-directory per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(
            f"{contract.FLAG_DATA} {root}: the dataset is empty; expected one sub-directory per "
            "class (for example daisy/, roses/, tulips/) holding JPEG or PNG images"
        )
    for d in class_dirs:
        if "\n" in d.name or "\r" in d.name:
            raise DatasetError(f"class directory {d.name!r}: a class name cannot contain a line break")
    candidates = [_class_files(d) for d in class_dirs]
    flat = [f for files in candidates for f in files]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # PIL releases the GIL while decoding, so threads do overlap.
        verdicts = dict(zip(flat, pool.map(lambda f: check_image(f, size_hint), flat), strict=True))
    skipped = tuple(
        SkippedFile(str(f.relative_to(root)), reason) for f, reason in verdicts.items() if reason
    )
    files = tuple(tuple(f for f in c if verdicts[f] is None) for c in candidates)
    classes = tuple(d.name for d in class_dirs)
    empty = [name for name, f in zip(classes, files, strict=True) if not f]
    if empty:
        raise DatasetError(
            f"{contract.FLAG_DATA} {root}: class(es) with no readable image: {', '.join(empty)}"
            + (f" ({len(skipped)} file(s) skipped as unreadable)" if skipped else "")
            + "; add images or remove the directory"
        )
    if len(classes) < 2:
        raise DatasetError(
            f"{contract.FLAG_DATA} {root}: found only class {classes[0]!r}; a classifier needs at "
            "least two class sub-directories"
        )
    if skipped:
        log.warning(
            "skipped %d unreadable or non-image file(s) of %d, for example: %s",
            len(skipped),
            len(flat),
            "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5]),
        )
    return DatasetIndex(root=root, classes=classes, files=files, skipped=skipped)


def validation_count(n: int, train_ratio: float) -> int:
    """Images of a class of `n` that go to validation: round(n * (1 - ratio)), keeping >= 1 on each side."""
    if n < 2:
        return 0  # a single image can only train
    return min(max(round(n * (1.0 - train_ratio)), 1), n - 1)


def split(index: DatasetIndex, train_ratio: float, seed: int) -> Split:
    """Stratified, seeded split: the same (dataset, ratio, seed) always gives the same split."""
    rng = np.random.default_rng(seed)
    train: list[tuple[str, int]] = []
    validation: list[tuple[str, int]] = []
    for label, files in enumerate(index.files):
        order = rng.permutation(len(files))
        n_val = validation_count(len(files), train_ratio)
        for rank, i in enumerate(order):
            (validation if rank < n_val else train).append((str(files[i]), label))
    if not validation:
        raise DatasetError(
            f"{contract.FLAG_DATA} {index.root}: too few images for a validation split "
            "(every class has one image); add images"
        )
    return Split(classes=index.classes, train=tuple(train), validation=tuple(sorted(validation)))


def skipped_report(skipped: Sequence[SkippedFile]) -> dict[str, object]:
    return {
        "count": len(skipped),
        "files": [{"path": s.path, "reason": s.reason} for s in skipped[:MAX_LISTED_SKIPPED]],
    }
