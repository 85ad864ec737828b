"""Bearer-token authentication for the inference routes (`--auth-tokens`).

The tokens come from a file, or from a directory of files as the kubelet lays
out a mounted Secret: one file per key, each a symlink into `..data/`, which
is itself a symlink to a timestamped directory that the kubelet swaps
atomically on an update. Names starting with "." are skipped; every non-empty
line (surrounding whitespace stripped) of every other file is a valid token,
so several tokens can be valid at once while clients move to a new one.

Rotation needs no restart: at most once per `check_interval` a request makes
the source stat its files (following the symlinks, so a `..data` swap shows up
as new inodes) and re-read them when anything changed. A file written in the
same clock tick as the last read cannot be told apart by its timestamps, so
such a "racy" read is repeated at the next check (git's racily-clean rule).

A presented token is compared with every valid token by `hmac.compare_digest`
over SHA-256 digests (fixed length, so neither a token's length nor its
position in the list shows in the timing), without stopping at a match.

Nothing here ever logs, formats or raises a token; messages name the path and
count tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ascend_mlops.api import contract

log = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL = 1.0  # seconds between stat checks of the token files
# Timestamps of files written this close before a read may not change on the next write (coarse clocks).
_RACY_NS = 2_000_000_000
HEADER_AUTHORIZATION = "Authorization"
HEADER_AUTH_TOKEN = "X-Auth-Token"  # ModelArts' header, an alias
BEARER = "bearer"

OUTCOME_OK = "ok"
OUTCOME_MISSING = "missing"
OUTCOME_INVALID = "invalid"
OUTCOMES = (OUTCOME_OK, OUTCOME_MISSING, OUTCOME_INVALID)


class TokenSourceError(Exception):
    """The token source cannot be used: missing, unreadable or without a single token."""


# (name, device, inode, size, mtime_ns, ctime_ns) of each token file, followed through symlinks.
_Stamp = tuple[tuple[str, int, int, int, int, int], ...]


@dataclass(frozen=True)
class _Snapshot:
    digests: tuple[bytes, ...]
    files: int
    stamp: _Stamp
    racy: bool


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _token_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    # A mounted Secret: key files (symlinks into ..data) beside the kubelet's dot-entries.
    return sorted(entry for entry in path.iterdir() if not entry.name.startswith(".") and not entry.is_dir())


def _stamp(files: list[Path]) -> _Stamp:
    rows = []
    for file in files:
        st = os.stat(file)  # follows ..data symlinks: a swap shows as another inode
        rows.append((file.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(rows)


def read_source(path: Path) -> _Snapshot:
    """Read every token under `path`. Raises TokenSourceError naming the path (never a token)."""
    flag = contract.FLAG_AUTH_TOKENS
    try:
        if not path.exists():
            raise TokenSourceError(f"{flag} {path}: no such file or directory")
        files = _token_files(path)
        if not files:
            raise TokenSourceError(f"{flag} {path}: the directory holds no token files (names starting with '.' are skipped)")
        stamp = _stamp(files)
        started = time.time_ns()
        tokens: set[bytes] = set()
        for file in files:
            for line in file.read_bytes().splitlines():
                token = line.strip()
                if token:
                    tokens.add(token)
    except OSError as exc:
        raise TokenSourceError(f"{flag} {path}: cannot read the token files: {exc.strerror or exc.__class__.__name__}") from None
    if not tokens:
        raise TokenSourceError(f"{flag} {path}: no token in {len(files)} file(s); write one token per line")
    racy = any(row[4] >= started - _RACY_NS for row in stamp)  # mtime: what a content write sets
    return _Snapshot(tuple(sorted(_digest(t) for t in tokens)), len(files), stamp, racy)


class TokenSource:
    """The valid tokens, re-read when their files change. `check()` is safe to call from the event loop."""

    def __init__(
        self, path: Path, check_interval: float = DEFAULT_CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = read_source(path)  # TokenSourceError at startup: never "auth silently off"
        self._checked = clock()
        self._broken: str | None = None
        log.info("authentication on: %d token(s) from %s (%d file(s))", self.count, path, self._snapshot.files)

    @property
    def count(self) -> int:
        return len(self._snapshot.digests)

    def refresh(self, force: bool = False) -> None:
        """Stat the files (at most once per check_interval unless forced) and re-read them when they changed."""
        now = self._clock()
        if not force and now - self._checked < self.check_interval:
            return
        with self._lock:
            self._checked = now
            old = self._snapshot
            try:
                files = _token_files(self.path)
                if old.stamp == _stamp(files) and not old.racy and self._broken is None:
                    return
                new = read_source(self.path)
            except (OSError, TokenSourceError) as exc:
                # Fail closed: a source that lost its tokens accepts none (never "auth off").
                message = str(exc) if isinstance(exc, TokenSourceError) else f"{self.path}: {exc.strerror}"
                if message != self._broken:
                    log.warning("authentication: %s; every request is refused until a token is there again", message)
                self._broken = message
                self._snapshot = _Snapshot((), 0, (), True)
                return
            self._snapshot = new
            if self._broken is not None or new.digests != old.digests:
                log.info("authentication: tokens reloaded from %s: %d token(s) in %d file(s)", self.path, self.count, new.files)
            self._broken = None

    def check(self, presented: str) -> bool:
        """True when `presented` is one of the valid tokens; compares with all of them, in constant time."""
        self.refresh()
        candidate = _digest(presented.encode("utf-8", "surrogateescape"))
        matched = False
        for digest in self._snapshot.digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The token a request carries: `Authorization: Bearer <t>` first, else `X-Auth-Token: <t>`; None if neither."""
    authorization = headers.get(HEADER_AUTHORIZATION, "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == BEARER and value.strip():
        return value.strip()
    alias = headers.get(HEADER_AUTH_TOKEN, "").strip()
    return alias or None
