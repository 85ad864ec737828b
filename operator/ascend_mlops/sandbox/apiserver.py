"""An embedded Kubernetes API server on loopback, built on KMock's `KubernetesEmulator`.

KMock keeps objects in memory with their history, fans watch events out through
its buses, renders `Status` errors and serves API discovery. The operator, the
sandbox kubelet and the real `kubectl` need more of a real API server than that,
so this subclass adds it:

* resourceVersion on every write (one global counter), `generation` that grows
  on spec changes only, uid, creationTimestamp, `generateName`;
* the `status` subresource: a status write changes nothing else and does not
  bump generation; a main-resource write leaves status alone (for the kinds
  that have the subresource, as on a cluster);
* merge, strategic-merge (for the usual keyed lists) and JSON patches
  (with `test`, which Kopf uses for optimistic concurrency), PUT with
  resourceVersion preconditions (409 Conflict);
* label and field selectors on list and watch; watches that resume from a
  resourceVersion (410 Gone once it is too old), initial events, bookmarks,
  `timeoutSeconds`;
* finalizers and deletionTimestamp; owner-reference garbage collection
  (background and orphan propagation, and a dependent created with owners
  none of which exists is deleted, as a cluster's collector does); namespace
  deletion;
* CRDs served from `customresourcedefinitions` objects (loaded from `crds/`
  at startup or created through the API), with schema defaulting, pruning
  and validation (`schema.py`) and their printer columns;
* `Table` responses for `kubectl get`, `PartialObjectMetadata` (metadata only,
  as for a client that must not read a Secret's data), pod logs through a
  pluggable reader, and the built-in defaults of pods, services and
  deployments that clients see.

Start it with `APIServer` (an asyncio context manager) or `ThreadedAPIServer`
(a background thread, for synchronous tests), then `write_kubeconfig()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import json
import logging
import random
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering
from kmock._internal.aiobus import Bus

from ascend_mlops.api import crds
from ascend_mlops.sandbox import objects as k8s
from ascend_mlops.sandbox import schema as crd_schema
from ascend_mlops.sandbox import tables

logger = logging.getLogger(__name__)

SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-ascend-mlops-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24",
    "compiler": "gc",
    "platform": "linux/amd64",
}
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
WATCH_HISTORY = 4000  # events kept per resource for watches that resume from a resourceVersion
OBJECT_HISTORY = 20  # versions kept per object (KMock keeps them all otherwise)
BOOKMARK_INTERVAL = 20.0  # seconds; below Kopf's 70 s inactivity timeout
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Service names
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # Namespace names
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# CRDs in these groups need an API-review annotation (kubernetes/enhancements#1111).
_PROTECTED_GROUP_RE = re.compile(r"(^|\.)(k8s\.io|kubernetes\.io)$")
APPROVAL_ANNOTATION = "api-approved.kubernetes.io"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName


class APIError(Exception):
    """A request the API refuses; rendered as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class ResourceSpec:
    """What discovery says about a resource, plus the CRD's schema and printer columns."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""
    schema: Mapping[str, Any] | None = None
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def ref(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def qualified(self) -> str:
        """`pods`, `deployments.apps`, `trainingjobs.ascend.mlops.dev` (as in error messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


BUILTIN_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
    ResourceSpec("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    ResourceSpec("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "binding"), ("all",)),
    ResourceSpec("", "v1", "services", "Service", True, ("svc",), ("status",), ("all",)),
    ResourceSpec("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    ResourceSpec("", "v1", "events", "Event", True, ("ev",)),
    ResourceSpec("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceSpec("", "v1", "secrets", "Secret", True),
    ResourceSpec("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    ResourceSpec("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    ResourceSpec("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), ("all",)),
    # What InferenceService spec.exposure and spec.autoscaling create. Nothing acts on them
    # here: no ingress controller, no HPA controller (a test writes an HPA's status itself).
    ResourceSpec("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",)),
    ResourceSpec("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ("hpa",), ("status",), ("all",)),
    ResourceSpec(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
        ("crd", "crds"), ("status",),
    ),
)


@dataclass
class Target:
    """A parsed resource URL: /api(s)/group/version[/namespaces/ns]/plural[/name[/subresource]]."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_target(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces":
        # /namespaces, /namespaces/NAME and /namespaces/NAME/{status,finalize} are the
        # namespace resource itself; anything longer is a namespaced resource inside it.
        if len(rest) == 1:
            return Target(group, version, "namespaces")
        if len(rest) == 2:
            return Target(group, version, "namespaces", name=rest[1])
        if len(rest) == 3 and rest[2] in ("status", "finalize"):
            return Target(group, version, "namespaces", name=rest[1], subresource=rest[2])
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Target(group, version, plural, namespace, name, subresource)


def _strip_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@dataclass
class _Event:
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


LogReader = Callable[[str, str, str | None, bool], Path | None]


@attrs.define(kw_only=True)
class SandboxKubernetes(kmock.KubernetesEmulator):
    """The request handler: KMock's emulator with the semantics listed in the module docstring."""

    crd_dirs: tuple[Path, ...] = ()
    # (namespace, pod, container, previous) -> the log file, set by the kubelet.
    log_reader: LogReader | None = None

    _specs: dict[tuple[str, str, str], ResourceSpec] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _history: dict[tuple[str, str, str], collections.deque[_Event]] = attrs.field(factory=dict, init=False)
    _dropped: dict[tuple[str, str, str], int] = attrs.field(factory=dict, init=False)
    _event_buses: dict[tuple[str, str, str], Bus[_Event]] = attrs.field(factory=dict, init=False)
    _watchers: set[asyncio.Task[Any]] = attrs.field(factory=set, init=False)
    _cluster_ips: int = attrs.field(default=10, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _sweeps: set[asyncio.Task[Any]] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for spec in BUILTIN_RESOURCES:
            self._register(spec)

    # ------------------------------------------------------------------ setup
    def _register(self, spec: ResourceSpec) -> None:
        self._specs[spec.key] = spec
        self.resources[spec.ref] = kmock.ResourceInfo(
            kind=spec.kind,
            singular=spec.singular or spec.kind.lower(),
            namespaced=spec.namespaced,
            verbs=set(ALL_VERBS),
            shortnames=set(spec.short_names),
            categories=set(spec.categories),
            subresources=set(spec.subresources),
        )

    def _unregister(self, key: tuple[str, str, str]) -> None:
        spec = self._specs.pop(key, None)
        if spec is not None and spec.ref in self.resources:
            del self.resources[spec.ref]

    async def bootstrap(self) -> None:
        """Create the default namespaces and the CRDs found in `crd_dirs`."""
        for name in DEFAULT_NAMESPACES:
            await self.create_object("", "v1", "namespaces", None, {"metadata": {"name": name}})
        for directory in self.crd_dirs:
            for path in sorted(Path(directory).glob("*.y*ml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                        await self.create_object("apiextensions.k8s.io", "v1", "customresourcedefinitions", None, doc)

    def spec_for(self, group: str, version: str, plural: str) -> ResourceSpec:
        spec = self._specs.get((group, version, plural))
        if spec is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource", {})
        return spec

    def spec_by_kind(self, api_version: str, kind: str) -> ResourceSpec:
        for spec in self._specs.values():
            if spec.api_version == api_version and spec.kind == kind:
                return spec
        raise APIError(404, "NotFound", f"no matches for kind {kind!r} in version {api_version!r}")

    def _sync_crd(self, crd: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> None:
        """Serve (or stop serving) the resources a CRD object declares."""
        if old is not None:
            group = old.get("spec", {}).get("group", "")
            plural = old.get("spec", {}).get("names", {}).get("plural", "")
            for version in old.get("spec", {}).get("versions", []):
                self._unregister((group, version.get("name", ""), plural))
        if crd is None:
            return
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            subresources = tuple(sorted((version.get("subresources") or {}).keys()))
            columns = list(version.get("additionalPrinterColumns") or [])
            self._register(
                ResourceSpec(
                    group=spec.get("group", ""),
                    version=version.get("name", ""),
                    plural=names.get("plural", ""),
                    kind=names.get("kind", ""),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    short_names=tuple(names.get("shortNames") or ()),
                    subresources=subresources,
                    categories=tuple(names.get("categories") or ()),
                    singular=names.get("singular") or names.get("kind", "").lower(),
                    schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                    printer_columns=columns,
                    custom=True,
                )
            )

    # ------------------------------------------------------------------ store
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _stored(self, spec: ResourceSpec, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (spec.ref, namespace if spec.namespaced else None, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def iter_objects(self, spec: ResourceSpec, namespace: str | None = None) -> Iterable[dict[str, Any]]:
        for (ref, ns, _), obj in list(self.objects.items()):
            if ref == spec.ref and not obj.deleted and (namespace is None or ns == namespace):
                yield obj.raw

    def get_object(self, group: str, version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A deep copy of the stored object, or None (for in-process callers and tests)."""
        spec = self.spec_for(group, version, plural)
        found = self._stored(spec, namespace, name)
        return copy.deepcopy(found) if found is not None else None

    async def _emit(self, spec: ResourceSpec, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        event = _Event(int(obj["metadata"]["resourceVersion"]), kind, copy.deepcopy(obj), old)
        history = self._history.setdefault(spec.key, collections.deque(maxlen=WATCH_HISTORY))
        if len(history) == history.maxlen:
            self._dropped[spec.key] = history[0].rv
        history.append(event)
        bus = self._event_buses.setdefault(spec.key, Bus())
        await bus.put(event)

    def _save(self, spec: ResourceSpec, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (spec.ref, meta.get("namespace") if spec.namespaced else None, meta["name"])
        if key in self.objects:
            stored = self.objects[key]
            stored.history.append(copy.deepcopy(obj))
            if len(stored.history) > OBJECT_HISTORY:
                del stored.history[: len(stored.history) - OBJECT_HISTORY]
        else:
            self.objects[key] = copy.deepcopy(obj)

    def _forget(self, spec: ResourceSpec, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        key = (spec.ref, meta.get("namespace") if spec.namespaced else None, meta["name"])
        self.objects[key].delete()

    # ------------------------------------------------------------------ writes
    async def create_object(
        self, group: str, version: str, plural: str, namespace: str | None, body: Mapping[str, Any],
        *, strict_fields: bool = False,
    ) -> dict[str, Any]:
        spec = self.spec_for(group, version, plural)
        async with self._write_lock:
            return await self._create(spec, namespace, body, strict_fields=strict_fields)

    async def _create(
        self, spec: ResourceSpec, namespace: str | None, body: Mapping[str, Any], *, strict_fields: bool = False
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise APIError(400, "BadRequest", "the request body must be a JSON object")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise APIError(400, "BadRequest", "metadata must be an object")
        if spec.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                namespace = body_ns or "default"
            if body_ns and body_ns != namespace:
                raise APIError(
                    400, "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            ns_obj = self._stored(self._specs[("", "v1", "namespaces")], None, namespace)
            if ns_obj is None:
                raise APIError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise APIError(
                    403, "Forbidden",
                    f'{spec.qualified} "{meta.get("name", "")}" is forbidden: unable to create new content '
                    f"in namespace {namespace} because it is being terminated",
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise APIError(422, "Invalid", f"{spec.kind} is invalid: metadata.name: Required value: name or generateName is required")
            for _ in range(20):
                candidate = prefix + "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(5))
                if self._stored(spec, namespace, candidate) is None:
                    break
            meta["name"] = candidate
        name = meta["name"]
        self._check_name(spec, name)
        if self._stored(spec, namespace, name) is not None:
            raise APIError(
                409, "AlreadyExists", f'{spec.qualified} "{name}" already exists',
                {"name": name, "group": spec.group, "kind": spec.plural},
            )
        obj["apiVersion"] = spec.api_version
        obj["kind"] = spec.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = k8s.now_rfc3339()
        meta["generation"] = 1
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "managedFields", "selfLink"):
            meta.pop(transient, None)
        if spec.has_status and spec.key != ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            obj.pop("status", None)
        obj = self._admit(spec, obj, None, strict_fields=strict_fields)
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._next_rv())
        self._save(spec, obj)
        if spec.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._sync_crd(obj, None)
        await self._emit(spec, "ADDED", obj, None)
        if self._dangling(obj):
            task = asyncio.get_running_loop().create_task(self._collect_dangling(spec, namespace, name, meta["uid"]))
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)
        return copy.deepcopy(obj)

    def _dangling(self, obj: Mapping[str, Any]) -> bool:
        """Owner references, none of them to an object that exists (same kind, name and uid).

        A real garbage collector deletes such a dependent shortly after its creation. An owner
        of a kind this API does not serve cannot be looked up: it is not dangling (a real
        collector retries those, and deletes nothing).
        """
        meta = obj.get("metadata") or {}
        refs = meta.get("ownerReferences") or []
        if not refs:
            return False
        for ref in refs:
            try:
                owner_spec = self.spec_by_kind(str(ref.get("apiVersion") or ""), str(ref.get("kind") or ""))
            except APIError:
                return False
            owner = self._stored(owner_spec, meta.get("namespace") if owner_spec.namespaced else None, str(ref.get("name") or ""))
            if owner is not None and owner["metadata"].get("uid") == ref.get("uid"):
                return False
        return True

    async def _collect_dangling(self, spec: ResourceSpec, namespace: str | None, name: str, uid: str) -> None:
        await asyncio.sleep(0.05)  # the collector sees the dependent a moment after its creation
        async with self._write_lock:
            current = self._stored(spec, namespace, name)
            if current is not None and current["metadata"]["uid"] == uid and self._dangling(current):
                with contextlib.suppress(APIError):
                    await self._delete(spec, namespace, name)

    def _check_name(self, spec: ResourceSpec, name: str) -> None:
        if spec.kind == "Service":  # a DNS label of its own (<name>.<namespace>.svc)
            valid, what = len(name) <= 63 and bool(_DNS1035_RE.match(name)), (
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character"
            )
        elif spec.kind == "Namespace":
            valid, what = len(name) <= 63 and bool(_DNS1123_LABEL_RE.match(name)), (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                "start and end with an alphanumeric character"
            )
        else:
            valid, what = len(name) <= 253 and bool(_NAME_RE.match(name)), (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character"
            )
        if not valid:
            raise APIError(
                422, "Invalid", f'{_qualified_kind(spec)} "{name}" is invalid: metadata.name: Invalid value: "{name}": {what}',
                {"name": name, "kind": spec.kind},
            )

    def _admit(
        self, spec: ResourceSpec, obj: dict[str, Any], old: dict[str, Any] | None, *, strict_fields: bool = False
    ) -> dict[str, Any]:
        """Built-in defaults, or the CRD's schema: default, prune, validate."""
        name = obj["metadata"]["name"]
        meta_errors = _metadata_errors(obj["metadata"])
        if meta_errors:
            raise APIError(
                422, "Invalid", f'{_qualified_kind(spec)} "{name}" is invalid: ' + ", ".join(meta_errors),
                {"name": name, "kind": spec.kind},
            )
        for key in ("labels", "annotations", "finalizers", "ownerReferences"):
            if key in obj["metadata"] and not obj["metadata"][key]:
                del obj["metadata"][key]  # an empty map or list is not stored (omitempty)
        if spec.custom:
            if strict_fields:
                pruned = crd_schema.prune(copy.deepcopy(obj), spec.schema or {}, top_level=True)
                unknown = _unknown_fields(obj, pruned)
                if unknown:
                    raise APIError(
                        400, "BadRequest",
                        "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown),
                    )
            admitted, errors = crd_schema.admit(obj, spec.schema)
            if errors:
                message = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
                raise APIError(
                    422, "Invalid", f'{spec.kind}.{spec.group} "{name}" is invalid: {message}',
                    {"name": name, "group": spec.group, "kind": spec.kind, "causes": [_cause(e) for e in errors]},
                )
            return admitted
        if old is not None and spec.kind == "Service":
            # An update that omits the allocated addresses keeps them.
            for key in ("clusterIP", "clusterIPs"):
                if key in (old.get("spec") or {}) and not (obj.get("spec") or {}).get(key):
                    obj.setdefault("spec", {})[key] = copy.deepcopy(old["spec"][key])
        _builtin_defaults(spec, obj, self)
        errors = _builtin_validate(spec, obj) + (_update_errors(spec, obj, old) if old is not None else [])
        if errors:
            message = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
            raise APIError(
                422, "Invalid", f'{_qualified_kind(spec)} "{name}" is invalid: {message}',
                {"name": name, "kind": spec.kind},
            )
        return obj

    async def update_object(
        self, group: str, version: str, plural: str, namespace: str | None, name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]], *, subresource: str | None = None,
        precondition_rv: str | None = None, strict_fields: bool = False,
    ) -> dict[str, Any]:
        """Apply `change` (old object -> new object) with the API's write semantics."""
        spec = self.spec_for(group, version, plural)
        async with self._write_lock:
            return await self._update(
                spec, namespace, name, change, subresource=subresource,
                precondition_rv=precondition_rv, strict_fields=strict_fields,
            )

    async def _update(
        self, spec: ResourceSpec, namespace: str | None, name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]], *, subresource: str | None = None,
        precondition_rv: str | None = None, strict_fields: bool = False,
    ) -> dict[str, Any]:
        current = self._stored(spec, namespace, name)
        if current is None:
            raise APIError(404, "NotFound", f'{spec.qualified} "{name}" not found', {"name": name, "group": spec.group, "kind": spec.plural})
        old = copy.deepcopy(current)
        if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
            raise APIError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {spec.qualified} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "group": spec.group, "kind": spec.plural},
            )
        new = change(copy.deepcopy(old))
        if not isinstance(new, dict):
            raise APIError(422, "Invalid", f'{spec.kind} "{name}" is invalid: the result is not an object')
        raw_meta = new.get("metadata")
        new_meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        old_meta = old["metadata"]
        if subresource == "status":
            # Only status changes through the status subresource.
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if spec.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta = copy.deepcopy(old_meta)
            for key in ("labels", "annotations", "finalizers", "ownerReferences", "generateName"):
                if key in new_meta and new_meta[key] is not None:
                    meta[key] = new_meta[key]
                else:
                    meta.pop(key, None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise APIError(
                        422, "Invalid",
                        f'{spec.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers '
                        "can be added if the object is being deleted",
                    )
            new["metadata"] = meta
        new["apiVersion"] = spec.api_version
        new["kind"] = spec.kind
        new = self._admit(spec, new, old, strict_fields=strict_fields)
        if new == old:
            return copy.deepcopy(old)  # a no-op write changes nothing, not even the resourceVersion
        if _strip_status(new) != _strip_status(old):
            new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        if spec.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._sync_crd(new, old)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._save(spec, new)
            await self._remove(spec, new)
            return copy.deepcopy(new)
        self._save(spec, new)
        await self._emit(spec, "MODIFIED", new, old)
        return copy.deepcopy(new)

    async def delete_object(
        self, group: str, version: str, plural: str, namespace: str | None, name: str,
        *, propagation: str = "Background", precondition_uid: str | None = None,
    ) -> dict[str, Any]:
        spec = self.spec_for(group, version, plural)
        async with self._write_lock:
            return await self._delete(spec, namespace, name, propagation=propagation, precondition_uid=precondition_uid)

    async def _delete(
        self, spec: ResourceSpec, namespace: str | None, name: str,
        *, propagation: str = "Background", precondition_uid: str | None = None,
    ) -> dict[str, Any]:
        current = self._stored(spec, namespace, name)
        if current is None:
            raise APIError(404, "NotFound", f'{spec.qualified} "{name}" not found', {"name": name, "group": spec.group, "kind": spec.plural})
        if precondition_uid and precondition_uid != current["metadata"]["uid"]:
            raise APIError(409, "Conflict", f'Precondition failed: UID in precondition: {precondition_uid}, UID in object meta: {current["metadata"]["uid"]}')
        if propagation == "Orphan":
            await self._orphan(current["metadata"]["uid"])
        obj = copy.deepcopy(current)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if meta.get("finalizers") or spec.key == ("", "v1", "namespaces"):
            old = copy.deepcopy(obj)
            meta["deletionTimestamp"] = k8s.now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            meta["resourceVersion"] = str(self._next_rv())
            if spec.key == ("", "v1", "namespaces"):
                obj.setdefault("status", {})["phase"] = "Terminating"
            self._save(spec, obj)
            await self._emit(spec, "MODIFIED", obj, old)
            if spec.key == ("", "v1", "namespaces"):
                await self._drain_namespace(obj)
            return copy.deepcopy(obj)
        await self._remove(spec, obj)
        return obj

    async def _remove(self, spec: ResourceSpec, obj: dict[str, Any]) -> None:
        """Really remove an object, then collect the dependents it owned."""
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        self._forget(spec, obj)
        if spec.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._sync_crd(None, obj)
        await self._emit(spec, "DELETED", obj, None)
        await self._collect_dependents(obj["metadata"]["uid"])
        namespace = obj["metadata"].get("namespace")
        if namespace:
            await self._finish_namespace(namespace)

    def _live_uids(self) -> set[str]:
        return {obj.raw["metadata"]["uid"] for obj in self.objects.values() if not obj.deleted}

    async def _collect_dependents(self, owner_uid: str) -> None:
        """The garbage collector: dependents whose owners are all gone are deleted."""
        live = self._live_uids()
        for (ref, namespace, name), stored in list(self.objects.items()):
            if stored.deleted:
                continue
            child = stored.raw
            refs = child["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            spec = self._specs.get((ref.group or "", ref.version or "", ref.plural or ""))
            if spec is None:
                continue
            if self._stored(spec, namespace, name) is None:
                continue  # collected meanwhile, by a nested collection
            remaining = [r for r in refs if r.get("uid") in live]
            if remaining:
                await self._update(spec, namespace, name, _with_owners(remaining))
            else:
                await self._delete(spec, namespace, name)

    async def _orphan(self, owner_uid: str) -> None:
        for (ref, namespace, name), stored in list(self.objects.items()):
            if stored.deleted:
                continue
            refs = stored.raw["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs):
                spec = self._specs[(ref.group or "", ref.version or "", ref.plural or "")]
                keep = [r for r in refs if r.get("uid") != owner_uid]
                await self._update(spec, namespace, name, _with_owners(keep))

    async def _drain_namespace(self, ns_obj: dict[str, Any]) -> None:
        """Delete everything in a terminating namespace; it goes once it is empty."""
        namespace = ns_obj["metadata"]["name"]
        for (ref, ns, name), stored in list(self.objects.items()):
            if ns != namespace or stored.deleted or stored.raw["metadata"].get("deletionTimestamp"):
                continue
            spec = self._specs.get((ref.group or "", ref.version or "", ref.plural or ""))
            if spec is not None and self._stored(spec, ns, name) is not None:
                await self._delete(spec, ns, name)
        await self._finish_namespace(namespace)

    async def _finish_namespace(self, namespace: str) -> None:
        ns_spec = self._specs[("", "v1", "namespaces")]
        ns_obj = self._stored(ns_spec, None, namespace)
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        if any(ns == namespace and not s.deleted for (_, ns, _), s in self.objects.items()):
            return
        await self._remove(ns_spec, copy.deepcopy(ns_obj))

    # ------------------------------------------------------------------ HTTP
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        target = parse_target(raw_request.path)
        try:
            if raw_request.path == "/version":
                return aiohttp.web.json_response(SERVER_VERSION)
            if raw_request.path in ("/healthz", "/readyz", "/livez"):
                return aiohttp.web.Response(text="ok")
            if raw_request.path.startswith("/openapi/v3"):
                return aiohttp.web.json_response(self._openapi_v3(raw_request.path))
            if target is None:
                response = await super().__call__(raw_request)
                del self._requests[:-200]  # KMock keeps every request; the sandbox runs for hours
                return response
            return await self._serve(raw_request, target)
        except APIError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)
        except k8s.PatchError as e:
            error = APIError(e.status, "Invalid" if e.status == 422 else "BadRequest", str(e))
            return aiohttp.web.json_response(error.status(), status=error.code)
        except ConnectionResetError:
            raise
        except Exception as e:  # the API answers 500 instead of dropping the connection
            logger.exception("sandbox API: %s %s failed", raw_request.method, raw_request.path)
            error = APIError(500, "InternalError", f"{type(e).__name__}: {e}")
            return aiohttp.web.json_response(error.status(), status=500)

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        # KMock's version says "/v1" for the core group; kubectl needs "v1".
        assert request.resource is not None
        group, version = request.resource.group or "", request.resource.version
        specs = [s for s in self._specs.values() if s.group == group and s.version == version]
        if not specs:
            raise kmock.KubernetesResourceNotFoundError()
        resources: list[dict[str, Any]] = []
        for spec in sorted(specs, key=lambda s: s.plural):
            entry = {
                "name": spec.plural,
                "singularName": spec.singular or spec.kind.lower(),
                "namespaced": spec.namespaced,
                "kind": spec.kind,
                "verbs": list(ALL_VERBS),
            }
            if spec.short_names:
                entry["shortNames"] = list(spec.short_names)
            if spec.categories:
                entry["categories"] = list(spec.categories)
            resources.append(entry)
            for sub in spec.subresources:
                verbs = ["get", "patch", "update"] if sub in ("status", "scale") else ["get", "create"]
                resources.append({
                    "name": f"{spec.plural}/{sub}", "singularName": "", "namespaced": spec.namespaced,
                    "kind": spec.kind if sub in ("status",) else ("Scale" if sub == "scale" else spec.kind),
                    "verbs": verbs,
                })
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _openapi_v3(self, path: str) -> dict[str, Any]:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself.

        kubectl looks for the `fieldValidation` parameter on each kind's PATCH
        operation; finding it, kubectl sends `fieldValidation=Strict` and leaves
        validation to the server instead of downloading full schemas.
        """
        group_versions = sorted({(s.group, s.version) for s in self._specs.values()})

        def gv_path(group: str, version: str) -> str:
            return f"apis/{group}/{version}" if group else f"api/{version}"

        requested = path.removeprefix("/openapi/v3").strip("/")
        if not requested:
            return {"paths": {gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}?hash={self._rv}"} for g, v in group_versions}}
        paths: dict[str, Any] = {}
        for spec in self._specs.values():
            if gv_path(spec.group, spec.version) != requested:
                continue
            prefix = f"/{requested}/namespaces/{{namespace}}" if spec.namespaced else f"/{requested}"
            paths[f"{prefix}/{spec.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": spec.group, "version": spec.version, "kind": spec.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            raise APIError(404, "NotFound", f"no OpenAPI document for {requested!r}")
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes (ascend-mlops sandbox)", "version": SERVER_VERSION["gitVersion"]}, "paths": paths}

    async def _serve(self, raw: aiohttp.web.BaseRequest, target: Target) -> aiohttp.web.StreamResponse:
        spec = self.spec_for(target.group, target.version, target.plural)
        if spec.namespaced is False and target.namespace is not None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        namespace = target.namespace if spec.namespaced else None
        method = raw.method.upper()
        params = raw.query
        if target.subresource and target.subresource not in spec.subresources:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource == "log":
            return await self._serve_log(raw, spec, namespace, target.name or "")
        if target.subresource == "binding":
            return await self._serve_binding(raw, spec, namespace, target.name or "")
        if target.subresource == "scale":
            raise APIError(405, "MethodNotAllowed", "the sandbox API does not serve the scale subresource")

        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._stream_watch(raw, spec, namespace, target.name)
        if method == "GET" and target.name is None:
            return self._respond(raw, spec, self._list(spec, namespace, params), listing=True)
        if method == "GET":
            found = self._stored(spec, namespace, target.name or "")
            if found is None:
                raise APIError(404, "NotFound", f'{spec.qualified} "{target.name}" not found', {"name": target.name, "group": spec.group, "kind": spec.plural})
            return self._respond(raw, spec, copy.deepcopy(found), listing=False)

        body = await _read_body(raw)
        strict = params.get("fieldValidation") == "Strict"
        if method == "POST" and target.name is None:
            created = await self.create_object(spec.group, spec.version, spec.plural, namespace, body, strict_fields=strict)
            return aiohttp.web.json_response(created, status=201)
        if method == "PUT" and target.name:
            if not isinstance(body, dict):
                raise APIError(400, "BadRequest", "the request body must be a JSON object")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            updated = await self.update_object(
                spec.group, spec.version, spec.plural, namespace, target.name, lambda _old: copy.deepcopy(body),
                subresource=target.subresource, precondition_rv=rv, strict_fields=strict,
            )
            return aiohttp.web.json_response(updated)
        if method == "PATCH" and target.name:
            content_type = raw.headers.get("Content-Type", "application/merge-patch+json").split(";")[0].strip()
            patcher, rv = _patcher(content_type, body)
            updated = await self.update_object(
                spec.group, spec.version, spec.plural, namespace, target.name, patcher,
                subresource=target.subresource, precondition_rv=rv, strict_fields=strict,
            )
            return aiohttp.web.json_response(updated)
        if method == "DELETE" and target.name:
            options = body if isinstance(body, dict) else {}
            propagation = params.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
            uid = (options.get("preconditions") or {}).get("uid")
            deleted = await self.delete_object(
                spec.group, spec.version, spec.plural, namespace, target.name,
                propagation=propagation, precondition_uid=uid,
            )
            return aiohttp.web.json_response(deleted)
        if method == "DELETE" and target.name is None:
            listing = self._list(spec, namespace, params)
            for item in listing["items"]:
                meta = item["metadata"]
                await self.delete_object(spec.group, spec.version, spec.plural, meta.get("namespace"), meta["name"])
            return aiohttp.web.json_response(listing)
        raise APIError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource: {method}")

    def _respond(self, raw: aiohttp.web.BaseRequest, spec: ResourceSpec, payload: dict[str, Any], *, listing: bool) -> aiohttp.web.StreamResponse:
        accept = raw.headers.get("Accept", "")
        if "as=PartialObjectMetadata" in accept.split(",")[0]:
            return aiohttp.web.json_response(_partial_metadata(payload, listing))
        if "as=Table" in accept:
            items = payload["items"] if listing else [payload]
            table = tables.to_table(spec, items, include=raw.query.get("includeObject", "Metadata"))
            table["metadata"] = {"resourceVersion": str(self._rv)}
            return aiohttp.web.json_response(table)
        return aiohttp.web.json_response(payload)

    def _list(self, spec: ResourceSpec, namespace: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        label_selector = params.get("labelSelector", "")
        field_selector = params.get("fieldSelector", "")
        items = []
        for obj in self.iter_objects(spec, namespace):
            if self._selected(obj, label_selector, field_selector):
                items.append(copy.deepcopy(obj))
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return {
            "kind": f"{spec.kind}List",
            "apiVersion": spec.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    @staticmethod
    def _selected(obj: Mapping[str, Any], label_selector: str, field_selector: str) -> bool:
        try:
            if label_selector and not k8s.label_selector_matches(label_selector, obj["metadata"].get("labels")):
                return False
        except k8s.SelectorError as e:
            raise APIError(400, "BadRequest", f"unable to parse requirement: {e}") from None
        return not field_selector or k8s.field_selector_matches(field_selector, obj)

    async def _stream_watch(
        self, raw: aiohttp.web.BaseRequest, spec: ResourceSpec, namespace: str | None, name: str | None
    ) -> aiohttp.web.StreamResponse:
        params = raw.query
        label_selector = params.get("labelSelector", "")
        field_selector = params.get("fieldSelector", "")
        if name:
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
        since = params.get("resourceVersion")
        initial_events = params.get("sendInitialEvents") == "true"
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params.get("timeoutSeconds") or 1800)

        def selected(obj: Mapping[str, Any] | None) -> bool:
            if obj is None:
                return False
            if namespace is not None and obj["metadata"].get("namespace") != namespace:
                return False
            return self._selected(obj, label_selector, field_selector)

        bus = self._event_buses.setdefault(spec.key, Bus())
        # Marking the bus under the write lock: no event slips between the replay and the live feed.
        async with self._write_lock:
            marker = await bus.mark()
            initial: list[dict[str, Any]] = []
            if since in (None, "", "0") or initial_events:
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(obj)}
                    for obj in self.iter_objects(spec, namespace)
                    if selected(obj)
                ]
                if initial_events:
                    initial.append(self._bookmark(spec, initial_end=True))
            else:
                try:
                    since_rv = int(since)
                except ValueError:
                    await bus.unmark(marker)
                    raise APIError(400, "BadRequest", f"invalid resourceVersion {since!r}") from None
                dropped = self._dropped.get(spec.key)
                if dropped is not None and since_rv < dropped:
                    initial = [{"type": "ERROR", "object": APIError(410, "Expired", f"too old resource version: {since_rv} ({dropped})").status()}]
                else:
                    for event in self._history.get(spec.key, ()):
                        if event.rv > since_rv:
                            line = self._event_line(event, selected)
                            if line is not None:
                                initial.append(line)

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        task = asyncio.current_task()
        if task is not None:
            self._watchers.add(task)
        try:
            await response.prepare(raw)
            for line in initial:
                await response.write(json.dumps(line).encode() + b"\n")
            if initial and initial[-1]["type"] == "ERROR":
                return response
            stream = bus.stream(since=marker)
            pending: asyncio.Future[_Event] | None = None
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        if pending is None:
                            pending = asyncio.ensure_future(anext(stream))
                        # Waiting without cancelling: cancelling anext() would end the stream.
                        done, _ = await asyncio.wait({pending}, timeout=BOOKMARK_INTERVAL)
                        if not done:
                            if bookmarks:
                                await response.write(json.dumps(self._bookmark(spec)).encode() + b"\n")
                            continue
                        event, pending = pending.result(), None
                        line = self._event_line(event, selected)
                        if line is not None:
                            await response.write(json.dumps(line).encode() + b"\n")
            finally:
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
                closer = getattr(stream, "aclose", None)
                if closer is not None:
                    await closer()
        except (TimeoutError, ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._watchers.discard(task)
            await bus.unmark(marker)
        return response

    def _bookmark(self, spec: ResourceSpec, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": spec.kind, "apiVersion": spec.api_version, "metadata": meta}}

    @staticmethod
    def _event_line(event: _Event, selected: Callable[[Mapping[str, Any] | None], bool]) -> dict[str, Any] | None:
        now, before = selected(event.obj), selected(event.old)
        if event.type == "MODIFIED" and now and not before and event.old is not None:
            return {"type": "ADDED", "object": event.obj}
        if event.type == "MODIFIED" and before and not now:
            return {"type": "DELETED", "object": event.obj}
        if now:
            return {"type": event.type, "object": event.obj}
        return None

    async def _serve_log(self, raw: aiohttp.web.BaseRequest, spec: ResourceSpec, namespace: str | None, name: str) -> aiohttp.web.StreamResponse:
        pod = self._stored(spec, namespace, name)
        if pod is None:
            raise APIError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container = raw.query.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise APIError(400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: {containers}")
        path = self.log_reader(namespace or "", name, container, raw.query.get("previous") == "true") if self.log_reader else None
        if path is None or not path.exists():
            raise APIError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: no logs yet')
        lines = path.read_bytes().splitlines(keepends=True)
        if raw.query.get("tailLines"):
            lines = lines[-int(raw.query["tailLines"]):]
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        await response.write(b"".join(lines))
        if raw.query.get("follow") == "true":
            offset = path.stat().st_size
            try:
                while self._stored(spec, namespace, name) is not None:
                    await asyncio.sleep(0.5)
                    size = path.stat().st_size
                    if size > offset:
                        with path.open("rb") as fh:
                            fh.seek(offset)
                            await response.write(fh.read(size - offset))
                        offset = size
                    phase = (self._stored(spec, namespace, name) or {}).get("status", {}).get("phase")
                    if phase in ("Succeeded", "Failed"):
                        break
            except (ConnectionResetError, asyncio.CancelledError):
                pass
        return response

    async def _serve_binding(self, raw: aiohttp.web.BaseRequest, spec: ResourceSpec, namespace: str | None, name: str) -> aiohttp.web.StreamResponse:
        body = await _read_body(raw)
        node = (body.get("target") or {}).get("name") if isinstance(body, dict) else None
        if not node:
            raise APIError(400, "BadRequest", "a binding needs target.name (the node)")

        def bind(pod: dict[str, Any]) -> dict[str, Any]:
            if pod.get("spec", {}).get("nodeName"):
                raise APIError(409, "Conflict", f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
            pod.setdefault("spec", {})["nodeName"] = node
            return pod

        await self.update_object(spec.group, spec.version, spec.plural, namespace, name, bind)
        return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, status=201)

    async def close_watches(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        self._watchers.clear()


def _partial_metadata(payload: Mapping[str, Any], listing: bool) -> dict[str, Any]:
    """meta.k8s.io/v1 PartialObjectMetadata(List): the objects' metadata, nothing of their contents."""

    def one(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": copy.deepcopy(obj.get("metadata") or {})}

    if listing:
        return {
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": dict(payload.get("metadata") or {}), "items": [one(item) for item in payload.get("items") or []],
        }
    return one(payload)


def _with_owners(owners: list[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["ownerReferences"] = owners
        return obj

    return change


def _cause(error: str) -> dict[str, str]:
    field_path, _, message = error.partition(": ")
    return {"reason": "FieldValueInvalid", "message": message, "field": field_path}


def _unknown_fields(before: Any, after: Any, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key, value in before.items():
            sub = f"{path}.{key}" if path else key
            if key not in after:
                found.append(sub)
            else:
                found += _unknown_fields(value, after[key], sub)
        return found
    if isinstance(before, list) and isinstance(after, list):
        return [f for b, a in zip(before, after, strict=False) for f in _unknown_fields(b, a, path)]
    return []


async def _read_body(raw: aiohttp.web.BaseRequest) -> Any:
    data = await raw.read()
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        try:
            return yaml.safe_load(data)
        except yaml.YAMLError:
            raise APIError(400, "BadRequest", "the request body is neither JSON nor YAML") from None


def _patcher(content_type: str, body: Any) -> tuple[Callable[[dict[str, Any]], dict[str, Any]], str | None]:
    """The old->new function for a PATCH, and the resourceVersion precondition it carries."""
    if content_type == "application/json-patch+json":
        return (lambda old: k8s.json_patch(old, body)), None
    if not isinstance(body, dict):
        raise APIError(400, "BadRequest", "a merge patch must be a JSON object")
    rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body.get("metadata"), dict) else None
    if content_type == "application/merge-patch+json":
        return (lambda old: k8s.merge_patch(old, body)), rv
    if content_type == "application/strategic-merge-patch+json":
        return (lambda old: k8s.strategic_merge_patch(old, body)), rv
    if content_type == "application/apply-patch+yaml":
        raise APIError(415, "UnsupportedMediaType", "server-side apply is not supported by the sandbox API; use client-side `kubectl apply` or a merge patch")
    raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type!r})")


# ---------------------------------------------------------------------------
# Built-in kinds: the defaults a real API server fills in, and minimal validation.
# ---------------------------------------------------------------------------
def _pod_spec_defaults(pod_spec: dict[str, Any]) -> None:
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("securityContext", {})
    for container in list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or []):
        if not isinstance(container, dict):
            continue
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        container.setdefault("imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if isinstance(probe, dict):
                probe.setdefault("timeoutSeconds", 1)
                probe.setdefault("periodSeconds", 10)
                probe.setdefault("successThreshold", 1)
                probe.setdefault("failureThreshold", 3)
                if isinstance(probe.get("httpGet"), dict):
                    probe["httpGet"].setdefault("scheme", "HTTP")


def _builtin_defaults(spec: ResourceSpec, obj: dict[str, Any], api: SandboxKubernetes) -> None:
    if spec.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if not obj["metadata"].get("deletionTimestamp"):
            obj.setdefault("status", {})["phase"] = "Active"
    elif spec.kind == "Pod":
        pod_spec = obj.setdefault("spec", {})
        _pod_spec_defaults(pod_spec)
        # What a cluster's admission adds to every pod (ServiceAccount, Priority, DefaultTolerationSeconds),
        # and the API's own defaults for pods (not for pod templates).
        pod_spec.setdefault("serviceAccountName", pod_spec.get("serviceAccount") or "default")
        pod_spec.setdefault("serviceAccount", pod_spec["serviceAccountName"])
        pod_spec.setdefault("enableServiceLinks", True)
        pod_spec.setdefault("priority", 0)
        pod_spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tolerations = pod_spec.setdefault("tolerations", [])
        for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == taint and t.get("effect") in ("NoExecute", None, "") for t in tolerations if isinstance(t, dict)):
                tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", _qos_class(obj["spec"]))
    elif spec.kind == "Service":
        svc = obj.setdefault("spec", {})
        svc.setdefault("type", "ClusterIP")
        svc.setdefault("sessionAffinity", "None")
        svc.setdefault("internalTrafficPolicy", "Cluster")
        svc.setdefault("ipFamilies", ["IPv4"])
        svc.setdefault("ipFamilyPolicy", "SingleStack")
        if "clusterIP" not in svc:
            api._cluster_ips += 1
            svc["clusterIP"] = f"10.96.{api._cluster_ips // 250}.{api._cluster_ips % 250 + 1}"
        if svc["clusterIP"] != "None":
            svc.setdefault("clusterIPs", [svc["clusterIP"]])
        for port in svc.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif spec.kind == "Deployment":
        dep = obj.setdefault("spec", {})
        dep.setdefault("replicas", 1)
        dep.setdefault("revisionHistoryLimit", 10)
        dep.setdefault("progressDeadlineSeconds", 600)
        strategy = dep.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type") == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
        _pod_spec_defaults(dep.setdefault("template", {}).setdefault("spec", {}))
    elif spec.kind == "CustomResourceDefinition":
        names = obj.get("spec", {}).get("names", {})
        versions = obj.get("spec", {}).get("versions", [])
        storage = [v.get("name") for v in versions if v.get("storage")]
        now = k8s.now_rfc3339()
        obj["status"] = {
            "acceptedNames": names,
            "storedVersions": storage or [v.get("name") for v in versions[:1]],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        }


def _qos_class(pod_spec: Mapping[str, Any]) -> str:
    containers = pod_spec.get("containers") or []
    if not any((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") for c in containers):
        return "BestEffort"
    guaranteed = all(
        (c.get("resources") or {}).get("limits", {}).get(r) is not None
        and (c.get("resources") or {}).get("limits", {}).get(r) == (c.get("resources") or {}).get("requests", {}).get(r, (c.get("resources") or {}).get("limits", {}).get(r))
        for c in containers
        for r in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _builtin_validate(spec: ResourceSpec, obj: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    if spec.kind == "Pod":
        containers = obj.get("spec", {}).get("containers")
        if not containers:
            errors.append("spec.containers: Required value")
        for index, container in enumerate(containers or []):
            if not container.get("name"):
                errors.append(f"spec.containers[{index}].name: Required value")
            if not container.get("image"):
                errors.append(f"spec.containers[{index}].image: Required value")
    elif spec.kind == "Deployment":
        dep = obj.get("spec", {})
        selector = dep.get("selector")
        labels = dep.get("template", {}).get("metadata", {}).get("labels") or {}
        if not selector:
            errors.append("spec.selector: Required value")
        elif not k8s.match_labels_selector(selector, labels):
            errors.append(f"spec.template.metadata.labels: Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`")
        if not dep.get("template", {}).get("spec", {}).get("containers"):
            errors.append("spec.template.spec.containers: Required value")
        status = obj.get("status") or {}
        replicas = int(status.get("replicas") or 0)
        for key in ("updatedReplicas", "readyReplicas", "availableReplicas"):
            if int(status.get(key) or 0) > replicas:
                errors.append(f"status.{key}: Invalid value: {status.get(key)}: cannot be greater than status.replicas")
        if int(status.get("availableReplicas") or 0) > int(status.get("readyReplicas") or 0):
            errors.append(f"status.availableReplicas: Invalid value: {status.get('availableReplicas')}: cannot be greater than readyReplicas")
    elif spec.kind == "Service":
        for index, port in enumerate(obj.get("spec", {}).get("ports") or []):
            if not isinstance(port.get("port"), int):
                errors.append(f"spec.ports[{index}].port: Required value")
    elif spec.kind == "Event":
        involved = (obj.get("involvedObject") or {}).get("namespace")
        if involved and involved != obj["metadata"].get("namespace"):
            errors.append(f'involvedObject.namespace: Invalid value: "{involved}": does not match event.namespace')
    elif spec.kind == "CustomResourceDefinition":
        group = str((obj.get("spec") or {}).get("group") or "")
        if _PROTECTED_GROUP_RE.search(group) and not (obj["metadata"].get("annotations") or {}).get(APPROVAL_ANNOTATION):
            errors.append(
                f"metadata.annotations[{APPROVAL_ANNOTATION}]: Required value: protected groups must have approval "
                f'annotation "{APPROVAL_ANNOTATION}", see https://github.com/kubernetes/enhancements/pull/1111'
            )
    return errors


def _qualified_kind(spec: ResourceSpec) -> str:
    """As the API names a kind in its messages: Pod, Deployment.apps, TrainingJob.ascend.mlops.dev."""
    return f"{spec.kind}.{spec.group}" if spec.group else spec.kind


def _metadata_errors(meta: Mapping[str, Any]) -> list[str]:
    """Label keys (an optional DNS-subdomain prefix and a name of at most 63) and values (at most 63)."""
    errors: list[str] = []
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _NAME_RE.match(prefix))) or not label or len(label) > 63 or not _LABEL_VALUE_RE.match(label):
            errors.append(f'metadata.labels: Invalid value: "{key}": name part must consist of alphanumeric characters, '
                          "'-', '_' or '.', and must start and end with an alphanumeric character (at most 63)")
        if not isinstance(value, str):
            errors.append(f"metadata.labels: Invalid value: {json.dumps(value)}: a label value must be a string")
        elif len(value) > 63:
            errors.append(f'metadata.labels: Invalid value: "{value}": must be no more than 63 characters')
        elif not _LABEL_VALUE_RE.match(value):
            errors.append(f'metadata.labels: Invalid value: "{value}": a valid label must be an empty string or consist of '
                          "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
    return errors


def _update_errors(spec: ResourceSpec, obj: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """What a cluster refuses to change once set."""
    errors: list[str] = []
    new_spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    if spec.kind == "Pod":
        if _mutable_pod_fields_cleared(new_spec, old_spec) != _mutable_pod_fields_cleared(old_spec, old_spec):
            errors.append(
                "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
            )
        old_tolerations = old_spec.get("tolerations") or []
        if any(t not in (new_spec.get("tolerations") or []) for t in old_tolerations):
            errors.append("spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds")
        # A container that will not be restarted stays terminated.
        policy = old_spec.get("restartPolicy", "Always")
        if policy != "Always":
            before = {c.get("name"): c for c in (old.get("status") or {}).get("containerStatuses") or []}
            for index, status in enumerate((obj.get("status") or {}).get("containerStatuses") or []):
                was = ((before.get(status.get("name")) or {}).get("state") or {}).get("terminated")
                if was is None or "terminated" in (status.get("state") or {}):
                    continue
                if policy == "OnFailure" and was.get("exitCode") != 0:
                    continue
                errors.append(f"status.containerStatuses[{index}].state: Forbidden: may not be transitioned to non-terminated state")
    elif spec.kind == "Service":
        for key in ("clusterIP", "clusterIPs"):
            if key in old_spec and old_spec[key] != new_spec.get(key):
                errors.append(f"spec.{key}: Invalid value: {json.dumps(new_spec.get(key))}: may not change once set")
    elif spec.kind == "Deployment":
        if old_spec.get("selector") != new_spec.get("selector"):
            errors.append(f"spec.selector: Invalid value: {json.dumps(new_spec.get('selector'))}: field is immutable")
    return errors


def _mutable_pod_fields_cleared(pod_spec: Mapping[str, Any], old_spec: Mapping[str, Any]) -> dict[str, Any]:
    """A pod's spec without what an update may change (images, activeDeadlineSeconds, tolerations), nodeName
    once set (the binding's; the sandbox binds through an update)."""
    cleared = copy.deepcopy(dict(pod_spec))
    for key in ("containers", "initContainers"):
        for container in cleared.get(key) or []:
            if isinstance(container, dict):
                container.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations"):
        cleared.pop(key, None)
    if not old_spec.get("nodeName"):
        cleared.pop("nodeName", None)
    return cleared


# ---------------------------------------------------------------------------
# Running it: asyncio, or a background thread; a kubeconfig for clients.
# ---------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kubeconfig_text(url: str, namespace: str = "default", name: str = "ascend-mlops-sandbox") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "sandbox"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


# The sandbox's own stand-in CRDs for APIs of other projects (the Gateway API's
# HTTPRoute, which its gateway routes): served next to the product's CRDs.
GATEWAY_CRD_DIR = Path(__file__).resolve().parent / "gateway_api"


def default_crd_dirs() -> tuple[Path, ...]:
    """The product's CRDs and, when they are found, the sandbox's stand-in Gateway API CRD."""
    product = product_crd_dirs()
    return (*product, GATEWAY_CRD_DIR) if product else ()


def product_crd_dirs() -> tuple[Path, ...]:
    """The product's CRDs: `crds/` of the checkout, or the wheel's `ascend_mlops/crds/`."""
    return crds.crd_dirs()


class APIServer:
    """The sandbox API on a loopback port: `async with APIServer() as api: api.url`."""

    def __init__(
        self, *, crd_dirs: Iterable[Path] | None = None, host: str = "127.0.0.1", port: int = 0,
    ) -> None:
        dirs = tuple(Path(d) for d in crd_dirs) if crd_dirs is not None else default_crd_dirs()
        self.handler = SandboxKubernetes(crd_dirs=dirs)
        self.host = host
        self.port = port
        self._runner: aiohttp.web.ServerRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.handler.__aenter__()
        await self.handler.bootstrap()
        server = aiohttp.web.Server(self.handler, access_log=None)  # type: ignore[arg-type]
        self._runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            sockets = [s for s in getattr(site._server, "sockets", ()) or ()]
            self.port = int(sockets[0].getsockname()[1])
        logger.info("sandbox API listening on %s", self.url)

    async def stop(self) -> None:
        await self.handler.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.handler.__aexit__(None, None, None)

    async def __aenter__(self) -> APIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(kubeconfig_text(self.url, namespace))
        return path


class ThreadedAPIServer:
    """The same API served from a background thread with its own event loop (for sync code).

    `with ThreadedAPIServer(crd_dirs=[...]) as api: api.url, api.call(coro_fn)`.
    """

    def __init__(self, *, crd_dirs: Iterable[Path] | None = None) -> None:
        self.server = APIServer(crd_dirs=crd_dirs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox-api", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def handler(self) -> SandboxKubernetes:
        return self.server.handler

    def call(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self.loop).result(timeout)

    def __enter__(self) -> ThreadedAPIServer:
        self._thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        return self.server.write_kubeconfig(path, namespace)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
