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

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ascend_mlops.api.constants import LABEL_OWNER_KIND, LABEL_OWNER_NAME

OWNER: Final = "owner"  # index keys: (namespace, name) and (OWNER, namespace, owner kind, owner name)
_DELETED: Final = None
PRUNE_AT: Final = 2048  # written entries kept before the ones the indices caught up with are dropped

Resource = tuple[str, str]  # (api_version, plural)


def index_entries(namespace: str | None, name: str | None, body: Mapping[str, Any], owner_kind: str | None, owner_name: str | None) -> dict[Any, Any]:
    """What an index function returns for one object: it under its name, and under its owner when labelled with one."""
    obj = dict(body)
    entries: dict[Any, Any] = {(namespace, name): obj}
    if owner_kind and owner_name:
        entries[(OWNER, namespace, owner_kind, owner_name)] = obj
    return entries


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
                return copy.deepcopy(written)
            del self._written[key]
        return copy.deepcopy(indexed)

    def owned(self, api_version: str, plural: str, namespace: str, owner_kind: str, owner_name: str) -> list[dict[str, Any]]:
        """Deep copies of the objects labelled with this owner, as last seen or written."""
        index = self._indices[(api_version, plural)]
        found: dict[str, dict[str, Any] | None] = {}
        for value in index.get((OWNER, namespace, owner_kind, owner_name)) or ():
            found[str(value["metadata"]["name"])] = dict(value)
        for (a, p, ns, name), written in list(self._written.items()):
            if (a, p, ns) != (api_version, plural, namespace):
                continue
            indexed = found.get(name)
            if _index_caught_up(indexed, written):
                continue
            labels = ((written or {}).get("metadata") or {}).get("labels") or {}
            if written is _DELETED or (labels.get(LABEL_OWNER_KIND) == owner_kind and labels.get(LABEL_OWNER_NAME) == owner_name):
                found[name] = written
        return [copy.deepcopy(obj) for obj in found.values() if obj is not None]

    def wrote(self, api_version: str, plural: str, obj: Mapping[str, Any]) -> None:
        """An object as the API server returned it after our write (or our read of the truth after a conflict)."""
        if not self.covers(api_version, plural):
            return
        meta = obj.get("metadata") or {}
        self._written[(api_version, plural, meta.get("namespace"), str(meta.get("name")))] = copy.deepcopy(dict(obj))
        self._prune()

    def deleted(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        if self.covers(api_version, plural):
            self._written[(api_version, plural, namespace, name)] = _DELETED
            self._prune()

    def _prune(self) -> None:
        """Drop what the indices have caught up with, now and then (entries are otherwise dropped when read)."""
        if len(self._written) < PRUNE_AT:
            return
        for key, written in list(self._written.items()):
            api_version, plural, namespace, name = key
            indexed = self._first(self._indices[(api_version, plural)].get((namespace, name)))
            if _index_caught_up(indexed, written):
                del self._written[key]

    def forget_written(self, namespace: str | None, name: str) -> None:
        """Drop what we wrote about objects of this name (the owner is gone)."""
        for key in [k for k in self._written if k[2] == namespace and k[3] == name]:
            del self._written[key]

