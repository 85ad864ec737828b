"""Following references between resources: a TrainingJob from a ModelConversion, a
ModelConversion from an InferenceService. A missing or failed reference is a
condition naming the field and the fix, re-evaluated when the reference changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.reconcilers.engine import Engine, Key


class Waiting(Exception):
    """A reference not usable yet (or not at all): the condition to report, and whether for good."""

    def __init__(self, reason: str, message: str, failed: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.failed = failed


@dataclass(frozen=True)
class RefState:
    """Where a referenced object stands: missing, waiting, failed or succeeded."""

    found: bool
    succeeded: bool
    failed: bool
    phase: str
    message: str


def summarize(obj: Mapping[str, Any] | None, summary_type: str = ConditionType.SUCCEEDED) -> RefState:
    if obj is None:
        return RefState(False, False, False, "", "")
    status = obj.get("status") or {}
    condition = st.get_condition(status, summary_type) or {}
    phase = str(status.get("phase") or Phase.PENDING)
    message = str(condition.get("message") or "")
    state = condition.get("status")
    if state == st.TRUE:
        return RefState(True, True, False, phase, message)
    # Failed for good: finished (completionTime) or stalled, e.g. an invalid spec
    # waiting for a fix. Either way nothing will come out until it changes.
    failed = state == st.FALSE or st.condition_is(status, ConditionType.STALLED, st.TRUE)
    return RefState(True, False, bool(failed), phase, message)


@dataclass(frozen=True)
class RefField:
    """A spec field naming a resource that must succeed first, and the fixes a message suggests."""

    path: str
    waiting_reason: str
    not_found_hint: str
    failed_hint: str


async def require_succeeded(rt: Engine, key: Key, ref: Key, field: RefField, slot: str = "") -> dict[str, Any]:
    """The object `field` refers to, once it succeeded; else raise Waiting naming the field and the fix.

    `key` is re-evaluated whenever `ref` changes (its references are set first)."""
    rt.set_references(key, [ref], slot)
    obj = await rt.get(ref)
    state = summarize(obj)
    what = f"{ref.kind} {ref.name!r}"
    if obj is None or not state.found:
        message = f"{field.path}: {what} not found in namespace {key.namespace!r}; {field.not_found_hint}"
        raise Waiting(Reason.REFERENCE_NOT_FOUND, message, failed=False)
    if state.failed:
        message = f"{field.path}: {what} failed ({state.message}); {field.failed_hint}"
        raise Waiting(Reason.REFERENCE_FAILED, message, failed=True)
    if not state.succeeded:
        raise Waiting(field.waiting_reason, f"waiting for {what} to succeed (phase {state.phase})", failed=False)
    return obj


def unusable(field: RefField, ref: Key, detail: str) -> Waiting:
    """The referenced resource succeeded but what this one needs from it is not there: failed until it changes."""
    return Waiting(Reason.REFERENCE_FAILED, f"{field.path}: {ref.kind} {ref.name!r} succeeded but {detail}", failed=True)
