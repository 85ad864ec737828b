"""What the operator's watches have seen, so that a reconcile reads its object and its children without the API server.

Kopf keeps an index of every resource the operator watches (`@kopf.index` in
main.py: our four kinds, and the pods, Deployments and Services it labels as
its own), fed by the same watch streams that trigger the reconciles. Kopf
starts no handler before every index holds the initial listing, so once the
indices are attached "not in the index" means "not in the cluster as of the
last event seen".

The operator's own writes reach an index only when their watch event
arrives, which may be after the next reconcile of the same object. Until then
the written object (or the fact of its deletion) is kept here and wins over an
older indexed version: resourceVersions are compared as numbers, which they
are on every API server that exists (etcd revisions); where one is not a
number, the index wins as soon as it has the object at all.

Reads of kinds no index covers (Ingresses, HTTPRoutes, autoscalers, Secrets)
go to the API server as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

from ascend_mlops.api.constants import LABEL_OWNER_KIND, LABEL_OWNER_NAME

OWNER: Final = "owner"  # index keys: (namespace, name) and (OWNER, namespace, owner kind, owner name)
_DELETED: Final = None
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
PRUNE_AT: Final = 2048  # written entries kept before the ones the indices caught up with are dropped

Resource = tuple[str, str]  # (api_version, plural)


def index_entries(namespace: str | None, name: str | None, body: Mapping[str, Any], owner_kind: str | None, owner_name: str | None) -> dict[Any, Any]:
    """What an index function returns for one object: it under its name, and under its owner when labelled with one.

    Without what no reconcile reads and a real API server makes large: the
    managed-fields bookkeeping and kubectl's last-applied copy of the object.
    """
    obj = dict(body)
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    obj["metadata"] = meta
    entries: dict[Any, Any] = {(namespace, name): obj}
    if owner_kind and owner_name:
        entries[(OWNER, namespace, owner_kind, owner_name)] = obj
    return entries


def clone(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, scalars): several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def _version(obj: Mapping[str, Any] | None) -> int | None:
    rv = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def _index_caught_up(indexed: Mapping[str, Any] | None, written: Mapping[str, Any] | None) -> bool:
    if written is _DELETED:
        return indexed is None
    if indexed is None:
        return False
    new, old = _version(indexed), _version(written)
    return new is None or old is None or new >= old


class Cache:
    def __init__(self) -> None:
        self._indices: dict[Resource, Any] = {}  # (api_version, plural) -> kopf.Index
        self._written: dict[tuple[str, str, str | None, str], dict[str, Any] | None] = {}
        self._written_names: dict[tuple[str, str, str | None], set[str]] = {}
        self._echoes: dict[tuple[str, str, str | None, str], str] = {}  # -> resourceVersion our write produced

    def attach(self, indices: Mapping[Resource, Any]) -> None:
        """The indices Kopf passes to every handler (the same objects each time)."""
        if not self._indices:
            self._indices = dict(indices)

    def covers(self, api_version: str, plural: str) -> bool:
        return (api_version, plural) in self._indices

    @staticmethod
    def _first(store: Iterable[Any] | None) -> dict[str, Any] | None:
        for value in store or ():
            return dict(value)
        return None

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A deep copy of the object as last seen or written (None: it does not exist). Only for covered kinds."""
        index = self._indices[(api_version, plural)]
        indexed = self._first(index.get((namespace, name)))
        key = (api_version, plural, namespace, name)
        if key in self._written:
            written = self._written[key]
            if not _index_caught_up(indexed, written):
                return cast("dict[str, Any] | None", clone(written))
            self._drop(key)
        return cast("dict[str, Any] | None", clone(indexed))

    def owned(self, api_version: str, plural: str, namespace: str, owner_kind: str, owner_name: str) -> list[dict[str, Any]]:
        """Deep copies of the objects labelled with this owner, as last seen or written."""
        index = self._indices[(api_version, plural)]
        found: dict[str, dict[str, Any] | None] = {}
        for value in index.get((OWNER, namespace, owner_kind, owner_name)) or ():
            found[str(value["metadata"]["name"])] = dict(value)
        for name in list(self._written_names.get((api_version, plural, namespace), ())):
            written = self._written.get((api_version, plural, namespace, name))
            indexed = found.get(name)
            if _index_caught_up(indexed, written):
                continue
            labels = ((written or {}).get("metadata") or {}).get("labels") or {}
            if written is _DELETED or (labels.get(LABEL_OWNER_KIND) == owner_kind and labels.get(LABEL_OWNER_NAME) == owner_name):
                found[name] = written
        return [clone(obj) for obj in found.values() if obj is not None]

    def wrote(self, api_version: str, plural: str, obj: Mapping[str, Any], *, own: bool = True) -> None:
        """An object as the API server returned it after our write (`own`), or as read after a conflict."""
        if not self.covers(api_version, plural):
            return
        meta = obj.get("metadata") or {}
        rv = meta.get("resourceVersion")
        if own and isinstance(rv, str):
            if len(self._echoes) >= PRUNE_AT:
                self._echoes.clear()  # echoes that never came (a later change overtook them): forget them
            self._echoes[(api_version, plural, meta.get("namespace"), str(meta.get("name")))] = rv
        self._remember((api_version, plural, meta.get("namespace"), str(meta.get("name"))), clone(dict(obj)))

    def is_echo(self, api_version: str, plural: str, body: Mapping[str, Any]) -> bool:
        """Whether a watch event brings exactly the version our own last write of the object produced.

        Such an event says nothing the reconcile that wrote it did not know: it
        needs no reconcile of its own (what depends on the object still does).
        """
        meta = body.get("metadata") or {}
        key = (api_version, plural, meta.get("namespace"), str(meta.get("name")))
        rv = meta.get("resourceVersion")
        if rv is not None and self._echoes.get(key) == rv:
            del self._echoes[key]
            return True
        return False

    def deleted(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        if self.covers(api_version, plural):
            self._remember((api_version, plural, namespace, name), _DELETED)

    def _remember(self, key: tuple[str, str, str | None, str], value: dict[str, Any] | None) -> None:
        self._written[key] = value
        self._written_names.setdefault(key[:3], set()).add(key[3])
        self._prune()

    def _drop(self, key: tuple[str, str, str | None, str]) -> None:
        self._written.pop(key, None)
        names = self._written_names.get(key[:3])
        if names is not None:
            names.discard(key[3])
            if not names:
                del self._written_names[key[:3]]

    def _prune(self) -> None:
        """Drop what the indices have caught up with, now and then (entries are otherwise dropped when read)."""
        if len(self._written) < PRUNE_AT:
            return
        for key, written in list(self._written.items()):
            api_version, plural, namespace, name = key
            indexed = self._first(self._indices[(api_version, plural)].get((namespace, name)))
            if _index_caught_up(indexed, written):
                self._drop(key)

    def forget_written(self, namespace: str | None, name: str) -> None:
        """Drop what we wrote about objects of this name (the owner is gone)."""
        for key in [k for k in self._written if k[2] == namespace and k[3] == name]:
            self._drop(key)

