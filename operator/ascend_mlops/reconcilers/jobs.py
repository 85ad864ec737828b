"""Run-to-completion pods with retries: the pods of TrainingJob, ModelConversion and BatchPrediction
(lifecycle.py writes their status around this).

An *attempt* is one set of worker pods (one pod for a conversion). Pods are named
and labelled by attempt, so the attempt in progress is recovered from the pods
themselves after an operator restart. The success policy says when the job
succeeded: SUCCESS_CHIEF (worker 0's success is the job's, Kubeflow's default,
for training and conversion) or SUCCESS_ALL_WORKERS (every pod of the attempt
succeeded, for the shards of a batch). A failed pod ends the attempt: all its
pods are stopped (collective training cannot continue without a worker) and, if
the exit code is retryable and `backoffLimit` allows, the next attempt starts
with every pod again (a batch's shards skip the results they already wrote).
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import contract
from ascend_mlops.api.constants import (
    API_VERSION,
    LABEL_REPLICA_INDEX,
    ConditionType,
    Reason,
)
from ascend_mlops.builders.common import Owner, selector_labels
from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers import podstart
from ascend_mlops.reconcilers.credentials import Blocked
from ascend_mlops.reconcilers.engine import Engine, Key, Result

STATE_PENDING: Final = "Pending"
STATE_RUNNING: Final = "Running"
STATE_SUCCEEDED: Final = "Succeeded"
STATE_FAILED: Final = "Failed"

SUCCESS_CHIEF: Final = "chief"
SUCCESS_ALL_WORKERS: Final = "all_workers"

EXIT_MEANINGS: Final = {
    contract.EXIT_USAGE: "bad command line",
    contract.EXIT_INVALID_DATASET: "invalid dataset",
    contract.EXIT_INVALID_PARAMETERS: "invalid parameters",
    contract.EXIT_INVALID_MODEL: "invalid model",
    contract.EXIT_TOOLKIT_MISSING: "Ascend toolkit missing",
    contract.EXIT_STORAGE_UNAVAILABLE: "object storage unreachable",
    137: "killed (out of memory or evicted)",
    143: "terminated",
}


@dataclass
class JobPlan:
    what: str  # "training" or "conversion", for messages
    component: str
    workers: int
    backoff_limit: int
    deadline_seconds: int | None
    build_pods: Callable[[int], list[dict[str, Any]]]  # attempt -> pods
    services: list[dict[str, Any]] = field(default_factory=list)
    container: str | None = None
    # Asked only when pods are about to be created: a reason not to create them yet.
    precheck: Callable[[], Awaitable[Blocked | None]] | None = None
    success_policy: str = SUCCESS_CHIEF


@dataclass
class JobOutcome:
    state: str
    reason: str
    message: str
    summary: dict[str, Any] = field(default_factory=dict)
    requeue_after: float | None = None
    running_chief: str | None = None  # worker 0's pod while it runs: whose log shows progress
    # The current attempt's pods by index: running ones (whose logs show progress) and
    # the decoded termination summaries of the succeeded ones.
    running: dict[int, str] = field(default_factory=dict)
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    meaning = EXIT_MEANINGS.get(code)
    return f"exit code {code}" + (f" ({meaning})" if meaning else "")


def failure_details(state: P.PodState) -> tuple[int | None, str, dict[str, Any]]:
    """Exit code, the best error text and the decoded summary of a failed pod."""
    term = state.terminated or state.last_terminated
    summary = contract.decode_summary(term.message if term else "")
    code = term.exit_code if term else None
    if isinstance(summary.get(contract.SUMMARY_EXIT_CODE), int) and code in (None, -1):
        code = summary[contract.SUMMARY_EXIT_CODE]
    error = str(summary.get(contract.SUMMARY_ERROR) or "")
    if not error and term is not None:
        # Not a JSON summary: with FallbackToLogsOnError this is the log's tail.
        error = term.message.strip() or term.reason
    if not error:
        error = state.message or state.reason or "the pod failed without a message"
    return code, error, summary


async def expire_after_ttl(
    rt: Engine, key: Key, status: dict[str, Any], ttl: int | None, now: datetime.datetime
) -> Result:
    """ttlSecondsAfterFinished: delete the finished resource (its children go with it) once the TTL passed."""
    completed = st.parse_timestamp(status.get("completionTime"))
    if ttl is None or completed is None:
        return Result()
    left = (completed + datetime.timedelta(seconds=ttl) - now).total_seconds()
    if left > 0:
        return Result(requeue_after=left)
    await rt.client.delete(API_VERSION, key.plural, key.namespace, key.name)
    return Result()


async def cleanup(rt: Engine, owner: Owner, plan_component: str, policy: str, services: list[str]) -> None:
    """Apply the clean-pod policy to a finished job (idempotent)."""
    if policy == "None":
        return
    labels = selector_labels(owner, plan_component)
    for pod in await rt.list_children(owner, "v1", "pods", labels):
        state = P.pod_state(pod)
        if state.deleting:
            continue
        if policy == "All" or state.active:
            await rt.delete_child(owner, "v1", "pods", state.name)
    for name in services:
        await rt.delete_child(owner, "v1", "services", name)


@dataclass
class _Attempt:
    """The attempt in progress (0-based) and its pods by index."""

    number: int
    recorded: int  # the attempt status.attempts names
    current: dict[int, P.PodState]
    restarted: bool = False


async def drive(
    rt: Engine,
    owner: Owner,
    plan: JobPlan,
    status: dict[str, Any],
    conditions: st.Conditions,
    now: datetime.datetime,
) -> JobOutcome:
    """Advance the job by one step; updates `status` (attempts, startTime, workers, lastFailure)."""
    at = await _find_attempt(rt, owner, plan, status)
    start = st.parse_timestamp(status.get("startTime"))
    if at.current:
        # What the pods prove is recorded whatever state they are in: an operator
        # killed right after creating them never wrote it, and the next one may
        # find them already finished.
        _record_attempt(status, conditions, plan, at.number, now)
    deadline_left: float | None = None
    if plan.deadline_seconds is not None and start is not None:
        deadline_left = (start + datetime.timedelta(seconds=plan.deadline_seconds) - now).total_seconds()
        if deadline_left <= 0:
            return await _past_deadline(rt, owner, plan, status, at)
    summaries = {index: _summary(s) for index, s in at.current.items() if s.phase == P.SUCCEEDED}
    if _succeeded(plan, at.current, summaries):
        _count_workers(status, at.current.values())
        return JobOutcome(STATE_SUCCEEDED, Reason.SUCCEEDED, "", summary=summaries.get(0, {}), summaries=summaries)
    ended = await _end_failed_attempt(rt, owner, plan, status, conditions, at)
    if ended is not None:
        return ended
    created = await _create_pods(rt, owner, plan, conditions, at, start is not None, deadline_left)
    if isinstance(created, JobOutcome):
        return created
    if start is None and plan.deadline_seconds is not None:
        deadline_left = float(plan.deadline_seconds)
    _record_attempt(status, conditions, plan, at.number, now)
    summaries = {i: summary for i, summary in summaries.items() if i in at.current}
    return await _starting_or_running(rt, owner, plan, status, conditions, at, created, summaries, deadline_left, now)


async def _find_attempt(rt: Engine, owner: Owner, plan: JobPlan, status: dict[str, Any]) -> _Attempt:
    """The attempt in progress, recovered from the pods; whatever runs of older ones is stopped."""
    labels = selector_labels(owner, plan.component)
    states = [P.pod_state(p, plan.container) for p in await rt.list_children(owner, "v1", "pods", labels)]
    recorded = max(int(status.get("attempts") or 1) - 1, 0)
    attempt = max([recorded, *(s.attempt for s in states)])
    for s in states:
        if s.attempt < attempt and s.active:
            await rt.delete_child(owner, "v1", "pods", s.name)
    current = {s.index: s for s in states if s.attempt == attempt and not s.deleting}
    return _Attempt(attempt, recorded, current)


async def _past_deadline(rt: Engine, owner: Owner, plan: JobPlan, status: dict[str, Any], at: _Attempt) -> JobOutcome:
    await _stop(rt, owner, at)
    _count_workers(status, at.current.values())
    return JobOutcome(
        STATE_FAILED,
        Reason.DEADLINE_EXCEEDED,
        f"the {plan.what} ran longer than spec.activeDeadlineSeconds={plan.deadline_seconds}s "
        f"(attempt {at.number + 1}); raise the deadline or make the work smaller",
    )


def _succeeded(plan: JobPlan, current: dict[int, P.PodState], summaries: dict[int, dict[str, Any]]) -> bool:
    if plan.success_policy == SUCCESS_ALL_WORKERS:
        return all(i in summaries for i in range(plan.workers))
    chief = current.get(0)
    return chief is not None and chief.phase == P.SUCCEEDED


async def _stop(rt: Engine, owner: Owner, at: _Attempt) -> None:
    for s in at.current.values():
        if s.active:
            await rt.delete_child(owner, "v1", "pods", s.name)


async def _end_failed_attempt(
    rt: Engine, owner: Owner, plan: JobPlan, status: dict[str, Any], conditions: st.Conditions, at: _Attempt
) -> JobOutcome | None:
    """A failed pod ends the attempt: the job's failure, or (None) the next attempt to start."""
    failed = sorted((s for s in at.current.values() if s.phase == P.FAILED), key=lambda s: s.index)
    if not failed:
        return None
    pod = failed[0]
    code, error, summary = failure_details(pod)
    retryable = code is None or code < 0 or contract.is_retryable_exit(code)
    status["lastFailure"] = {
        "attempt": at.number,
        "pod": pod.name,
        **({"exitCode": code} if code is not None and code >= 0 else {}),
        "reason": (pod.terminated.reason if pod.terminated else "") or pod.reason or "Failed",
        "message": st.shorten(error, 2048),
        "retryable": retryable,
    }
    await _stop(rt, owner, at)
    _count_workers(status, at.current.values())
    failure = f"pod {pod.name} failed with {describe_exit(code)}: {error}"
    if not retryable:
        message = f"{failure}. This error is not retried: fix the spec or the input and create the resource again"
        return JobOutcome(STATE_FAILED, Reason.PERMANENT_ERROR, message, summary=summary)
    if at.number >= plan.backoff_limit:
        message = f"{at.number + 1} attempt(s) failed (spec.backoffLimit={plan.backoff_limit}); the last: {failure}"
        return JobOutcome(STATE_FAILED, Reason.BACKOFF_LIMIT_EXCEEDED, message, summary=summary)
    conditions.set(
        ConditionType.RESTARTING,
        st.TRUE,
        Reason.POD_RESTARTED,
        f"attempt {at.number + 1} failed: pod {pod.name} exited with {describe_exit(code)}: {error}; "
        f"starting attempt {at.number + 2} of {plan.backoff_limit + 1}",
    )
    at.number, at.current, at.restarted = at.number + 1, {}, True
    return None


