"""How one container of a Pod becomes a local process: paths, ports, env, command line.

Pure functions (no API, no processes) so the mapping rules are unit-tested alone:

* each volume gets a local directory: `hostPath` -> that path when it exists,
  else the same path under `<data>/hostpath/`; `persistentVolumeClaim` ->
  `<data>/pvc/<claim>`; `emptyDir` -> a per-pod folder; `secret` / `configMap` ->
  a per-pod folder that `write_atomically` fills with the object's keys in the
  real kubelet's layout (`volume_payload` says which files, from `items`,
  `defaultMode` and `optional`);
* every container path under a mount (and the termination-message path) is
  rewritten to the local path, in args and in env values;
* each containerPort gets a free local port; `--port N` (and `--metrics-port N`) is rewritten to it and
  `--host 0.0.0.0` to loopback;
* `ascend-mlops` runs as `python -m ascend_mlops` of this interpreter.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.storage import claims_mounted_twice

# Host variables a process needs to start at all; nothing else leaks from the host.
HOST_ENV_PASSTHROUGH = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH",
    "CONDA_PREFIX", "PYENV_ROOT", "PYENV_VERSION", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
)


class PodConfigError(Exception):
    """The pod cannot be started as specified; `reason` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class ContainerPlan:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_log: Path
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    named_ports: dict[str, int] = field(default_factory=dict)  # port name -> containerPort
    mounts: list[tuple[str, Path]] = field(default_factory=list)


