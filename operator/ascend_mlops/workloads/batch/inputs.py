"""The inputs of a batch: a folder (local or object storage) read recursively, or a `.manifest` of JSON lines.

Every shard lists the same, complete, sorted input list and keeps the items
whose index modulo N is its own (`--shard i/N`): deterministic, disjoint,
and balanced even when the folder is sorted by class.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ascend_mlops.api import contract
from ascend_mlops.workloads import objectstore

Location = Path | objectstore.ObjectURI


class InputError(Exception):
    """The input is missing, empty or unreadable as a whole: permanent (exit 3)."""


class ImageError(Exception):
    """One input cannot be used (missing, too large, not an image): a FAILED manifest line."""


@dataclass(frozen=True)
class Item:
    index: int  # position in the sorted list of every input (all shards)
    source: str  # the manifest line's "source": the input's path or URI (a .manifest's own text)
    location: Location
    name: str  # the result's path below infer-result-<id>/, without the _result.txt suffix
    size: int | None = None  # bytes, when the listing told


def parse_shard(text: str) -> tuple[int, int]:
    """`i/N` -> (i, N); ValueError for anything else."""
    try:
        left, right = text.split("/", 1)
        index, count = int(left), int(right)
    except ValueError:
        raise ValueError(f"{contract.FLAG_SHARD} {text!r}: expected i/N, e.g. 0/2") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"{contract.FLAG_SHARD} {text!r}: needs N >= 1 and 0 <= i < N")
    return index, count


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    return [item for item in items if item.index % count == index]


def _is_image(name: str) -> bool:
    return name.lower().endswith(contract.BATCH_IMAGE_SUFFIXES)


def _relative_name(text: str) -> str | None:
    """A safe relative path (no '..', not absolute), normalised; None otherwise."""
    if not text or text.startswith("/") or "://" in text:
        return None
    parts = [p for p in PurePosixPath(text.replace("\\", "/")).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _finish(found: list[tuple[str, Location, str, int | None]], what: str) -> list[Item]:
    """Sort by source, drop duplicate sources, make result names unique, number the items."""
    unique: dict[str, tuple[str, Location, str, int | None]] = {}
    for entry in found:
        unique.setdefault(entry[0], entry)
    ordered = [unique[key] for key in sorted(unique)]
    if not ordered:
        raise InputError(f"{contract.FLAG_INPUT} {what}: no images ({', '.join(contract.BATCH_IMAGE_SUFFIXES)})")
    taken = {entry[2] for entry in ordered}
    first: set[str] = set()
    items = []
    for index, (source, location, name, size) in enumerate(ordered):
        if name in first:
            # The same name again (a manifest's absolute paths or URIs from different folders):
            # the first in sorted order keeps it, later ones get their index as a prefix.
            folder, base = posixpath.split(name)
            candidate = posixpath.join(folder, f"{index}-{base}")
            while candidate in taken:
                candidate = posixpath.join(folder, f"{index}-{posixpath.basename(candidate)}")
            taken.add(candidate)
            name = candidate
        first.add(name)
        items.append(Item(index, source, location, name, size))
    return items


def _local_folder(root: Path) -> list[Item]:
    found: list[tuple[str, Location, str, int | None]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            if _is_image(file) and not file.startswith("."):
                path = Path(folder) / file
                found.append((str(path), path, path.relative_to(root).as_posix(), None))
    return _finish(found, str(root))


def _object_folder(root: objectstore.ObjectURI) -> list[Item]:
    objectstore.check_bucket(root, "list")
    found: list[tuple[str, Location, str, int | None]] = []
    for info in objectstore.list_objects(root):
        rel = info.key[len(root.prefix) :]
        if _is_image(rel) and not any(part.startswith(".") for part in rel.split("/")):
            uri = objectstore.ObjectURI(root.scheme, root.bucket, info.key)
            found.append((str(uri), uri, rel, info.size))
    return _finish(found, str(root))


def _manifest(text: str, base: Location, what: str) -> list[Item]:
    found: list[tuple[str, Location, str, int | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{contract.FLAG_INPUT} {what}: line {number} is not JSON: {exc}") from None
        source = entry.get("source") if isinstance(entry, dict) else None
        if not isinstance(source, str) or not source.strip():
            raise InputError(f"{contract.FLAG_INPUT} {what}: line {number} has no \"source\" string")
        source = source.strip()
        rel = _relative_name(source)
        location: Location
        if objectstore.is_object_uri(source):
            try:
                location = objectstore.parse(source, f"{what} line {number}")
            except ValueError as exc:
                raise InputError(str(exc)) from None
            name = posixpath.basename(location.key) or f"{number}"
        elif rel is not None:
            location = base.join(rel) if isinstance(base, objectstore.ObjectURI) else base / rel
            name = rel
        else:
            location = Path(source)
            if isinstance(base, objectstore.ObjectURI) and not location.is_absolute():
                raise InputError(f"{contract.FLAG_INPUT} {what}: line {number}: {source!r} leaves the manifest's folder")
            name = location.name or f"{number}"
        found.append((source, location, name, None))
    return _finish(found, what)


def list_inputs(value: str) -> list[Item]:
    """Every input, sorted by source. Raises InputError, or StorageError for object storage."""
    if objectstore.is_object_uri(value):
        try:
            uri = objectstore.parse(value, contract.FLAG_INPUT)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if uri.key.endswith(contract.BATCH_MANIFEST_SUFFIX):
            return _manifest(objectstore.read_bytes(uri).decode("utf-8", "replace"), uri.parent(), str(uri))
        return _object_folder(uri)
    path = Path(value.removeprefix("file://"))
    if path.is_file() and path.name.endswith(contract.BATCH_MANIFEST_SUFFIX):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{contract.FLAG_INPUT} {path}: cannot read the manifest: {exc}") from None
        return _manifest(text, path.parent.resolve(), str(path))
    if path.is_dir():
        return _local_folder(path.resolve())
    if path.exists():
        raise InputError(f"{contract.FLAG_INPUT} {path}: neither a folder nor a {contract.BATCH_MANIFEST_SUFFIX} file")
    raise InputError(f"{contract.FLAG_INPUT} {path}: no such file or directory")


def _too_large(size: int) -> ImageError:
    limit = contract.BATCH_MAX_IMAGE_BYTES
    return ImageError(f"the image is {size} bytes, over the {limit // (1024 * 1024)} MB ({limit} bytes) limit per image")


def read_image(item: Item) -> bytes:
    """The input's bytes. ImageError for this input alone; StorageUnavailable propagates (retry the pod)."""
    limit = contract.BATCH_MAX_IMAGE_BYTES
    if item.size is not None and item.size > limit:
        raise _too_large(item.size)
    if isinstance(item.location, objectstore.ObjectURI):
        try:
            data = objectstore.read_bytes(item.location)
        except objectstore.StorageRefused as exc:
            raise ImageError(f"cannot read {item.location}: {exc.message}") from None
    else:
        try:
            size = item.location.stat().st_size
            if size > limit:
                raise _too_large(size)
            data = item.location.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"no such file: {item.location}") from None
        except IsADirectoryError:
            raise ImageError(f"a directory, not an image: {item.location}") from None
        except OSError as exc:
            raise ImageError(f"cannot read {item.location}: {exc}") from None
    if len(data) > limit:
        raise _too_large(len(data))
    return data