async def _create_pods(
    rt: Engine,
    owner: Owner,
    plan: JobPlan,
    conditions: st.Conditions,
    at: _Attempt,
    started: bool,
    deadline_left: float | None,
) -> list[str] | JobOutcome:
    """Make sure the attempt's Services and pods exist (create, or adopt what is there): the names
    created, or the outcome of a precheck that says not yet."""
    to_create = [
        pod_body
        for pod_body in plan.build_pods(at.number)
        if int(pod_body["metadata"]["labels"].get(LABEL_REPLICA_INDEX, "0")) not in at.current
    ]
    if to_create and plan.precheck is not None:
        blocked = await plan.precheck()
        if blocked is not None:
            # Nothing is created; a failed attempt is found again (and retried) once unblocked.
            requeue = earliest(blocked.requeue_after, deadline_left)
            return JobOutcome(STATE_PENDING, blocked.reason, blocked.message, requeue_after=requeue)
    for service in plan.services:
        await rt.create_child(owner, "v1", "services", service)
    created = [body["metadata"]["name"] for body in to_create if await rt.create_child(owner, "v1", "pods", body)]
    if created and started and not at.restarted and at.number == at.recorded:
        conditions.set(
            ConditionType.RESTARTING,
            st.TRUE,
            Reason.POD_MISSING,
            f"pod(s) {', '.join(created)} of attempt {at.number + 1} disappeared (deleted or evicted); "
            "created them again",
        )
    return created


