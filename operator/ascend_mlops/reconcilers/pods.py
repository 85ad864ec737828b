"""Reading pods the way a kubelet reports them: phase, exit code, termination message, why it waits,
and which of them have waited too long to start (pure: the caller brings the time and the Events)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants

PENDING: Final = "Pending"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
UNKNOWN: Final = "Unknown"

IMAGE_PULL_REASONS: Final = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERROR_REASONS: Final = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# Waiting reasons that say only "not yet": why, if anyone says, is in the pod's Events
# (FailedMount, FailedCreatePodSandBox, FailedAttachVolume, ...).
GENERIC_WAITING_REASONS: Final = frozenset({"", "ContainerCreating", "PodInitializing"})
# Warnings about a pod that say nothing about why a scheduled pod does not start.
NOT_A_START_REASON: Final = frozenset({"FailedScheduling"})
STUCK_PODS_NAMED: Final = 3  # pods a start-timeout message describes; the rest are counted


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    message: str


@dataclass(frozen=True)
class PodState:
    name: str
    index: int
    attempt: int
    phase: str
    deleting: bool
    ready: bool
    restarts: int
    terminated: Terminated | None  # current state, or for a failed pod the last known
    last_terminated: Terminated | None  # previous run of a restarted container
    waiting_reason: str
    waiting_message: str
    unschedulable: str  # scheduler's message when it cannot place the pod
    reason: str  # pod-level reason (Evicted, ...)
    message: str  # pod-level message
    uid: str = ""
    created_at: datetime.datetime | None = None  # metadata.creationTimestamp
    scheduled_at: datetime.datetime | None = None  # lastTransitionTime of PodScheduled=True

    @property
    def active(self) -> bool:
        return self.phase in (PENDING, RUNNING, UNKNOWN) and not self.deleting


def _int_label(labels: Mapping[str, str], key: str) -> int:
    try:
        return int(labels.get(key, "0"))
    except ValueError:
        return 0


def _terminated(state: Mapping[str, Any] | None) -> Terminated | None:
    term = (state or {}).get("terminated")
    if not isinstance(term, Mapping):
        return None
    code = term.get("exitCode")
    return Terminated(
        exit_code=int(code) if isinstance(code, int) else -1,
        reason=str(term.get("reason") or ""),
        message=str(term.get("message") or ""),
    )


def container_status(pod: Mapping[str, Any], container: str | None = None) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for item in statuses:
        if container is None or item.get("name") == container:
            return item if isinstance(item, Mapping) else {}
    return {}


def pod_state(pod: Mapping[str, Any], container: str | None = None) -> PodState:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    cs = container_status(pod, container)
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    unschedulable = ""
    scheduled_at = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            unschedulable = str(condition.get("message") or condition.get("reason") or "unschedulable")
        elif condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            scheduled_at = st.parse_timestamp(condition.get("lastTransitionTime"))
    return PodState(
        name=str(meta.get("name") or ""),
        index=_int_label(labels, constants.LABEL_REPLICA_INDEX),
        attempt=_int_label(labels, constants.LABEL_ATTEMPT),
        phase=str(status.get("phase") or PENDING),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=bool(cs.get("ready")),
        restarts=int(cs.get("restartCount") or 0),
        terminated=_terminated(state),
        last_terminated=_terminated(cs.get("lastState")),
        waiting_reason=str(waiting.get("reason") or ""),
        waiting_message=str(waiting.get("message") or ""),
        unschedulable=unschedulable,
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        uid=str(meta.get("uid") or ""),
        created_at=st.parse_timestamp(meta.get("creationTimestamp")),
        scheduled_at=scheduled_at,
    )


def pending_explanation(state: PodState) -> str:
    """Why a pod is not running yet, in words a user can act on ("" if nothing is wrong)."""
    if state.unschedulable:
        return f"pod {state.name} cannot be scheduled: {state.unschedulable}"
    if state.waiting_reason in IMAGE_PULL_REASONS:
        return f"pod {state.name} cannot pull its image ({state.waiting_reason}): {state.waiting_message}".rstrip(": ")
    if state.waiting_reason in CONFIG_ERROR_REASONS:
        return f"pod {state.name} cannot start ({state.waiting_reason}): {state.waiting_message}".rstrip(": ")
    return ""


# --- pods that do not start -------------------------------------------------------------------
@dataclass(frozen=True)
class SlowStart:
    """A pod still not running `waited` seconds after it was `since` ("scheduled" or "created")."""

    state: PodState
    waited: float
    since: str


def start_clock(state: PodState) -> tuple[datetime.datetime, str] | None:
    """When a pod's start began (and what began it), or None when it is not waiting to start.

    Only Pending pods wait to start; one the scheduler cannot place says so
    itself (Unschedulable) and is not counted here. The clock starts when the
    pod was bound to a node (PodScheduled=True), else when it was created (a
    status with no PodScheduled condition yet: no scheduler has seen it).
    """
    if state.phase != PENDING or state.deleting or state.unschedulable:
        return None
    if state.scheduled_at is not None:
        return state.scheduled_at, "scheduled"
    if state.created_at is not None:
        return state.created_at, "created"
    return None


def slow_starts(
    states: Iterable[PodState], now: datetime.datetime, timeout: float
) -> tuple[list[SlowStart], float | None]:
    """The pods not running `timeout` seconds after their start clock began (longest waiting first),
    and the seconds until the next of the others reaches its deadline (None: no other waits)."""
    slow: list[SlowStart] = []
    next_deadline: float | None = None
    for state in states:
        clock = start_clock(state)
        if clock is None:
            continue
        waited = (now - clock[0]).total_seconds()
        if waited >= timeout:
            slow.append(SlowStart(state, waited, clock[1]))
        else:
            left = timeout - waited
            next_deadline = left if next_deadline is None else min(next_deadline, left)
    slow.sort(key=lambda s: (-s.waited, s.state.name))
    return slow, next_deadline


def status_reason(state: PodState) -> tuple[str, str] | None:
    """The kubelet's reason in the pod's own status (ErrImageNeverPull, CreateContainerConfigError, ...),
    or None when it says only that the container is being created."""
    if state.waiting_reason in GENERIC_WAITING_REASONS:
        return None
    return state.waiting_reason, state.waiting_message


_NEVER: Final = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _event_time(event: Mapping[str, Any]) -> datetime.datetime:
    """When an Event was last seen: a series' last observation, lastTimestamp, eventTime, ..."""
    series = event.get("series") or {}
    meta = event.get("metadata") or {}
    times = (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
             event.get("firstTimestamp"), meta.get("creationTimestamp"))
    return max((t for t in map(st.parse_timestamp, times) if t is not None), default=_NEVER)


