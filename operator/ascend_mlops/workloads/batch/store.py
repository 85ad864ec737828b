"""Where a batch writes: a local folder (atomic tmp + rename) or object storage (one PUT per object).

Either way an object is visible only when complete: a rename on a
filesystem, a single PUT on S3/OBS (which never shows a partial object).
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
from pathlib import Path

from ascend_mlops.workloads import objectstore

TMP_SUFFIX = ".tmp"


class Output(abc.ABC):
    """Paths are relative to the output root, '/'-separated."""

    #: how many writers run at once (object storage PUTs are latency-bound)
    writers = 1

    @abc.abstractmethod
    def write(self, rel: str, data: bytes, content_type: str = "application/octet-stream", durable: bool = False) -> None:
        """Publish `data` at `rel` atomically (replacing what was there)."""

    @abc.abstractmethod
    def read(self, rel: str) -> bytes | None:
        """The object at `rel`, or None when there is none."""

    @abc.abstractmethod
    def listing(self, rel_dir: str) -> set[str]:
        """Complete objects below `rel_dir` (recursively), as paths relative to the root."""

    def discard_partial(self, rels: set[str]) -> int:
        """Remove what interrupted writes of `rels` left behind (seen by the last listing); return how many."""
        return 0

    @abc.abstractmethod
    def location(self, rel: str) -> str:
        """What a manifest's inference-loc names: the path, or the s3:// / obs:// URI."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Fail early when the output is unusable (ValueError / StorageError)."""


class LocalOutput(Output):
    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()  # folders known to exist (one mkdir per folder, not per result)
        self._partial: dict[str, list[Path]] = {}  # target rel -> temporary files a killed writer left (last listing)

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--output {self.root}: cannot create it: {exc}") from None
        if not os.access(self.root, os.W_OK):
            raise ValueError(f"--output {self.root}: not writable")

    def write(self, rel: str, data: bytes, content_type: str = "application/octet-stream", durable: bool = False) -> None:
        path = self.root / rel
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{TMP_SUFFIX}")  # see _target()
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            return None

    def listing(self, rel_dir: str) -> set[str]:
        base = self.root / rel_dir
        found: set[str] = set()
        self._partial = {}
        for folder, _dirs, files in os.walk(base):
            for file in files:
                path = Path(folder) / file
                target = _target(file)
                if target is None:
                    found.add(path.relative_to(self.root).as_posix())
                else:  # a write a kill interrupted: never renamed, so never complete
                    rel = (Path(folder) / target).relative_to(self.root).as_posix()
                    self._partial.setdefault(rel, []).append(path)
        return found

    def discard_partial(self, rels: set[str]) -> int:
        """Only the caller's own targets: another shard may be writing its own temporaries right now."""
        removed = 0
        for rel in rels & self._partial.keys():
            for path in self._partial.pop(rel):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def location(self, rel: str) -> str:
        return str(self.root / rel)


def _target(name: str) -> str | None:
    """`.<name>.<pid>-<thread>.tmp` -> `<name>`; None for a name that is not a temporary."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return None
    stem, sep, writer = name[1 : -len(TMP_SUFFIX)].rpartition(".")
    return stem if sep and stem and writer.replace("-", "").isdigit() else None


class ObjectOutput(Output):
    writers = 8

    def __init__(self, root: objectstore.ObjectURI) -> None:
        self.root = root

    def prepare(self) -> None:
        objectstore.check_bucket(self.root, "write")

    def write(self, rel: str, data: bytes, content_type: str = "application/octet-stream", durable: bool = False) -> None:
        objectstore.write_bytes(self.root.join(rel), data, content_type)

    def read(self, rel: str) -> bytes | None:
        try:
            return objectstore.read_bytes(self.root.join(rel))
        except objectstore.StorageRefused as exc:
            if exc.code == "NoSuchKey":
                return None
            raise

    def listing(self, rel_dir: str) -> set[str]:
        skip = len(self.root.prefix)
        return {info.key[skip:] for info in objectstore.list_objects(self.root.join(rel_dir))}

    def location(self, rel: str) -> str:
        return str(self.root.join(rel))


def open_output(value: str) -> Output:
    if objectstore.is_object_uri(value):
        return ObjectOutput(objectstore.parse(value, "--output"))
    return LocalOutput(Path(value.removeprefix("file://")).resolve())
