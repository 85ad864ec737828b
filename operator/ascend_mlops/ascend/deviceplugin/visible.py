"""`ASCEND_VISIBLE_DEVICES`: which Ascend devices a container may use.

Huawei's device plugin answers `Allocate` with the physical ids of the
devices it gave a container, comma-separated (`"0"`, `"1,3"`), in
`ASCEND_VISIBLE_DEVICES`, and `ASCEND_RUNTIME_OPTIONS` (empty for whole
physical devices). Ascend Docker Runtime reads them, mounts `/dev/davinci<id>`
of those devices only, and inside the container they are numbered 0..n-1 in
the listed order: `acl.rt.set_device(0)` opens the first of them. Ranges
(`"0-3"`) are accepted as Ascend Docker Runtime accepts them.

Pure and dependency-free: the simulated plugin and the pyACL simulator share it.
"""

from __future__ import annotations

from typing import Final

ENV_VISIBLE_DEVICES: Final = "ASCEND_VISIBLE_DEVICES"
ENV_RUNTIME_OPTIONS: Final = "ASCEND_RUNTIME_OPTIONS"
MAX_DEVICE_ID: Final = 1023


def parse(value: str) -> list[int]:
    """Physical device ids in the order listed: "0,2-3" -> [0, 2, 3]; "" -> []."""
    ids: list[int] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if sep else low
        except ValueError:
            raise ValueError(
                f"{ENV_VISIBLE_DEVICES}={value!r}: {part!r} is not a device id or a range like 0-3"
            ) from None
        if not 0 <= low <= high <= MAX_DEVICE_ID:
            raise ValueError(f"{ENV_VISIBLE_DEVICES}={value!r}: {part!r} is not a range of device ids 0..{MAX_DEVICE_ID}")
        for device in range(low, high + 1):
            if device in ids:
                raise ValueError(f"{ENV_VISIBLE_DEVICES}={value!r}: device {device} is listed twice")
            ids.append(device)
    return ids


def format_ids(ids: list[int]) -> str:
    """The value Huawei's plugin sets: ascending ids, comma-separated."""
    return ",".join(str(i) for i in sorted(ids))
