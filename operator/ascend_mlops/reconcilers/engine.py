"""What the reconcilers share while the operator runs: the API client, settings,
per-object serialisation, requeue timers, the reference graph and status writes."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from ascend_mlops import events, metrics
from ascend_mlops import status as st
from ascend_mlops.api import constants
from ascend_mlops.builders.common import Owner
from ascend_mlops.kube import ApiError, Conflict, KubeClient, matches_labels, namespace_terminating
from ascend_mlops.reconcilers.cache import Cache
from ascend_mlops.settings import Settings

logger = logging.getLogger(__name__)

MAX_ERROR_BACKOFF: Final = 60.0
# How long a discovery answer (is KEDA installed?) and the nodes' device count are reused.
CLUSTER_FACTS_TTL: Final = 60.0
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Key:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def plural(self) -> str:
        return constants.PLURALS[self.kind]


@dataclass(frozen=True)
class Result:
    """What a reconciliation asks for next: run again after `requeue_after` seconds, or wait for events."""

    requeue_after: float | None = None


Reconciler = Callable[["Engine", Key], Awaitable[Result]]


@dataclass
class Snapshot:
    """One reconciliation's view of its object: the body, and the status being built from it."""

    body: dict[str, Any]
    meta: dict[str, Any]
    owner: Owner
    now: datetime.datetime
    old_status: dict[str, Any]
    status: dict[str, Any]
    conditions: st.Conditions


async def snapshot(rt: Engine, key: Key) -> Snapshot | None:
    """Read the object; None when it is gone (forgotten) or being deleted (its children go with it)."""
    body = await rt.get(key)
    if body is None:
        rt.forget(key)
        return None
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    now = rt.clock()
    old_status: dict[str, Any] = dict(body.get("status") or {})
    return Snapshot(
        body=body,
        meta=meta,
        owner=Owner.from_body(body),
        now=now,
        old_status=old_status,
        status=dict(old_status),
        conditions=st.Conditions(old_status.get("conditions"), meta.get("generation"), now),
    )


