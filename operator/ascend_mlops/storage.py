"""Storage URIs -> pod volumes, volume mounts and the path the container sees.

Every location the workloads read or write goes through `mount()`, so the
trainer's output, the converter's input/output and the server's model resolve
the same way and what one pod writes the next one finds.

Mapping (documented in docs/operator.md):

* `pvc://<claim>/<path>` -> one `persistentVolumeClaim` volume per claim in the pod,
  whatever the number of locations on it, mounted at each role's mount path
  (read-only on the mount for inputs, never on the volume); the container path is
  `<mount path>/<path>`. A kubelet mounts a claim once per pod: a second volume
  for the same claim never becomes mounted and the pod never starts
  (kubernetes/kubernetes#51853). Mounting the claim root rather than a subPath
  keeps output directories that do not exist yet usable (the workload creates
  them) and lets a file (a .om, a labels.txt) be addressed like a directory.
* `file:///<path>` -> one `hostPath` volume per host directory, mounted at each
  role's mount path: type `DirectoryOrCreate` when some role writes there,
  `Directory` otherwise. When the URI names a file, its parent directory is
  mounted and the container path is `<mount path>/<file name>`.
* `s3://<bucket>/<prefix>` and `obs://<bucket>/<prefix>` -> no volume: the URI
  itself is the container path (the workloads speak object storage). A pod with
  at least one such location also gets `object_storage_access()`: a scratch
  `emptyDir` at /scratch (`$ASCEND_MLOPS_SCRATCH`) to download into, and the
  storage Secret's keys as `AWS_*` variables through `secretKeyRef` (only the
  known keys, so nothing else in the Secret reaches the pod, and no value ever
  appears in a manifest).

Volume names come from what is mounted (the claim, the host directory), not
from the role, so that `merge()` gives one volume per claim or directory.
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.api.specs import SCHEME_FILE, SCHEME_PVC, StorageOptions, StorageURI

# Not in the shared contract: labels are only ever mounted by the operator.
MOUNT_LABELS: Final = "/mnt/labels"
SCRATCH_VOLUME: Final = "scratch"


class Role(enum.Enum):
    """What a location is for: decides the mount path and read-only-ness."""

    DATASET = ("dataset", contract.MOUNT_DATASET, False)
    OUTPUT = ("output", contract.MOUNT_OUTPUT, True)
    SOURCE = ("source", contract.MOUNT_SOURCE, False)
    MODEL = ("model", contract.MOUNT_MODEL, False)
    LABELS = ("labels", MOUNT_LABELS, False)
    WEIGHTS = ("weights", contract.MOUNT_WEIGHTS, False)

    def __init__(self, label: str, mount_path: str, writable: bool) -> None:
        self.label = label
        self.mount_path = mount_path
        self.writable = writable


@dataclass(frozen=True)
class Mount:
    """What a pod needs to see one location: volumes, mounts and the in-container path."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VOLUME_NAME_MAX = 63  # a volume name is a DNS-1123 label


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def claim_volume_name(claim: str) -> str:
    """`pvc-<claim>`, or a readable prefix and a digest where the claim is not a short DNS label."""
    name = f"pvc-{claim}"
    if _DNS_LABEL.match(claim) and len(name) <= _VOLUME_NAME_MAX:
        return name
    readable = re.sub(r"[^a-z0-9]+", "-", claim.lower()).strip("-")[:40].strip("-")
    return f"pvc-{readable}-{_digest(claim)}".replace("--", "-")


def host_volume_name(host_dir: str) -> str:
    """`host-<last path parts>-<digest of the whole path>`: different directories never share a name."""
    readable = re.sub(r"[^a-z0-9]+", "-", host_dir.lower()).strip("-")[-40:].strip("-")
    return f"host-{readable}-{_digest(host_dir)}" if readable else f"host-{_digest(host_dir)}"


def mount(uri: StorageURI, role: Role, *, is_file: bool = False) -> Mount:
    """Resolve `uri` for `role`. `is_file` says the URI names a file, not a directory."""
    if uri.is_object_storage:
        return Mount(path=str(uri))
    if uri.scheme == SCHEME_PVC:
        assert uri.claim is not None
        name = claim_volume_name(uri.claim)
        volume: dict[str, Any] = {"name": name, "persistentVolumeClaim": {"claimName": uri.claim}}
        path = posixpath.join(role.mount_path, uri.path) if uri.path else role.mount_path
    elif uri.scheme == SCHEME_FILE:
        if is_file:
            host_dir = posixpath.dirname(uri.path) or "/"
            path = posixpath.join(role.mount_path, posixpath.basename(uri.path))
        else:
            host_dir = uri.path
            path = role.mount_path
        name = host_volume_name(host_dir)
        host_type = "DirectoryOrCreate" if role.writable else "Directory"
        volume = {"name": name, "hostPath": {"path": host_dir, "type": host_type}}
    else:
        raise ValueError(f"unsupported storage scheme {uri.scheme!r}")
    volume_mount: dict[str, Any] = {"name": name, "mountPath": role.mount_path}
    if not role.writable:
        volume_mount["readOnly"] = True
    return Mount([volume], [volume_mount], path)


def _combined(existing: dict[str, Any], volume: dict[str, Any]) -> dict[str, Any]:
    """One volume for two locations on the same claim or directory: created if either role writes."""
    if existing == volume:
        return existing
    if "hostPath" in existing and "hostPath" in volume and existing["hostPath"]["path"] == volume["hostPath"]["path"]:
        writable = "DirectoryOrCreate" in (existing["hostPath"]["type"], volume["hostPath"]["type"])
        return {**existing, "hostPath": {**existing["hostPath"], "type": "DirectoryOrCreate" if writable else "Directory"}}
    raise ValueError(f"two different locations share the volume name {volume['name']!r}")


def merge(*mounts: Mount) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and volume mounts of several locations: each claim and host directory one volume."""
    volumes: dict[str, dict[str, Any]] = {}
    volume_mounts: dict[str, dict[str, Any]] = {}
    for item in mounts:
        for volume in item.volumes:
            volumes[volume["name"]] = _combined(volumes.get(volume["name"], volume), volume)
        for vm in item.volume_mounts:
            volume_mounts.setdefault(vm["mountPath"], vm)
    return list(volumes.values()), list(volume_mounts.values())


def claims_mounted_twice(pod_spec: dict[str, Any]) -> list[str]:
    """Claims that more than one volume of `pod_spec` names: a kubelet never starts such a pod."""
    seen: dict[str, int] = {}
    for volume in pod_spec.get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            seen[claim] = seen.get(claim, 0) + 1
    return sorted(claim for claim, count in seen.items() if count > 1)


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
