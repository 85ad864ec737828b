"""Storage URIs -> pod volumes, volume mounts and the path the container sees.

Every location the workloads read or write goes through `mount()`, so the
trainer's output, the converter's input/output and the server's model resolve
the same way and what one pod writes the next one finds.

Mapping (documented in docs/operator.md):

* `pvc://<claim>/<path>` -> a `persistentVolumeClaim` volume for the whole claim,
  mounted at the role's mount path (read-only for inputs); the container path is
  `<mount path>/<path>`. Mounting the claim root rather than a subPath keeps
  output directories that do not exist yet usable (the workload creates them) and
  lets a file (a .om, a labels.txt) be addressed like a directory.
* `file:///<path>` -> a `hostPath` volume mounted at the role's mount path:
  type `DirectoryOrCreate` for outputs, `Directory` for inputs. When the URI names
  a file, its parent directory is mounted and the container path is
  `<mount path>/<file name>`.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass, field
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.api.specs import SCHEME_FILE, SCHEME_PVC, StorageURI

# Not in the shared contract: labels are only ever mounted by the operator.
MOUNT_LABELS: Final = "/mnt/labels"


class Role(enum.Enum):
    """What a location is for: decides the mount path, the volume name and read-only-ness."""

    DATASET = ("dataset", contract.MOUNT_DATASET, False)
    OUTPUT = ("output", contract.MOUNT_OUTPUT, True)
    SOURCE = ("source", contract.MOUNT_SOURCE, False)
    MODEL = ("model", contract.MOUNT_MODEL, False)
    LABELS = ("labels", MOUNT_LABELS, False)
    WEIGHTS = ("weights", contract.MOUNT_WEIGHTS, False)

    def __init__(self, volume: str, mount_path: str, writable: bool) -> None:
        self.volume = volume
        self.mount_path = mount_path
        self.writable = writable


@dataclass(frozen=True)
class Mount:
    """What a pod needs to see one location: volumes, mounts and the in-container path."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""


def mount(uri: StorageURI, role: Role, *, is_file: bool = False) -> Mount:
    """Resolve `uri` for `role`. `is_file` says the URI names a file, not a directory."""
    name = f"{role.volume}-storage"
    volume_mount: dict[str, Any] = {"name": name, "mountPath": role.mount_path}
    if not role.writable:
        volume_mount["readOnly"] = True
    if uri.scheme == SCHEME_PVC:
        assert uri.claim is not None
        volume: dict[str, Any] = {"name": name, "persistentVolumeClaim": {"claimName": uri.claim}}
        if not role.writable:
            volume["persistentVolumeClaim"]["readOnly"] = True
        path = posixpath.join(role.mount_path, uri.path) if uri.path else role.mount_path
        return Mount([volume], [volume_mount], path)
    if uri.scheme == SCHEME_FILE:
        if is_file:
            host_dir = posixpath.dirname(uri.path) or "/"
            path = posixpath.join(role.mount_path, posixpath.basename(uri.path))
        else:
            host_dir = uri.path
            path = role.mount_path
        host_type = "DirectoryOrCreate" if role.writable else "Directory"
        volume = {"name": name, "hostPath": {"path": host_dir, "type": host_type}}
        return Mount([volume], [volume_mount], path)
    raise ValueError(f"unsupported storage scheme {uri.scheme!r}")


def merge(*mounts: Mount) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and volume mounts of several locations, each volume once."""
    volumes: dict[str, dict[str, Any]] = {}
    volume_mounts: dict[str, dict[str, Any]] = {}
    for item in mounts:
        for volume in item.volumes:
            existing = volumes.setdefault(volume["name"], volume)
            if existing != volume:
                raise ValueError(f"two different locations share the volume name {volume['name']!r}")
        for vm in item.volume_mounts:
            volume_mounts.setdefault(vm["mountPath"], vm)
    return list(volumes.values()), list(volume_mounts.values())
