"""The Ready decision and its message (reconcilers/readiness.py), and who is said to run on the simulator: pure, no API."""

from __future__ import annotations

import itertools
import re

import pytest

from ascend_mlops.api.constants import Reason
from ascend_mlops.api.specs import parse_storage_uri
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.reconcilers import readiness, sources
from ascend_mlops.reconcilers.canary import Revision

URI = "pvc://data/models/V002/frozen_graph"


def rev(ready: int, updated: int, *, available: bool, rolled_out: bool, problem: tuple[str, str] | None = None) -> Revision:
    return Revision(replicas=max(ready, updated), ready=ready, updated=updated, available=available, rolled_out=rolled_out, problem=problem)


def test_the_minimum_is_replicas_or_min_replicas_and_a_raised_count_is_no_loss() -> None:
    assert readiness.minimum(4, None, None) == 4
    assert readiness.minimum(3, 1, None) == 1
    assert readiness.minimum(4, None, 2) == 2  # scaled 2 -> 4 while Ready with 2: the 2 still serve
    assert readiness.minimum(2, None, 4) == 2  # scaled 4 -> 2
    assert readiness.minimum(4, None, 0) == 1  # never "Ready with no pod"


def test_a_stable_revision_rolling_to_a_new_template_stays_ready_and_says_it_rolls() -> None:
    # The moment: 4 ready old pods, the Deployment rolling (1 of 4 updated).
    v = readiness.verdict(rev(4, 1, available=True, rolled_out=False), wanted=4, needed=4, serving=URI)
    assert v.ready and v.reason == Reason.MINIMUM_REPLICAS_AVAILABLE and v.stalled is None
    assert v.reconciling == Reason.DEPLOYMENT_PROGRESSING
    assert v.message == f"4/4 replica(s) ready; rolling out {URI} (1 updated)"


def test_a_new_pod_that_cannot_start_during_a_roll_is_reported_in_progress_not_as_not_ready() -> None:
    problem = (Reason.UNSCHEDULABLE, "pod x cannot be scheduled: 0/2 nodes are available: 1 Insufficient cpu")
    v = readiness.verdict(rev(4, 1, available=True, rolled_out=False, problem=problem), wanted=4, needed=4, serving=URI)
    assert v.ready and v.reconciling == Reason.UNSCHEDULABLE and problem[1] in v.message
    load = (Reason.MODEL_LOAD_FAILED, "pod y: the server keeps exiting")
    v = readiness.verdict(rev(4, 1, available=True, rolled_out=False, problem=load), wanted=4, needed=4, serving=URI)
    assert v.ready and v.stalled == Reason.MODEL_LOAD_FAILED and v.reconciling is None


def test_settled_with_a_broken_pod_or_too_few_ready_is_not_ready() -> None:
    load = (Reason.MODEL_LOAD_FAILED, "pod y: the server keeps exiting")
    v = readiness.verdict(rev(1, 1, available=True, rolled_out=True, problem=load), wanted=1, needed=1, serving=URI)
    assert not v.ready and v.reason == Reason.MODEL_LOAD_FAILED and v.stalled == Reason.MODEL_LOAD_FAILED
    v = readiness.verdict(rev(0, 4, available=False, rolled_out=False), wanted=4, needed=4, serving=URI)
    assert not v.ready and v.reason == Reason.DEPLOYMENT_PROGRESSING and v.message == "waiting for 4 replica(s) to be ready (0 ready)"


def test_promoting_is_ready_and_in_progress() -> None:
    v = readiness.verdict(rev(0, 1, available=False, rolled_out=False), wanted=1, needed=1, serving=URI, promoting=True)
    assert v.ready and v.reconciling == Reason.DEPLOYMENT_PROGRESSING and v.message.startswith(f"promoting {URI}")


def test_the_simulator_is_named_only_when_asked() -> None:
    for simulated in (False, True):
        v = readiness.verdict(rev(2, 2, available=True, rolled_out=True), wanted=2, needed=2, serving=URI, simulated=simulated)
        assert ("Ascend simulator" in v.message) is simulated


@pytest.mark.parametrize("autoscaled", [False, True])
def test_no_message_contradicts_its_own_counts(autoscaled: bool) -> None:
    """Every consistent Revision: Ready's status agrees with its counts, and "waiting for N (M ready)" has M < N."""
    problems = [None, (Reason.UNSCHEDULABLE, "cannot be scheduled"), (Reason.CRASH_LOOP, "keeps exiting")]
    seen = 0
    for wanted, ready, updated, kept, promoting, problem in itertools.product(
        range(0, 5), range(0, 6), range(0, 5), (None, 1, 2, 4), (False, True), problems,
    ):
        min_ready = 1 if autoscaled else None
        needed = readiness.minimum(wanted, min_ready, kept)
        full = readiness.minimum(wanted, min_ready, None)
        revision = Revision(replicas=max(ready, updated), ready=ready, updated=updated, problem=problem,
                            available=ready >= needed, rolled_out=ready >= full and updated >= wanted)
        v = readiness.verdict(
            revision, wanted=wanted, needed=needed, serving=URI, promoting=promoting,
            scaled=" (autoscaling 1-4)" if autoscaled else "", tolerate_unschedulable=autoscaled,
        )
        seen += 1
        waiting = re.search(r"waiting for (\d+) replica\(s\) to be ready \((\d+) ready\)", v.message)
        if waiting:
            assert not v.ready and int(waiting[2]) < int(waiting[1]), v
        counted = re.match(r"(\d+)/(\d+) replica\(s\) ready", v.message)
        if counted:
            assert v.ready and (int(counted[1]), int(counted[2])) == (ready, wanted), v
            assert int(counted[1]) >= needed, v
        if v.ready and not promoting:
            assert ready >= needed, v  # Ready claims no more than the pods give
        if not v.ready:
            assert v.reconciling is not None or v.stalled is not None  # kstatus says it is not current
        if revision.available and not revision.rolled_out:
            assert v.ready, v  # rolling with enough ready pods: never not-ready
        assert "Ascend simulator" not in v.message
    assert seen > 1000


@pytest.mark.parametrize(
    ("runtime", "simulator", "conversion_simulated", "expected"),
    [
        ("acl", True, False, True),  # the pyACL simulator serves
        ("acl", False, True, True),  # an .om of the ATC simulator loads only on the simulator
        ("acl", False, False, False),
        ("tensorflow", True, False, False),  # TensorFlow on the CPU: no simulator, whatever the setting
        ("tensorflow", True, True, False),  # also the frozen graph a simulated conversion started from
    ],
)
def test_only_an_acl_model_is_said_to_run_on_the_simulator(
    runtime: str, simulator: bool, conversion_simulated: bool, expected: bool
) -> None:
    model = ResolvedModel(parse_storage_uri(URI, "spec.model.uri"), None, runtime)
    record: dict[str, object] = {"uri": URI, "runtime": runtime, **({"simulated": True} if conversion_simulated else {})}
    assert sources.on_simulator(model, record, simulator) is expected
    assert ("simulated" in record) is expected
