"""Versioned output: `<output>/V001`, `V002`, ... written whole or not at all.

A run writes into a staging directory next to the versions and renames it to
the next free `V###` at the very end. A rename is atomic, and renaming onto a
non-empty directory fails, so two runs finishing at once never share a
version: the loser of the race takes the next number. A run killed before
the rename leaves only its staging directory, which no reader mistakes for a
version and which the next run removes once nobody holds its lock.

The lock is an flock on a file beside the staging directory (`.stage-X.lock`
for `.stage-X.tmp`): the kernel drops it when the owner dies, however it dies,
so "unlocked" means "abandoned" even across pods sharing a volume (flock
works on NFSv4 and the usual CSI file systems).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from ascend_mlops.api import contract
from ascend_mlops.workloads import objectstore

log = logging.getLogger(__name__)

STAGE_PREFIX = ".stage-"
STAGE_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
_VERSION_RE = re.compile(rf"^{re.escape(contract.VERSION_PREFIX)}(\d{{{contract.VERSION_DIGITS},}})$")
_MAX_PUBLISH_ATTEMPTS = 1000


def version_number(name: str) -> int | None:
    match = _VERSION_RE.match(name)
    return int(match.group(1)) if match else None


def existing_versions(root: Path) -> list[str]:
    """Names of the published versions under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(n, p.name) for p in root.iterdir() if (n := version_number(p.name)) is not None]
    return [name for _, name in sorted(found)]


def next_version_number(root: Path) -> int:
    """One past the highest version: a deleted version's number is never reused."""
    numbers = [version_number(name) or 0 for name in existing_versions(root)]
    return max(numbers, default=0) + 1


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def clean_stale(root: Path) -> list[str]:
    """Remove staging directories whose owner is gone; return their names."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for lock_path in sorted(root.glob(f"{STAGE_PREFIX}*{LOCK_SUFFIX}")):
        stage = lock_path.with_name(lock_path.name[: -len(LOCK_SUFFIX)] + STAGE_SUFFIX)
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # its owner or another cleaner just finished with it
        try:
            if not _try_lock(fd):
                continue  # a live run holds it
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
                removed.append(stage.name)
            # Unlink while holding the lock, so nobody can lock it and think it is theirs.
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d abandoned staging director%s: %s", len(removed), "y" if len(removed) == 1 else "ies", ", ".join(removed))
    return removed


def _create_locked(root: Path) -> tuple[int, Path]:
    """A new lock file beside the versions, locked by us, and still linked under its name."""
    while True:
        fd, name = tempfile.mkstemp(prefix=STAGE_PREFIX, suffix=LOCK_SUFFIX, dir=root)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have locked and unlinked the fresh file before our flock.
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


class Staging:
    """A locked staging directory; `publish()` turns it into the next version."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        clean_stale(root)
        # The lock exists (and is held) before the directory, so a cleaner
        # never sees an unlocked staging directory of a live run.
        fd, self.lock_path = _create_locked(root)
        self._lock_fd: int | None = fd
        self.path = self.lock_path.with_name(self.lock_path.name[: -len(LOCK_SUFFIX)] + STAGE_SUFFIX)
        self.path.mkdir()
        self.version: str | None = None

    def publish(self) -> str:
        """Rename the staging directory to the next free version; return its name."""
        for _ in range(_MAX_PUBLISH_ATTEMPTS):
            name = contract.version_name(next_version_number(self.root))
            target = self.root / name
            if target.exists():
                continue  # appeared since we listed; list again
            try:
                os.rename(self.path, target)
            except OSError as exc:
                # Another run published this number between our listing and our rename.
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            self.version = name
            self._release()
            return name
        raise RuntimeError(f"could not find a free version name under {self.root}")

    def discard(self) -> None:
        if self.version is None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        os.close(self._lock_fd)
        self._lock_fd = None



class ObjectStaging:
    """`Staging` for an `s3://`/`obs://` output root: stage in local scratch, publish by upload.

    The version becomes visible only when its manifest is written, after every
    other object (objectstore's completeness rule); a run killed mid-upload
    leaves a version without a manifest, which readers refuse and whose number
    the next run skips.
    """

    def __init__(self, root: objectstore.ObjectURI) -> None:
        self.root = root
        self.path = objectstore.scratch_dir("stage")
        self.version: str | None = None

    def publish(self) -> str:
        claim = objectstore.VersionClaim(self.root)
        self.version = claim.publish(self.path)
        return self.version

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __str__(self) -> str:
        return str(self.root)
