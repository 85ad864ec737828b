"""Pods that do not start: which ones, since when, why (pure, with made-up times), and the one bounded Event read."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ascend_mlops import events
from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Reason
from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers import podstart, readiness
from ascend_mlops.reconcilers.canary import Revision
from ascend_mlops.reconcilers.engine import Engine
from ascend_mlops.settings import Settings

T0 = datetime.datetime(2026, 12, 7, 13, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def pod(
    name: str = "job-worker-0", *, phase: str = "Pending", scheduled: float | None = 0.0, created: float = -2.0,
    waiting: tuple[str, str] | None = ("ContainerCreating", ""), uid: str = "uid-1", unschedulable: bool = False,
    deleting: bool = False,
) -> P.PodState:
    conditions = []
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": "0/1 nodes are available: 1 Insufficient huawei.com/Ascend310."})
    elif scheduled is not None:
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": st.timestamp(at(scheduled))})
    container: dict[str, Any] = {"name": "trainer", "ready": False, "restartCount": 0}
    if waiting is not None:
        container["state"] = {"waiting": {"reason": waiting[0], **({"message": waiting[1]} if waiting[1] else {})}}
    meta: dict[str, Any] = {"name": name, "uid": uid, "creationTimestamp": st.timestamp(at(created))}
    if deleting:
        meta["deletionTimestamp"] = st.timestamp(at(created))
    return P.pod_state({"metadata": meta, "status": {"phase": phase, "conditions": conditions, "containerStatuses": [container]}})


def event(reason: str, message: str, *, last: float, pod: str = "job-worker-0", uid: str = "uid-1", type_: str = "Warning") -> dict[str, Any]:
    return {
        "type": type_, "reason": reason, "message": message, "lastTimestamp": st.timestamp(at(last)),
        "involvedObject": {"kind": "Pod", "name": pod, "uid": uid},
    }


# --- which pods, since when -------------------------------------------------------------------
def test_the_clock_starts_when_the_pod_was_scheduled_else_when_it_was_created() -> None:
    state = pod(scheduled=10.0)
    assert state.scheduled_at == at(10) and state.created_at == at(-2)
    assert P.start_clock(state) == (at(10), "scheduled")
    assert P.start_clock(pod(scheduled=None)) == (at(-2), "created")


@pytest.mark.parametrize(
    "state",
    [pod(phase="Running"), pod(phase="Succeeded"), pod(phase="Failed"), pod(unschedulable=True), pod(deleting=True)],
    ids=["running", "succeeded", "failed", "unschedulable", "deleting"],
)
def test_only_scheduled_pending_pods_wait_to_start(state: P.PodState) -> None:
    # Unschedulable pods are reported as such (pending_explanation); the others started or are going.
    assert P.start_clock(state) is None
    assert P.slow_starts([state], at(3600), 300) == ([], None)


def test_slow_starts_are_the_pods_past_the_timeout_and_the_next_deadline_is_the_others() -> None:
    old, young, fresh = pod("a", scheduled=0), pod("b", scheduled=200), pod("c", scheduled=250)
    slow, next_deadline = P.slow_starts([young, fresh, old], at(300), 300)
    assert [(s.state.name, s.waited, s.since) for s in slow] == [("a", 300.0, "scheduled")]
    assert next_deadline == 200.0  # b reaches 300 s at t=500
    assert P.slow_starts([young], at(299), 300) == ([], 201.0)
    slow, next_deadline = P.slow_starts([young, old], at(900), 300)
    assert [s.state.name for s in slow] == ["a", "b"] and next_deadline is None  # longest waiting first


# --- why ------------------------------------------------------------------------------------
def test_the_pods_status_gives_the_reason_unless_it_only_says_creating() -> None:
    never = pod(waiting=("ErrImageNeverPull", 'Container image "localhost/x:1" is not present with pull policy of Never'))
    assert P.status_reason(never) == ("ErrImageNeverPull", 'Container image "localhost/x:1" is not present with pull policy of Never')
    assert P.status_reason(pod(waiting=("ContainerCreating", ""))) is None
    assert P.status_reason(pod(waiting=None)) is None


def test_the_newest_warning_about_this_pod_gives_the_reason() -> None:
    state = pod()
    found = [
        event("FailedMount", "MountVolume.SetUp failed for volume \"data\" : not a directory", last=60),
        event("FailedCreatePodSandBox", "Failed to create pod sandbox: rpc error", last=120),
        event("Pulled", "Container image already present", last=180, type_="Normal"),  # not a Warning
        event("FailedScheduling", "0/1 nodes are available", last=200),  # from before it was placed
        event("FailedMount", "an earlier pod of that name", last=240, uid="uid-0"),
        event("FailedMount", "another pod", last=240, pod="job-worker-1"),
    ]
    assert P.newest_warning(found, state) == ("FailedCreatePodSandBox", "Failed to create pod sandbox: rpc error")
    assert P.newest_warning(found[:1], state) == ("FailedMount", 'MountVolume.SetUp failed for volume "data" : not a directory')
    assert P.newest_warning(found[2:], state) is None
    # A series (events.k8s.io) or a bare eventTime count as when it was seen.
    series = {**event("FailedMount", "newer", last=0), "series": {"lastObservedTime": "2026-12-07T13:05:00.000000Z"}}
    assert P.newest_warning([*found, series], state) == ("FailedMount", "newer")


# --- the message ---------------------------------------------------------------------------------
def test_durations_read_like_kubectl() -> None:
    assert [P.duration(s) for s in (0, 45.9, 60, 307, 3599, 3600, 7380)] == ["0s", "45s", "1m0s", "5m7s", "59m59s", "1h0m", "2h3m"]


def test_the_message_names_the_pod_how_long_and_the_kubelets_reason() -> None:
    slow = P.SlowStart(pod(), 307, "scheduled")
    assert P.slow_start_message(slow, ("FailedMount", 'MountVolume.SetUp failed for volume "data"')) == (
        'pod job-worker-0 has not started 5m7s after it was scheduled: FailedMount: MountVolume.SetUp failed for volume "data"'
    )
    assert P.slow_start_message(slow, ("ErrImageNeverPull", "")) == (
        "pod job-worker-0 has not started 5m7s after it was scheduled: ErrImageNeverPull"
    )
    assert P.slow_start_message(P.SlowStart(pod(), 301, "created"), None) == (
        "pod job-worker-0 has not started 5m1s after it was created (still ContainerCreating; "
        "neither its status nor its Events say why: kubectl describe pod job-worker-0)"
    )
    assert P.slow_starts_message(["pod a ...", "pod b ..."], 2) == "pod a ...; pod b ..."
    assert P.slow_starts_message(["pod a ...", "pod b ...", "pod c ..."], 5) == "pod a ...; pod b ...; pod c ...; and 2 more pod(s)"


def test_the_reason_is_a_warning_event_when_it_first_appears() -> None:
    old = {"conditions": [{"type": ConditionType.SUCCEEDED, "status": "Unknown", "reason": Reason.PENDING, "message": "waiting"}]}
    new = {"conditions": [{"type": ConditionType.SUCCEEDED, "status": "Unknown", "reason": Reason.POD_START_TIMEOUT, "message": "pod x ..."}]}
    assert events.transition_events(old, new, [ConditionType.SUCCEEDED]) == [
        events.Event(events.WARNING, Reason.POD_START_TIMEOUT, "Succeeded=Unknown: pod x ...")
    ]
    # The time it waited changes the message, not the reason: no Event again.
    later = {"conditions": [{**new["conditions"][0], "message": "pod x ... 6m"}]}
    assert events.transition_events(new, later, [ConditionType.SUCCEEDED]) == []
    # Stalled stays False with Reconciling's reason: no second Warning saying the same; a recovery still is news.
    stalled = {"type": ConditionType.STALLED, "status": "False", "reason": Reason.PENDING}
    relabelled = {**stalled, "reason": Reason.POD_START_TIMEOUT}
    assert events.transition_events({"conditions": [stalled]}, {"conditions": [relabelled]}, [ConditionType.STALLED]) == []
    was_stalled = {**stalled, "status": "True", "reason": Reason.MODEL_LOAD_FAILED}
    assert events.transition_events({"conditions": [was_stalled]}, {"conditions": [relabelled]}, [ConditionType.STALLED]) == [
        events.Event(events.WARNING, Reason.POD_START_TIMEOUT, "Stalled=False")
    ]


# --- the check a reconciler makes: Events read only for pods past the deadline whose status says nothing ---
class Client:
    def __init__(self, found: list[dict[str, Any]], fail: bool = False) -> None:
        self.found, self.fail = found, fail
        self.calls: list[tuple[str, str, str | None, dict[str, str], int | None]] = []

    async def list(self, api_version: str, plural: str, namespace: str | None, labels: Any = None, *,
                   fields: dict[str, str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        self.calls.append((api_version, plural, namespace, dict(fields or {}), limit))
        if self.fail:
            raise RuntimeError("403 Forbidden")
        return [e for e in self.found if e["involvedObject"]["name"] == (fields or {}).get("involvedObject.name")]


def runtime(client: Client, timeout: int = 300) -> Engine:
    return cast(Engine, SimpleNamespace(settings=Settings(pod_start_timeout=timeout), client=client))


async def test_before_the_deadline_nothing_is_read_and_the_requeue_is_at_the_deadline() -> None:
    client = Client([])
    result = await podstart.check(runtime(client), "ml", [pod(scheduled=0), pod("b", phase="Running")], at(10))
    assert result == podstart.StartCheck("", requeue_after=290 + podstart.DEADLINE_SLACK)
    assert client.calls == []
    assert await podstart.check(runtime(client), "ml", [pod(phase="Running")], at(10)) == podstart.StartCheck("")


async def test_past_the_deadline_one_bounded_event_list_per_pod_whose_status_says_nothing() -> None:
    client = Client([event("FailedMount", "hostPath type check failed: /data is not a directory", last=5)])
    mounting = pod(scheduled=0)
    pulling = pod("job-worker-1", uid="uid-2", waiting=("ErrImageNeverPull", "not present with pull policy of Never"))
    result = await podstart.check(runtime(client, timeout=3), "ml", [mounting, pulling], at(4))
    assert result.message == (
        "pod job-worker-0 has not started 4s after it was scheduled: FailedMount: hostPath type check failed: "
        "/data is not a directory; pod job-worker-1 has not started 4s after it was scheduled: "
        "ErrImageNeverPull: not present with pull policy of Never"
    )
    assert result.pods == ("job-worker-0", "job-worker-1")
    assert result.requeue_after == podstart.REFRESH_SECONDS  # refreshed though no watch event comes
    assert client.calls == [(
        "v1", "events", "ml",
        {"involvedObject.kind": "Pod", "involvedObject.name": "job-worker-0", "type": "Warning"}, podstart.EVENTS_LIMIT,
    )]


async def test_many_stuck_pods_read_few_events_and_an_unreadable_list_fails_nothing() -> None:
    client = Client([], fail=True)
    states = [pod(f"w-{i}", uid=f"u{i}", scheduled=float(i)) for i in range(6)]
    result = await podstart.check(runtime(client, timeout=3), "ml", states, at(100))
    assert len(client.calls) == P.STUCK_PODS_NAMED
    assert result.message.startswith("pod w-0 has not started 1m40s after it was scheduled (still ContainerCreating;")
    assert result.message.endswith("; and 3 more pod(s)")
    assert len(result.pods) == 6


# --- an InferenceService: Ready=False only when too few replicas serve ----------------------------
def test_a_server_pod_that_does_not_start_makes_ready_false_only_when_too_few_serve() -> None:
    stuck = (Reason.POD_START_TIMEOUT, "pod isvc-predictor-abc has not started 5m0s after it was scheduled: FailedMount: x")
    uri = "pvc://data/models/V001/om/model"

    def rev(ready: int, updated: int, *, available: bool, rolled_out: bool) -> Revision:
        return Revision(replicas=max(ready, updated, 1), ready=ready, updated=updated, available=available,
                        rolled_out=rolled_out, problem=stuck)

    alone = readiness.verdict(rev(0, 1, available=False, rolled_out=False), wanted=1, needed=1, serving=uri)
    assert (alone.ready, alone.reason, alone.message) == (False, Reason.POD_START_TIMEOUT, stuck[1])
    assert (alone.reconciling, alone.stalled) == (Reason.POD_START_TIMEOUT, None)
    # A surge or scaled-up pod that waits while the others serve: Ready stays True, and says so.
    for rolled_out in (False, True):
        serving = readiness.verdict(rev(2, 3, available=True, rolled_out=rolled_out), wanted=3, needed=2, serving=uri)
        assert serving.ready and serving.reason == Reason.MINIMUM_REPLICAS_AVAILABLE
        assert serving.reconciling == Reason.POD_START_TIMEOUT and stuck[1] in serving.message
