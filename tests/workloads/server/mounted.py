"""A Secret volume laid out as the kubelet writes it, for the token-rotation tests.

    root/..2026_01_01_00_00_01.000000001/<key>   the data of one generation
    root/..data -> ..2026_01_01_00_00_01.000000001
    root/<key> -> ..data/<key>

An update (kubelet's AtomicWriter) writes a new timestamped directory, points a
`..data_tmp` symlink at it, renames that over `..data` in one step, adds or
removes the key links and deletes the old generation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


class MountedSecret:
    def __init__(self, root: Path, data: Mapping[str, str]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation = 0
        self.keys: set[str] = set()
        self.update(data)

    def update(self, data: Mapping[str, str]) -> None:
        self.generation += 1
        generation = self.root / f"..2026_01_01_00_00_{self.generation:02d}.000000001"
        generation.mkdir()
        for key, value in data.items():
            (generation / key).write_text(value)
        data_link = self.root / DATA
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(generation.name)
        os.replace(tmp, data_link)  # the atomic swap
        for key in data:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(f"{DATA}/{key}")
        for key in self.keys - set(data):
            (self.root / key).unlink()
        self.keys = set(data)
        if old is not None:
            shutil.rmtree(self.root / old)