def newest_warning(events: Iterable[Mapping[str, Any]], state: PodState) -> tuple[str, str] | None:
    """(reason, message) of the newest Warning Event about this pod (this one: its uid, where both carry one)."""
    best: tuple[datetime.datetime, str, str] | None = None
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("type") != "Warning" or involved.get("name") != state.name or involved.get("kind", "Pod") != "Pod":
            continue
        if state.uid and involved.get("uid") and involved.get("uid") != state.uid:
            continue  # about an earlier pod of the same name
        reason = str(event.get("reason") or "")
        if not reason or reason in NOT_A_START_REASON:
            continue
        when = _event_time(event)
        if best is None or when >= best[0]:
            best = (when, reason, str(event.get("message") or "").strip())
    return None if best is None else (best[1], best[2])


def duration(seconds: float) -> str:
    """45s, 5m7s, 2h3m."""
    total = max(int(seconds), 0)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60}s"
    return f"{total // 3600}h{total % 3600 // 60}m"


def slow_start_message(slow: SlowStart, reason: tuple[str, str] | None) -> str:
    """`pod <name> has not started <duration> after it was scheduled: <kubelet reason>: <its message>`."""
    state = slow.state
    head = f"pod {state.name} has not started {duration(slow.waited)} after it was {slow.since}"
    if reason is not None:
        return f"{head}: {reason[0]}: {reason[1]}".rstrip(": ")
    waiting = state.waiting_reason or state.phase
    return f"{head} (still {waiting}; neither its status nor its Events say why: kubectl describe pod {state.name})"


def slow_starts_message(messages: Sequence[str], total: int) -> str:
    """The messages of the first pods (STUCK_PODS_NAMED), and how many more there are."""
    more = total - len(messages)
    return "; ".join(messages) + (f"; and {more} more pod(s)" if more > 0 else "")