def _refuse_claims_mounted_twice(pod: Mapping[str, Any]) -> None:
    """As a real kubelet: a claim is mounted once per pod, so a second volume for it never mounts.

    The kubelet waits for every volume, gives up after its timeout with this
    message, and the pod stays ContainerCreating (kubernetes/kubernetes#51853).
    """
    twice = claims_mounted_twice(pod.get("spec", {}))
    if not twice:
        return
    seen: set[str] = set()
    waiting = []
    for volume in pod.get("spec", {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim in twice:
            if claim in seen:
                waiting.append(volume.get("name", ""))
            seen.add(claim)
    listed = " ".join(waiting)
    raise PodConfigError(
        "ContainerCreating",
        f"Unable to attach or mount volumes: unmounted volumes=[{listed}], unattached volumes=[], "
        f"failed to process volumes=[{listed}]: timed out waiting for the condition "
        f"(claim {', '.join(twice)} is named by more than one volume: a kubelet mounts a claim once per pod)",
    )


def volume_dirs(pod: Mapping[str, Any], data_dir: Path, pod_dir: Path) -> dict[str, Path]:
    """Local directory (or file) for every volume of the pod."""
    _refuse_claims_mounted_twice(pod)
    result: dict[str, Path] = {}
    for volume in pod.get("spec", {}).get("volumes") or []:
        name = volume.get("name", "")
        if "hostPath" in volume:
            host = volume["hostPath"]
            path = Path(host.get("path", "/"))
            kind = host.get("type", "")
            if path.exists():
                local = path
            else:
                local = data_dir / "hostpath" / str(path).lstrip("/")
            if kind in ("DirectoryOrCreate",):
                local.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate":
                local.parent.mkdir(parents=True, exist_ok=True)
                local.touch(exist_ok=True)
            elif kind == "Directory" and not local.is_dir():
                raise PodConfigError(
                    "ContainerCreating",
                    f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {path} is not a directory'
                    + (f" (looked at {local}: the sandbox maps absent host paths under its data folder)" if local != path else ""),
                )
            elif kind == "File" and not local.is_file():
                raise PodConfigError(
                    "ContainerCreating",
                    f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {path} is not a file',
                )
            result[name] = local
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", "")
            local = data_dir / "pvc" / claim
            local.mkdir(parents=True, exist_ok=True)
            result[name] = local
        elif "emptyDir" in volume or object_volume(volume) is not None:
            local = pod_dir / "volumes" / name
            local.mkdir(parents=True, exist_ok=True)
            result[name] = local
        else:
            kinds = ", ".join(k for k in volume if k != "name") or "none"
            raise PodConfigError(
                "CreateContainerConfigError",
                f'volume "{name}" has a type the sandbox does not run ({kinds}); '
                "use hostPath, persistentVolumeClaim, emptyDir, secret or configMap",
            )
    return result


# ---------------------------------------------------------------- secret and configMap volumes
DATA_LINK: Final = "..data"  # the symlink to the current timestamped folder
DEFAULT_VOLUME_MODE: Final = 0o644  # the API's default for defaultMode
_DATA_LINK_TMP: Final = "..data_tmp"


@dataclass(frozen=True)
class ObjectVolume:
    """A `secret` or `configMap` volume of a pod: the object it shows as files, and how."""

    volume: str  # the pod's volume name
    kind: str  # "Secret" or "ConfigMap"
    name: str  # the object's name (same namespace as the pod)
    optional: bool = False
    items: tuple[Mapping[str, Any], ...] | None = None  # None: every key, as a file of its name
    default_mode: int = DEFAULT_VOLUME_MODE

    @property
    def plural(self) -> str:
        return "secrets" if self.kind == "Secret" else "configmaps"


def object_volume(volume: Mapping[str, Any]) -> ObjectVolume | None:
    """The `secret` / `configMap` source of a pod volume, or None for any other type."""
    if "secret" in volume:
        source, kind, name = volume.get("secret") or {}, "Secret", (volume.get("secret") or {}).get("secretName", "")
    elif "configMap" in volume:
        source, kind, name = volume.get("configMap") or {}, "ConfigMap", (volume.get("configMap") or {}).get("name", "")
    else:
        return None
    items = source.get("items")
    mode = source.get("defaultMode")
    return ObjectVolume(
        volume=str(volume.get("name", "")), kind=kind, name=str(name), optional=bool(source.get("optional")),
        items=tuple(items) if items else None, default_mode=int(mode) if mode is not None else DEFAULT_VOLUME_MODE,
    )


def object_volumes(pod: Mapping[str, Any]) -> list[ObjectVolume]:
    found = (object_volume(v) for v in pod.get("spec", {}).get("volumes") or [])
    return [v for v in found if v is not None]


def _decode(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return str(value).encode()  # the API would have refused it; show it as it is


def object_data(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """The keys of a Secret (base64 `data`, plus `stringData` as the API would merge it) or ConfigMap."""
    if kind == "Secret":
        result = {key: _decode(value) for key, value in (obj.get("data") or {}).items()}
        result.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
        return result
    result = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    result.update({key: _decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    return result


def _check_relative(path: str, volume: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or ".." in parts or path.startswith(".."):
        raise PodConfigError("ContainerCreating", f'MountVolume.SetUp failed for volume "{volume}" : invalid path {path!r}: must be relative, without ".."')
    return "/".join(p for p in parts if p not in ("", "."))


def volume_payload(source: ObjectVolume, obj: Mapping[str, Any] | None) -> dict[str, tuple[bytes, int]]:
    """The files of the volume, {relative path: (content, mode)}, as the kubelet projects them.

    A missing object is an error unless the volume is optional (then the folder
    is empty); `items` selects keys and names their files (a listed key the
    object lacks is an error unless optional); `mode` per item over `defaultMode`.
    The message names the object and key, never a value.
    """
    prefix = f'MountVolume.SetUp failed for volume "{source.volume}" : '
    if obj is None:
        if source.optional:
            return {}
        raise PodConfigError("ContainerCreating", prefix + f'{source.kind.lower()} "{source.name}" not found')
    data = object_data(source.kind, obj)
    if source.items is None:
        return {_check_relative(key, source.volume): (value, source.default_mode) for key, value in sorted(data.items())}
    payload: dict[str, tuple[bytes, int]] = {}
    for item in source.items:
        key = str(item.get("key", ""))
        if key not in data:
            if source.optional:
                continue
            what = "secret key" if source.kind == "Secret" else "config key"
            owner = "" if source.kind == "Secret" else "configmap "
            raise PodConfigError("ContainerCreating", prefix + f"{owner}references non-existent {what}: {key}")
        mode = item.get("mode")
        payload[_check_relative(str(item.get("path") or key), source.volume)] = (
            data[key], int(mode) if mode is not None else source.default_mode
        )
    return payload


def _local_mode(mode: int) -> int:
    # The sandbox's processes run as the files' owner: the owner may always read (as root
    # in a container may), whatever the mode; the rest of the mode is kept.
    return (mode & 0o777) | 0o400


def read_payload(target: Path) -> dict[str, tuple[bytes, int]] | None:
    """What the volume shows now (through `..data`), or None before its first write."""
    data = target / DATA_LINK
    if not data.is_symlink():
        return None
    current = data.resolve()
    found: dict[str, tuple[bytes, int]] = {}
    for path in sorted(current.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(current))] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return found


def write_atomically(target: Path, payload: Mapping[str, tuple[bytes, int]], *, now: datetime.datetime | None = None) -> bool:
    """Show `payload` in `target` as the kubelet's AtomicWriter does; False when it was already shown.

    The files go into a new folder `..<UTC timestamp>.<random>`; the symlink
    `..data` is then swapped to it in one rename (a reader sees the old set of
    files or the new one, never a mix); each top-level name is a symlink
    `name -> ..data/name`; names that left the payload and the previous
    folder are removed last.
    """
    target.mkdir(parents=True, exist_ok=True)
    wanted = {path: (content, _local_mode(mode)) for path, (content, mode) in payload.items()}
    if read_payload(target) == wanted:
        return False
    data_link = target / DATA_LINK
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("..%Y_%m_%d_%H_%M_%S.")
    fresh = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    for relative, (content, mode) in wanted.items():
        path = fresh / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    tmp_link = target / _DATA_LINK_TMP
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    tmp_link.symlink_to(fresh.name)
    os.replace(tmp_link, data_link)
    top = {relative.split("/", 1)[0] for relative in wanted}
    for name in sorted(top):
        link = target / name
        if link.is_symlink() and os.readlink(link) == f"{DATA_LINK}/{name}":
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(f"{DATA_LINK}/{name}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            if entry != fresh and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)  # the previous folder (or one a crash left)
        elif entry.name not in top:
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry)
    return True


def _rewriter(mapping: Sequence[tuple[str, str]]) -> re.Pattern[str] | None:
    if not mapping:
        return None
    alternatives = "|".join(re.escape(source) for source, _ in sorted(mapping, key=lambda m: -len(m[0])))
    # A container path counts only at a path boundary: not inside another word or path.
    return re.compile(rf"(?<![^=,:;\s\"'])({alternatives})(?=$|[/,:;\s\"'=])")


def rewrite_paths(value: str, mapping: Sequence[tuple[str, str]]) -> str:
    pattern = _rewriter(mapping)
    if pattern is None:
        return value
    table = dict(mapping)
    return pattern.sub(lambda m: table[m.group(1)], value)


# Flags whose value is a containerPort (the server's listen and metrics ports).
PORT_FLAGS: Final = (contract.FLAG_PORT, contract.FLAG_METRICS_PORT)


def rewrite_args(
    args: Sequence[str], mapping: Sequence[tuple[str, str]], ports: Mapping[int, int]
) -> list[str]:
    result: list[str] = []
    previous = ""
    for arg in args:
        new = rewrite_paths(arg, mapping)
        if previous in PORT_FLAGS and new.isdigit() and int(new) in ports:
            new = str(ports[int(new)])
        elif new.partition("=")[0] in PORT_FLAGS and new.partition("=")[2].isdigit():
            flag, _, number = new.partition("=")
            if int(number) in ports:
                new = f"{flag}={ports[int(number)]}"
        if previous == contract.FLAG_HOST and new in ("0.0.0.0", "::"):
            new = "127.0.0.1"  # the sandbox serves on loopback only
        elif new in (f"{contract.FLAG_HOST}=0.0.0.0", f"{contract.FLAG_HOST}=::"):
            new = f"{contract.FLAG_HOST}=127.0.0.1"
        result.append(new)
        previous = arg
    return result


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """A downward-API fieldRef (metadata.name, metadata.labels['x'], status.podIP, ...)."""
    match = re.match(r"^metadata\.(labels|annotations)\['([^']+)'\]$", path)
    if match:
        return str((pod.get("metadata", {}).get(match.group(1)) or {}).get(match.group(2), ""))
    node: Any = pod
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None and path in ("status.podIP", "status.hostIP"):
        return "127.0.0.1"
    return "" if node is None else str(node)


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    lookup: Mapping[tuple[str, str], Mapping[str, str]],
) -> dict[str, str]:
    """The container's own env (value, fieldRef, resourceFieldRef, configMap/secret refs, envFrom).

    `lookup[(kind, name)]` holds the data of the ConfigMaps/Secrets the pod refers to.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key].get("name", "")
                data = lookup.get((kind, ref))
                if data is None:
                    if source[key].get("optional"):
                        continue
                    raise PodConfigError("CreateContainerConfigError", f'{kind.lower()} "{ref}" not found')
                env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item.get("name", "")
        if "value" in item:
            env[name] = str(item["value"])
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            resource = source["resourceFieldRef"].get("resource", "")
            section, _, key = resource.partition(".")
            env[name] = str((container.get("resources") or {}).get(section, {}).get(key, "0"))
        else:
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in source:
                    ref = source[key]
                    data = lookup.get((kind, ref.get("name", "")))
                    if data is None or ref.get("key") not in data:
                        if ref.get("optional"):
                            break
                        # The real kubelet's two messages (the key's value is never shown).
                        namespace = pod.get("metadata", {}).get("namespace", "default")
                        message = (
                            f'{kind.lower()} "{ref.get("name")}" not found' if data is None
                            else f'couldn\'t find key {ref.get("key")} in {kind} {namespace}/{ref.get("name")}'
                        )
                        raise PodConfigError("CreateContainerConfigError", message)
                    env[name] = data[ref["key"]]
                    break
    return env


def plan_container(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    volumes: Mapping[str, Path],
    pod_dir: Path,
    ports: Mapping[int, int],
    lookup: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ContainerPlan:
    name = container.get("name", "container")
    mounts: list[tuple[str, Path]] = []
    for volume_mount in container.get("volumeMounts") or []:
        local = volumes.get(volume_mount.get("name", ""))
        if local is None:
            raise PodConfigError(
                "CreateContainerConfigError", f'volumeMount "{volume_mount.get("name")}" names no volume of the pod'
            )
        sub_path = volume_mount.get("subPath")
        if sub_path:
            local = local / sub_path
            if not local.exists():
                local.mkdir(parents=True, exist_ok=True)
        mounts.append((volume_mount.get("mountPath", ""), local))
    termination_log = pod_dir / f"{name}.termination-log"
    message_path = container.get("terminationMessagePath") or contract.DEFAULT_TERMINATION_LOG
    mapping = [(path.rstrip("/") or "/", str(local)) for path, local in mounts if path not in ("", "/")]
    mapping.append((message_path, str(termination_log)))

    command = list(container.get("command") or [contract.ENTRYPOINT])
    # The program comes from the "image", which in the sandbox is this machine: it is
    # never a volume path, so it is not mapped (a venv under /tmp must not land in the
    # pod's emptyDir at /tmp). Its arguments are the container's view and are mapped.
    program = [sys.executable, "-m", "ascend_mlops"] if command[0] == contract.ENTRYPOINT else command[:1]
    argv = program + [rewrite_paths(part, mapping) for part in command[1:]]
    argv += rewrite_args(container.get("args") or [], mapping, ports)

    env = {key: os.environ[key] for key in HOST_ENV_PASSTHROUGH if key in os.environ}
    env["HOME"] = str(pod_dir)
    env["HOSTNAME"] = str(pod.get("metadata", {}).get("name", ""))
    for key, value in container_env(pod, container, lookup or {}).items():
        env[key] = rewrite_paths(value, mapping)
    tmp = next((local for path, local in mounts if path.rstrip("/") == "/tmp"), None)
    env.setdefault("TMPDIR", str(tmp or pod_dir / "tmp"))
    (tmp or pod_dir / "tmp").mkdir(parents=True, exist_ok=True)
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the log file (and `kubectl logs`) as they are written
    env.update(extra_env or {})

    working_dir = container.get("workingDir")
    cwd = Path(rewrite_paths(working_dir, mapping)) if working_dir else pod_dir
    named = {
        str(p.get("name")): int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name") and "containerPort" in p
    }
    return ContainerPlan(
        argv=argv, env=env, cwd=cwd, termination_log=termination_log,
        ports=dict(ports), named_ports=named, mounts=mounts,
    )


def probe_port(probe_port_value: Any, plan: ContainerPlan) -> int | None:
    """The local port a probe's httpGet/tcpSocket port (number or name) maps to."""
    if isinstance(probe_port_value, str) and not probe_port_value.isdigit():
        container_port = plan.named_ports.get(probe_port_value)
    else:
        container_port = int(probe_port_value)
    if container_port is None:
        return None
    return plan.ports.get(container_port, container_port)


def read_termination_message(
    path: Path, log_path: Path, policy: str, exit_code: int, limit: int = contract.TERMINATION_MESSAGE_LIMIT
) -> str:
    """What the kubelet puts in `state.terminated.message` (FallbackToLogsOnError: the log tail)."""
    message = ""
    try:
        message = path.read_bytes()[:limit].decode("utf-8", errors="replace")
    except OSError:
        pass
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        try:
            lines = log_path.read_bytes().splitlines()[-80:]
            message = b"\n".join(lines)[-2048:].decode("utf-8", errors="replace")
        except OSError:
            pass
    return message