class Engine:
    """One per operator run (kept in Kopf's memo)."""

    def __init__(
        self,
        settings: Settings,
        client: KubeClient,
        *,
        clock: Callable[[], datetime.datetime] = st.now,
    ) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self.reconcilers: dict[str, Reconciler] = {}
        self.phases = metrics.PhaseTracker()
        self._locks: dict[Key, asyncio.Lock] = {}
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._errors: dict[Key, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dependents: dict[Key, set[Key]] = {}  # referenced -> objects that reference it
        self._references: dict[Key, set[Key]] = {}  # object -> what it references
        self._slots: dict[Key, dict[str, set[Key]]] = {}  # object -> field -> what that field references
        self._facts: dict[str, tuple[float, Any]] = {}  # cluster facts: name -> (expiry, value)
        self._closed = False
        self.cache = Cache()  # the watches' indices, attached by the first handler call (main.py)

    # --- scheduling --------------------------------------------------------------------
    async def reconcile(self, key: Key) -> None:
        """Reconcile `key` now, one reconciliation per object at a time; never raises."""
        if self._closed:
            return
        reconciler = self.reconcilers.get(key.kind)
        if reconciler is None:
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            try:
                result = await reconciler(self, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = self._errors.get(key, 0) + 1
                self._errors[key] = failures
                delay = min(MAX_ERROR_BACKOFF, 0.5 * 2 ** (failures - 1))
                level = logging.WARNING if isinstance(exc, ApiError) else logging.ERROR
                if namespace_terminating(exc):  # the namespace's deletion removes the object soon
                    level = logging.INFO
                logger.log(level, "%s: reconcile failed (%s); retrying in %.1fs", key, exc, delay,
                           exc_info=not isinstance(exc, ApiError))
                metrics.RECONCILES.labels(kind=key.kind, result="error").inc()
                metrics.RECONCILE_ERRORS.labels(kind=key.kind).inc()
                self.requeue(key, delay)
            else:
                self._errors.pop(key, None)
                metrics.RECONCILES.labels(kind=key.kind, result="ok").inc()
                if result.requeue_after is not None:
                    self.requeue(key, max(result.requeue_after, 0.0))
            finally:
                metrics.RECONCILE_DURATION.labels(kind=key.kind).observe(time.perf_counter() - started)

    def poke(self, key: Key) -> None:
        """Reconcile `key` soon, in the background."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.reconcile(key), name=f"reconcile {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def requeue(self, key: Key, delay: float) -> None:
        """Reconcile `key` after `delay` seconds (the earliest pending request wins)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        existing = self._timers.get(key)
        if existing is not None:
            if existing[0] <= when and not existing[1].cancelled():
                return
            existing[1].cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.poke(key)

        self._timers[key] = (when, loop.call_at(when, fire))

    def forget(self, key: Key) -> None:
        """The object is gone: drop its timers, references and metrics."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        self._errors.pop(key, None)
        self._slots.pop(key, None)
        self.cache.forget_written(key.namespace, key.name)
        self.set_references(key, ())
        self.phases.forget(key.kind, key.namespace, key.name)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            self._locks.pop(key, None)

    async def close(self) -> None:
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.phases.clear()

    # --- references between objects ------------------------------------------------------
    def set_references(self, key: Key, referenced: Iterable[Key], slot: str = "") -> None:
        """Record what `key` reads (per `slot`: an object may read for several fields), so a change there wakes `key` up."""
        slots = self._slots.setdefault(key, {})
        slots[slot] = set(referenced)
        new = set().union(*slots.values())
        for old in self._references.get(key, set()) - new:
            self._dependents.get(old, set()).discard(key)
        for ref in new:
            self._dependents.setdefault(ref, set()).add(key)
        if new:
            self._references[key] = new
        else:
            self._references.pop(key, None)
            self._slots.pop(key, None)

    def dependents(self, key: Key) -> set[Key]:
        return set(self._dependents.get(key, set()))

    def poke_dependents(self, key: Key) -> None:
        for dependent in sorted(self.dependents(key)):
            self.poke(dependent)

    # --- facts about the cluster, read now and then ---------------------------------------
    async def fact(self, name: str, load: Callable[[], Awaitable[T]], ttl: float = CLUSTER_FACTS_TTL) -> T:
        """`load()`'s answer, reused for `ttl` seconds (for what every reconciliation would otherwise re-read)."""
        now = time.monotonic()
        cached = self._facts.get(name)
        if cached is not None and cached[0] > now:
            return cast(T, cached[1])
        value = await load()
        self._facts[name] = (now + ttl, value)
        return value

    async def served(self, api_version: str, plural: str) -> bool:
        """Whether the cluster serves `plural` in `api_version` (a CRD that may or may not be installed)."""
        resources = await self.fact(f"discovery {api_version}", lambda: self.client.api_resources(api_version))
        return plural in resources

    # --- API helpers ----------------------------------------------------------------------
    async def get(self, key: Key) -> dict[str, Any] | None:
        return await self.read(constants.API_VERSION, key.plural, key.namespace, key.name)

    async def read(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """An object as the watches last saw it (or as we last wrote it); from the API server if no watch covers its kind."""
        if self.cache.covers(api_version, plural):
            return self.cache.get(api_version, plural, namespace, name)
        return await self.client.get(api_version, plural, namespace, name)

    async def list_children(
        self, owner: Owner, api_version: str, plural: str, labels: Mapping[str, str], *, direct: bool = True
    ) -> list[dict[str, Any]]:
        """Children of `owner` with `labels`.

        Direct children must carry `owner` in their owner references (which excludes
        leftovers of a deleted namesake); indirect ones (a Deployment's pods, owned by
        a ReplicaSet) are recognised by their labels only.
        """
        owner_kind, owner_name = labels.get(constants.LABEL_OWNER_KIND), labels.get(constants.LABEL_OWNER_NAME)
        if self.cache.covers(api_version, plural) and owner_kind and owner_name:
            candidates = self.cache.owned(api_version, plural, owner.namespace, owner_kind, owner_name)
            items = [item for item in candidates if matches_labels(item, labels)]
        else:
            items = await self.client.list(api_version, plural, owner.namespace, labels)
        return [item for item in items if not direct or owned_by(item, owner)]

    async def create_child(self, owner: Owner, api_version: str, plural: str, body: Mapping[str, Any]) -> bool:
        """Create a child; if it exists already and is ours, adopt it. True when created."""
        name = body["metadata"]["name"]
        try:
            created = await self.client.create(api_version, plural, owner.namespace, body)
        except Conflict:
            existing = await self.client.get(api_version, plural, owner.namespace, name)
            if existing is None:
                raise  # deleted in between; the next reconciliation creates it
            self.cache.wrote(api_version, plural, existing, own=False)
            if not owned_by(existing, owner):
                raise ChildConflict(
                    f"{body.get('kind')} {owner.namespace}/{name} already exists and does not belong to "
                    f"{owner.kind} {owner.name}; delete or rename it"
                ) from None
            return False
        self.cache.wrote(api_version, plural, created)
        metrics.CHILDREN_CREATED.labels(kind=owner.kind, child=str(body.get("kind"))).inc()
        return True

    async def replace_child(self, owner: Owner, api_version: str, plural: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the child (with the resourceVersion read: a concurrent change is a 409)."""
        replaced = await self.client.replace(api_version, plural, owner.namespace, name, body)
        self.cache.wrote(api_version, plural, replaced)
        return replaced

    async def delete_child(self, owner: Owner, api_version: str, plural: str, name: str) -> bool:
        deleted = await self.client.delete(api_version, plural, owner.namespace, name)
        self.cache.deleted(api_version, plural, owner.namespace, name)
        return deleted

    async def write_status(
        self,
        key: Key,
        body: Mapping[str, Any],
        new_status: dict[str, Any],
        event_types: Iterable[str],
    ) -> None:
        """Patch status if it changed, post Events for condition transitions, update metrics."""
        old_status = body.get("status") or {}
        generation = (body.get("metadata") or {}).get("generation")
        if generation is not None:
            new_status["observedGeneration"] = generation
        self.phases.observe(key.kind, key.namespace, key.name, new_status.get("phase"))
        if not st.status_changed(old_status, new_status):
            return
        patched = await self.client.patch(
            constants.API_VERSION,
            key.plural,
            key.namespace,
            key.name,
            st.status_patch(old_status, new_status),
            subresource="status",
        )
        if patched:
            self.cache.wrote(constants.API_VERSION, key.plural, patched)
        events.post(body, events.transition_events(old_status, new_status, event_types))


class ChildConflict(Exception):
    """A child's deterministic name is taken by an object the owner does not control."""


def owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs:
        if ref.get("kind") == owner.kind and ref.get("name") == owner.name:
            return not (owner.uid and ref.get("uid") and ref.get("uid") != owner.uid)
    return False
