"""The life of a run-to-completion resource, written once for TrainingJob, ModelConversion and
BatchPrediction.

    invalid spec        -> Valid False, Succeeded False, Stalled (until the spec is edited)
    waiting for a ref   -> SourceReady False, phase Waiting (Stalled if the reference failed)
    pods                -> jobs.drive: attempts, retries, deadline, pod-start timeout
    pending / running   -> Running, Succeeded Unknown, Reconciling; the kind's progress
    finished            -> Succeeded True/False once; the clean-pod policy and the TTL after

A finished job keeps its result whatever its spec becomes. Each reconcile writes the
status once (a finishing one writes it before the clean-pod policy deletes pods,
whose termination messages hold the result). A kind declares only what differs:
the methods of JobKind.
"""

from __future__ import annotations

import abc
import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import SpecError, StorageOptions, StorageURI
from ascend_mlops.reconcilers import credentials, jobs
from ascend_mlops.reconcilers.engine import ChildConflict, Engine, Key, Result, Snapshot, snapshot
from ascend_mlops.reconcilers.references import Waiting

S = TypeVar("S")

CONFLICT_RETRY_SECONDS: Final = 30.0
# The conditions whose transitions become Events.
JOB_EVENT_CONDITIONS: Final = (ConditionType.VALID, ConditionType.SUCCEEDED, ConditionType.RESTARTING, ConditionType.STALLED)
WAITING_JOB_EVENT_CONDITIONS: Final = (ConditionType.VALID, ConditionType.SOURCE_READY, *JOB_EVENT_CONDITIONS[1:])


class JobSpec(Protocol):
    """What every job kind's spec has."""

    @property
    def backoff_limit(self) -> int: ...
    @property
    def active_deadline_seconds(self) -> int | None: ...
    @property
    def storage(self) -> StorageOptions: ...


class JobKind(abc.ABC, Generic[S]):
    """One reconcile of one job kind: what it parses, plans, reports and cleans up."""

    what: ClassVar[str]  # for messages: "training", "conversion", ...
    component: ClassVar[str]
    container: ClassVar[str]
    event_conditions: ClassVar[tuple[str, ...]] = JOB_EVENT_CONDITIONS

    def __init__(self, rt: Engine, key: Key, snap: Snapshot) -> None:
        self.rt = rt
        self.key = key
        self.snap = snap
        self.owner = snap.owner

    @abc.abstractmethod
    def parse(self, raw: Any) -> S:
        """The spec, or raise SpecError naming the field."""

    @abc.abstractmethod
    async def plan(self, spec: S, status: dict[str, Any], conditions: st.Conditions) -> jobs.JobPlan:
        """The pods to run; raise Waiting while what they need is not there yet."""

    def pods(
        self,
        spec: JobSpec,
        workers: int,
        build_pods: Callable[[int], list[dict[str, Any]]],
        locations: Iterable[StorageURI | None],
        **options: Any,
    ) -> jobs.JobPlan:
        """The plan for `workers` pods: retries and deadline from the spec; created once the storage
        Secret for `locations` is complete. `options`: the rest of JobPlan's fields."""
        rt, namespace, uris = self.rt, self.owner.namespace, tuple(locations)
        return jobs.JobPlan(
            what=self.what,
            component=self.component,
            workers=workers,
            backoff_limit=spec.backoff_limit,
            deadline_seconds=spec.active_deadline_seconds,
            build_pods=build_pods,
            container=self.container,
            precheck=lambda: credentials.check_storage_secret(rt, namespace, uris, spec.storage),
            **options,
        )

    @abc.abstractmethod
    async def succeeded(self, spec: S, outcome: jobs.JobOutcome, status: dict[str, Any]) -> str:
        """Record the result in `status`; the Succeeded condition's message."""

    async def failed(self, spec: S, outcome: jobs.JobOutcome, status: dict[str, Any]) -> str:
        """Record what the failure left in `status`; the reason of the Succeeded=False condition."""
        return outcome.reason

    async def progress(self, outcome: jobs.JobOutcome, status: dict[str, Any]) -> float | None:
        """Update status.progress of a pending or running job; how soon to read it again."""
        return None

    def note(self, status: Mapping[str, Any]) -> str:
        """Appended to the messages of a pending or running job."""
        return ""

    def clean_pod_policy(self, spec: S | None) -> tuple[str, list[str]]:
        """The policy for a finished job's pods, and the Services to delete with them."""
        return "Running", []

    def ttl(self, spec: S | None) -> int | None:
        return None


def is_finished(status: Mapping[str, Any] | None) -> bool:
    return bool((status or {}).get("completionTime"))


