"""Reading pods the way a kubelet reports them: phase, exit code, termination message, why it waits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import constants

PENDING: Final = "Pending"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
UNKNOWN: Final = "Unknown"

IMAGE_PULL_REASONS: Final = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERROR_REASONS: Final = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


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
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            unschedulable = str(condition.get("message") or condition.get("reason") or "unschedulable")
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