async def _starting_or_running(
    rt: Engine,
    owner: Owner,
    plan: JobPlan,
    status: dict[str, Any],
    conditions: st.Conditions,
    at: _Attempt,
    created: list[str],
    summaries: dict[int, dict[str, Any]],
    deadline_left: float | None,
    now: datetime.datetime,
) -> JobOutcome:
    current = at.current
    active = [s for s in current.values() if s.active]
    status["workers"] = {
        "active": len(active) + len(created),
        "succeeded": sum(1 for s in current.values() if s.phase == P.SUCCEEDED),
        "failed": 0,
    }
    running = {i: s.name for i, s in current.items() if s.phase == P.RUNNING and not s.deleting}
    seen = JobOutcome(STATE_PENDING, Reason.PENDING, "", running_chief=running.get(0), running=running, summaries=summaries)
    if not created and len(current) >= plan.workers and all(s.phase in (P.RUNNING, P.SUCCEEDED) for s in current.values()):
        if not at.restarted:
            restarting = conditions.get(ConditionType.RESTARTING)
            if restarting is not None and restarting.get("status") == st.TRUE:
                conditions.set(ConditionType.RESTARTING, st.FALSE, Reason.RUNNING, f"attempt {at.number + 1} is running")
        seen.state, seen.reason = STATE_RUNNING, Reason.RUNNING
        seen.message, seen.requeue_after = f"{plan.workers} pod(s) running (attempt {at.number + 1})", deadline_left
        return seen
    # Pods past ASCEND_MLOPS_POD_START_TIMEOUT: the job's own summary (Succeeded=Unknown, Running=False)
    # takes reason PodStartTimeout, where `kubectl get`, `kubectl wait` and the printer columns look, rather
    # than a condition type of its own; its transition is a Warning Event. Reconciling, not Stalled: the
    # kubelet keeps trying, and a slow image pull or a volume attached late still lets the pod start.
    started = await podstart.check(rt, owner.namespace, current.values(), now)
    seen.requeue_after = earliest(deadline_left, started.requeue_after)
    if started.message:
        seen.reason, seen.message = Reason.POD_START_TIMEOUT, started.message
        return seen
    problems = [msg for s in current.values() if (msg := P.pending_explanation(s))]
    seen.message = "; ".join(problems) if problems else f"waiting for {plan.workers} pod(s) of attempt {at.number + 1} to start"
    return seen


def earliest(*delays: float | None) -> float | None:
    known = [d for d in delays if d is not None]
    return min(known) if known else None


def _record_attempt(status: dict[str, Any], conditions: st.Conditions, plan: JobPlan, attempt: int, now: datetime.datetime) -> None:
    """The attempt whose pods exist (or were just created): its number, its start, the Created condition."""
    status.setdefault("startTime", st.timestamp(now))
    status["attempts"] = attempt + 1
    conditions.set(ConditionType.CREATED, st.TRUE, Reason.CREATED, f"{plan.workers} pod(s) for attempt {attempt + 1}")


def _summary(state: P.PodState) -> dict[str, Any]:
    term = state.terminated or state.last_terminated
    return contract.decode_summary(term.message if term else "")


def _count_workers(status: dict[str, Any], states: Any) -> None:
    states = list(states)
    status["workers"] = {
        "active": sum(1 for s in states if s.active),
        "succeeded": sum(1 for s in states if s.phase == P.SUCCEEDED),
        "failed": sum(1 for s in states if s.phase == P.FAILED),
    }