async def reconcile(rt: Engine, key: Key, kind: type[JobKind[S]]) -> Result:
    snap = await snapshot(rt, key)
    if snap is None:
        return Result()
    job = kind(rt, key, snap)
    status, conditions = snap.status, snap.conditions
    finished = is_finished(snap.old_status)
    try:
        spec = job.parse(snap.body.get("spec"))
    except SpecError as exc:
        if finished:
            return await _settle(job, None, written=False)
        mark_invalid(status, conditions, str(exc))
        return await _write(job, Result())  # an edit of the spec wakes us up
    conditions.set(ConditionType.VALID, st.TRUE, Reason.SPEC_VALID, "")
    if finished:
        return await _settle(job, spec, written=False)
    try:
        plan = await job.plan(spec, status, conditions)
    except Waiting as waiting:
        mark_waiting(status, conditions, waiting)
        return await _write(job, Result())  # the reference's change wakes us up
    try:
        outcome = await jobs.drive(rt, snap.owner, plan, status, conditions, snap.now)
    except ChildConflict as exc:
        mark_child_conflict(status, conditions, exc)
        return await _write(job, Result(requeue_after=CONFLICT_RETRY_SECONDS))
    if outcome.state in (jobs.STATE_SUCCEEDED, jobs.STATE_FAILED):
        if outcome.state == jobs.STATE_SUCCEEDED:
            reason, message = Reason.SUCCEEDED, await job.succeeded(spec, outcome, status)
        else:
            reason, message = await job.failed(spec, outcome, status), outcome.message
        mark_finished(status, conditions, snap.now, outcome.state == jobs.STATE_SUCCEEDED, reason, message)
        await _write(job, Result())
        return await _settle(job, spec, written=True)
    again = await job.progress(outcome, status)
    mark_active(status, conditions, outcome, job.note(status))
    return await _write(job, Result(requeue_after=jobs.earliest(outcome.requeue_after, again)))


async def _write(job: JobKind[Any], result: Result) -> Result:
    await job.rt.write_status(job.key, job.snap.body, job.snap.status, job.event_conditions)
    return result


async def _settle(job: JobKind[S], spec: S | None, written: bool) -> Result:
    """A finished job: apply the clean-pod policy and the TTL; nothing else changes."""
    policy, services = job.clean_pod_policy(spec)
    await jobs.cleanup(job.rt, job.owner, job.component, policy, services)
    status = job.snap.status
    if not written:
        status["conditions"] = job.snap.conditions.to_list()
        await _write(job, Result())
    return await jobs.expire_after_ttl(job.rt, job.key, status, job.ttl(spec), job.snap.now)


def mark_invalid(status: dict[str, Any], conditions: st.Conditions, message: str) -> None:
    conditions.set(ConditionType.VALID, st.FALSE, Reason.INVALID_SPEC, message)
    conditions.set(ConditionType.SUCCEEDED, st.FALSE, Reason.INVALID_SPEC, message)
    st.set_kstatus(conditions, reconciling=None, stalled=Reason.INVALID_SPEC, message=message)
    status.update(phase=Phase.INVALID, conditions=conditions.to_list())


def mark_waiting(status: dict[str, Any], conditions: st.Conditions, waiting: Waiting) -> None:
    """A reference not usable yet (Reconciling), or failed for good (Stalled until it changes)."""
    conditions.set(ConditionType.SOURCE_READY, st.FALSE, waiting.reason, waiting.message)
    summary = st.FALSE if waiting.failed else st.UNKNOWN
    conditions.set(ConditionType.SUCCEEDED, summary, waiting.reason, waiting.message)
    if waiting.failed:
        st.set_kstatus(conditions, reconciling=None, stalled=waiting.reason, message=waiting.message)
    else:
        st.set_kstatus(conditions, reconciling=waiting.reason, stalled=None, message=waiting.message)
    status.update(phase=Phase.WAITING, conditions=conditions.to_list())


def mark_active(status: dict[str, Any], conditions: st.Conditions, outcome: jobs.JobOutcome, note: str) -> None:
    """A job whose pods are starting (Pending) or running."""
    running = outcome.state == jobs.STATE_RUNNING
    message = outcome.message + note
    conditions.set(ConditionType.RUNNING, st.TRUE if running else st.FALSE, outcome.reason, message)
    conditions.set(ConditionType.SUCCEEDED, st.UNKNOWN, outcome.reason, message)
    st.set_kstatus(conditions, reconciling=outcome.reason, stalled=None, message=message)
    status.update(phase=Phase.RUNNING if running else Phase.PENDING, conditions=conditions.to_list())


def mark_child_conflict(status: dict[str, Any], conditions: st.Conditions, exc: Exception) -> None:
    """A child's name is taken by an object this job does not own: stalled until the user removes it."""
    conditions.set(ConditionType.SUCCEEDED, st.UNKNOWN, Reason.RECONCILE_ERROR, str(exc))
    st.set_kstatus(conditions, reconciling=None, stalled=Reason.RECONCILE_ERROR, message=str(exc))
    status.update(phase=Phase.PENDING, conditions=conditions.to_list())


def mark_finished(
    status: dict[str, Any],
    conditions: st.Conditions,
    now: datetime.datetime,
    succeeded: bool,
    reason: str,
    message: str,
) -> None:
    """The status of a job that ended: Succeeded True/False, Running and Restarting off, kstatus settled."""
    status["completionTime"] = st.timestamp(now)
    conditions.set(ConditionType.RUNNING, st.FALSE, reason, "finished")
    conditions.set(ConditionType.SUCCEEDED, st.TRUE if succeeded else st.FALSE, reason, message)
    restarting = conditions.get(ConditionType.RESTARTING)
    if restarting is not None and restarting.get("status") == st.TRUE:
        conditions.set(ConditionType.RESTARTING, st.FALSE, reason, "finished")
    st.set_kstatus(conditions, reconciling=None, stalled=None if succeeded else reason, message=message)
    status.update(phase=Phase.SUCCEEDED if succeeded else Phase.FAILED, conditions=conditions.to_list())
