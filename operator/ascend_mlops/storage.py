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
* `s3://<bucket>/<prefix>` and `obs://<bucket>/<prefix>` -> no volume: the URI
  itself is the container path (the workloads speak object storage). A pod with
  at least one such location also gets `object_storage_access()`: a scratch
  `emptyDir` at /scratch (`$ASCEND_MLOPS_SCRATCH`) to download into, and the
  storage Secret's keys as `AWS_*` variables through `secretKeyRef` (only the
  known keys, so nothing else in the Secret reaches the pod, and no value ever
  appears in a manifest).
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.api.specs import SCHEME_FILE, SCHEME_PVC, StorageOptions, StorageURI

# Not in the shared contract: labels are only ever mounted by the operator.
MOUNT_LABELS: Final = "/mnt/labels"
SCRATCH_VOLUME: Final = "scratch"


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
    if uri.is_object_storage:
        return Mount(path=str(uri))
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


# ---------------------------------------------------------------------------
# Object storage: scratch space and credentials
# ---------------------------------------------------------------------------
def uses_object_storage(uris: Iterable[StorageURI | None]) -> bool:
    return any(uri is not None and uri.is_object_storage for uri in uris)


def secret_name(options: StorageOptions, default: str) -> str | None:
    """The Secret a resource's pods get: spec.storage.secretName, else the operator's default, else none."""
    return options.secret_name or default or None


@dataclass(frozen=True)
class Access:
    """What a pod needs to reach object storage; empty when none of its locations is object storage."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)  # literal values
    secret_env: list[dict[str, Any]] = field(default_factory=list)  # valueFrom.secretKeyRef entries


def secret_env(name: str) -> list[dict[str, Any]]:
    """The Secret's AWS_* keys as env: the credentials required, the endpoint/region/style optional."""
    entries = []
    for key in (*contract.STORAGE_SECRET_REQUIRED_KEYS, *contract.STORAGE_SECRET_OPTIONAL_KEYS):
        ref: dict[str, Any] = {"name": name, "key": key}
        if key not in contract.STORAGE_SECRET_REQUIRED_KEYS:
            ref["optional"] = True
        entries.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return entries


def object_storage_access(
    uris: Iterable[StorageURI | None], options: StorageOptions, *, default_secret: str, default_scratch_size: str
) -> Access:
    """Scratch emptyDir + `$ASCEND_MLOPS_SCRATCH` + the Secret's keys, for a pod touching object storage."""
    if not uses_object_storage(uris):
        return Access()
    volume = {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": options.scratch_size or default_scratch_size}}
    volume_mount = {"name": SCRATCH_VOLUME, "mountPath": contract.MOUNT_SCRATCH}
    name = secret_name(options, default_secret)
    return Access(
        volumes=[volume],
        volume_mounts=[volume_mount],
        env=[(contract.ENV_SCRATCH, contract.MOUNT_SCRATCH)],
        secret_env=secret_env(name) if name else [],
    )
