"""Kubernetes Events for condition transitions, posted through Kopf's event queue."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import kopf

from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Reason

logger = logging.getLogger(__name__)

NORMAL: Final = "Normal"
WARNING: Final = "Warning"

# Reasons that mean "something is wrong and a person may need to act".
WARNING_REASONS: Final = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.FAILED,
        Reason.BACKOFF_LIMIT_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.PERMANENT_ERROR,
        Reason.POD_RESTARTED,
        Reason.POD_MISSING,
        Reason.POD_START_TIMEOUT,
        Reason.REFERENCE_NOT_FOUND,
        Reason.REFERENCE_FAILED,
        Reason.CONVERSION_FAILED,
        Reason.CRASH_LOOP,
        Reason.MODEL_LOAD_FAILED,
        Reason.UNSCHEDULABLE,
        Reason.IMAGE_PULL_FAILED,
        Reason.MINIMUM_REPLICAS_UNAVAILABLE,
        Reason.ANALYSIS_FAILED,
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        Reason.AUTOSCALER_NOT_READY,
        Reason.MAX_REPLICAS_ABOVE_CAPACITY,
        Reason.STORAGE_SECRET_MISSING,
        Reason.AUTH_SECRET_MISSING,
    }
)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


# Conditions whose first appearance as True is news (the resource reached its goal);
# a Normal first appearance of any other condition (Valid, SourceReady, a Ready=False
# while pods start, ...) is what every new resource goes through, and says nothing
# `kubectl get` does not: no Event, and one request less per condition per resource.
MILESTONES: Final = frozenset({ConditionType.READY, ConditionType.SUCCEEDED, ConditionType.CANARY_PROMOTED})


def transition_events(
    old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any], condition_types: Iterable[str]
) -> list[Event]:
    """One Event per condition of `condition_types` whose status or reason changed.

    Warnings always; Normal transitions when a condition changes, or when a
    milestone condition first appears as True.
    """
    events = []
    for condition in st.transitions(old_status, new_status, condition_types):
        reason = str(condition.get("reason"))
        kind = WARNING if reason in WARNING_REASONS else NORMAL
        before = st.get_condition(old_status, str(condition["type"]))
        first = before is None
        if condition["type"] == ConditionType.STALLED and condition.get("status") != st.TRUE and (
            before is None or before.get("status") != st.TRUE
        ):
            # Stalled stays False and takes Reconciling's reason (set_kstatus): the same news as the
            # summary condition's transition, which is posted; a second Warning would say it again.
            continue
        if kind == NORMAL and first and not (condition.get("status") == st.TRUE and condition["type"] in MILESTONES):
            continue
        message = f"{condition['type']}={condition['status']}"
        if condition.get("message"):
            message += f": {condition['message']}"
        events.append(Event(kind, reason, message))
    return events


def post(body: Mapping[str, Any], events: Iterable[Event]) -> None:
    """Queue Events about `body`; outside a running operator (unit tests) they are only logged."""
    for event in events:
        try:
            kopf.event(cast(Any, dict(body)), type=event.type, reason=event.reason, message=st.shorten(event.message))
        except LookupError:
            logger.info("event %s %s: %s", event.type, event.reason, event.message)
