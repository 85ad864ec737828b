"""Following references between resources: a TrainingJob from a ModelConversion, a
ModelConversion from an InferenceService. A missing or failed reference is a
condition naming the field and the fix, re-evaluated when the reference changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Phase


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
