from __future__ import annotations

import datetime

import pytest

from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Reason

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_condition_shape_and_transition_time() -> None:
    c = st.Conditions(None, 3, T0)
    c.set(ConditionType.SUCCEEDED, st.UNKNOWN, Reason.RUNNING, "training")
    first = c.to_list()
    assert first == [
        {
            "type": "Succeeded",
            "status": "Unknown",
            "reason": "Running",
            "message": "training",
            "lastTransitionTime": "2024-05-01T12:00:00Z",
            "observedGeneration": 3,
        }
    ]
    # Same status later: the transition time stays, the message updates.
    later = st.Conditions(first, 4, T1)
    later.set(ConditionType.SUCCEEDED, st.UNKNOWN, Reason.RUNNING, "epoch 2")
    assert later.get("Succeeded") == {**first[0], "message": "epoch 2", "observedGeneration": 4}
    # A status change moves it.
    later.set(ConditionType.SUCCEEDED, st.TRUE, Reason.SUCCEEDED, "done")
    assert later.get("Succeeded")["lastTransitionTime"] == "2024-05-01T12:05:00Z"  # type: ignore[index]


def test_condition_rejects_bad_values() -> None:
    c = st.Conditions([], None, T0)
    with pytest.raises(ValueError):
        c.set("Ready", "Yes", "Fine")
    with pytest.raises(ValueError):
        c.set("Ready", st.TRUE, "")
    with pytest.raises(ValueError):
        c.set("Ready", st.TRUE, "lowercase")


def test_kstatus_conditions_are_exclusive() -> None:
    c = st.Conditions([], 1, T0)
    st.set_kstatus(c, reconciling="Running", stalled=None, message="working")
    assert c.get("Reconciling")["status"] == "True"  # type: ignore[index]
    assert c.get("Stalled")["status"] == "False"  # type: ignore[index]
    st.set_kstatus(c, reconciling="Running", stalled=Reason.INVALID_SPEC, message="bad")
    assert c.get("Reconciling")["status"] == "False"  # type: ignore[index]
    assert c.get("Stalled") is not None and c.get("Stalled")["reason"] == "InvalidSpec"  # type: ignore[index]
    st.set_kstatus(c, reconciling=None, stalled=None)
    assert {x["status"] for x in c.to_list()} == {"False"}


def test_status_patch_nulls_removed_keys_and_skips_unchanged() -> None:
    old = {"phase": "Running", "lastFailure": {"attempt": 0}, "attempts": 1}
    new = {"phase": "Succeeded", "attempts": 1}
    assert st.status_changed(old, new)
    assert st.status_patch(old, new) == {"status": {"lastFailure": None, "phase": "Succeeded"}}
    assert not st.status_changed(new, dict(new))


def test_transitions_report_status_or_reason_changes() -> None:
    c = st.Conditions([], 1, T0)
    c.set("Succeeded", st.UNKNOWN, "Pending")
    old = {"conditions": c.to_list()}
    c.set("Succeeded", st.UNKNOWN, "Running")
    mid = {"conditions": c.to_list()}
    assert [x["reason"] for x in st.transitions(old, mid, ["Succeeded"])] == ["Running"]
    assert st.transitions(mid, mid, ["Succeeded"]) == []
    assert st.transitions(None, mid, ["Succeeded", "Ready"])[0]["type"] == "Succeeded"


def test_messages_keep_their_end() -> None:
    text = "x" * 3000 + "the cause"
    assert st.shorten(text).endswith("the cause")
    assert len(st.shorten(text)) == st.MESSAGE_LIMIT


def test_timestamps_round_trip() -> None:
    assert st.parse_timestamp(st.timestamp(T0)) == T0
    assert st.parse_timestamp("garbage") is None
