"""The steps of an InferenceService's reconciliation (reconcilers/inference.py, reconcilers/rollout.py),
each on its own: inputs in, decision out. No API: the few steps that would call it get a fake that
records the calls (and fails on any it was not told to expect)."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ascend_mlops import status as st
from ascend_mlops.api import constants
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import InferenceServiceSpec, parse_inference_service, parse_storage_uri
from ascend_mlops.builders.common import Owner
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.reconcilers import inference, rollout
from ascend_mlops.reconcilers.canary import (
    DRAIN_SECONDS,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    Canary,
    Revision,
)
from ascend_mlops.reconcilers.engine import Engine, Key, Snapshot
from ascend_mlops.reconcilers.readiness import Verdict
from ascend_mlops.reconcilers.rollout import Models, Stable
from ascend_mlops.reconcilers.serving import Scaling
from ascend_mlops.reconcilers.sources import Waiting
from ascend_mlops.settings import Settings

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
RESOURCE = "huawei.com/Ascend310"
STABLE_URI, CANARY_URI = "pvc://data/runs/flowers/V001/om/model", "pvc://data/runs/flowers/V002/om/model"
KEY = Key(constants.INFERENCE_SERVICE, "default", "flowers")


def spec(**fields: Any) -> InferenceServiceSpec:
    return parse_inference_service({"model": {"uri": STABLE_URI}, **fields}, RESOURCE)


def canary_spec(**canary: Any) -> InferenceServiceSpec:
    return spec(canary={"uri": CANARY_URI, "trafficPercent": 20, **canary})


def model(uri: str = STABLE_URI, runtime: str = "acl") -> ResolvedModel:
    return ResolvedModel(parse_storage_uri(uri, "uri"), None, runtime)


def snap(raw_spec: dict[str, Any] | None = None, **old_status: Any) -> Snapshot:
    body: dict[str, Any] = {
        "apiVersion": constants.API_VERSION, "kind": constants.INFERENCE_SERVICE,
        "metadata": {"name": "flowers", "namespace": "default", "generation": 1, "uid": "u1"},
        "spec": raw_spec if raw_spec is not None else {"model": {"uri": STABLE_URI}}, "status": old_status,
    }
    return Snapshot(body, body["metadata"], Owner.from_body(body), NOW, dict(old_status), dict(old_status),
                    st.Conditions(old_status.get("conditions"), 1, NOW))


def canary_state(state: str = PROGRESSING, **record: Any) -> Canary:
    return Canary({"model": CANARY_URI, "state": state, "step": 0, **record})


def revision(**counts: Any) -> Revision:
    return Revision(**counts)


def condition(conditions: st.Conditions, type_: str) -> tuple[str, str, str] | None:
    found = conditions.get(type_)
    return None if found is None else (found["status"], found["reason"], found["message"])


class FakeEngine:
    """What the steps may ask of an Engine without reaching an API: references, and reads it is told of."""

    def __init__(self, settings: Settings | None = None, reads: dict[str, Any] | None = None) -> None:
        self.settings = settings or Settings()
        self.reads = reads or {}
        self.calls: list[tuple[Any, ...]] = []
        self.client = SimpleNamespace(get_metadata=self._get_metadata)

    def set_references(self, key: Key, referenced: Any, slot: str = "") -> None:
        self.calls.append(("set_references", slot, tuple(referenced)))

    async def read(self, api_version: str, plural: str, namespace: str, name: str) -> Any:
        self.calls.append(("read", plural, name))
        return self.reads[f"{plural}/{name}"]

    async def _get_metadata(self, api_version: str, plural: str, namespace: str, name: str) -> Any:
        self.calls.append(("get_metadata", plural, name))
        return self.reads[f"{plural}/{name}"]


def runtime(fake: FakeEngine) -> Engine:
    return cast(Engine, fake)


# --- Halt: every early stop's status ------------------------------------------------------
def test_halt_sets_its_conditions_then_ready_and_kstatus() -> None:
    s = snap()
    halt = inference.Halt(Phase.WAITING, Reason.WAITING_FOR_CONVERSION, "waiting", False,
                          ((ConditionType.SOURCE_READY, "waiting"), (ConditionType.PREDICTOR_READY, "no model to serve yet")))
    halt.report(s.status, s.conditions)
    types = [c["type"] for c in s.status["conditions"]]
    assert types == [ConditionType.SOURCE_READY, ConditionType.PREDICTOR_READY, ConditionType.READY,
                     ConditionType.RECONCILING, ConditionType.STALLED]
    assert condition(s.conditions, ConditionType.PREDICTOR_READY) == (st.FALSE, Reason.WAITING_FOR_CONVERSION, "no model to serve yet")
    assert condition(s.conditions, ConditionType.RECONCILING) == (st.TRUE, Reason.WAITING_FOR_CONVERSION, "waiting")
    assert s.status["phase"] == Phase.WAITING and halt.requeue_after is None


def test_a_stalled_halt_is_stalled_not_reconciling() -> None:
    s = snap()
    inference.Halt(Phase.NOT_READY, Reason.RECONCILE_ERROR, "taken", True, ((ConditionType.PREDICTOR_READY, "taken"),), 30.0).report(
        s.status, s.conditions
    )
    assert condition(s.conditions, ConditionType.STALLED) == (st.TRUE, Reason.RECONCILE_ERROR, "taken")
    assert condition(s.conditions, ConditionType.RECONCILING) == (st.FALSE, Reason.RECONCILE_ERROR, "")
    assert condition(s.conditions, ConditionType.READY) == (st.FALSE, Reason.RECONCILE_ERROR, "taken")


# --- the spec -----------------------------------------------------------------------------
def test_valid_spec_sets_valid() -> None:
    s = snap()
    assert inference.valid_spec(s, Settings()).model == parse_storage_uri(STABLE_URI, "uri")
    assert condition(s.conditions, ConditionType.VALID) == (st.TRUE, Reason.SPEC_VALID, "")


@pytest.mark.parametrize("raw", [{"replicas": 2}, {"model": {"uri": STABLE_URI}, "exposure": {"type": "HTTPRoute"}}])
def test_a_spec_these_settings_cannot_serve_halts_invalid_and_stalled(raw: dict[str, Any]) -> None:
    with pytest.raises(inference.Halt) as caught:
        inference.valid_spec(snap(raw), Settings())
    halt = caught.value
    assert (halt.phase, halt.reason, halt.stalled) == (Phase.INVALID, Reason.INVALID_SPEC, True)
    assert halt.before == ((ConditionType.VALID, halt.message),) and "spec." in halt.message


# --- the models and their Secrets -----------------------------------------------------------
async def test_resolve_models_without_canary_clears_its_references() -> None:
    fake, s = FakeEngine(), snap()
    found = await inference.resolve_models(runtime(fake), KEY, spec(), s)
    assert (str(found.model.uri), found.record, found.state) == (STABLE_URI, {"uri": STABLE_URI, "runtime": "acl"}, None)
    assert fake.calls == [("set_references", "", ()), ("set_references", "canary", ())]
    assert condition(s.conditions, ConditionType.SOURCE_READY) == (st.TRUE, Reason.MODEL_RESOLVED, f"serving {STABLE_URI}")


async def test_resolve_models_starts_a_new_canary_at_progressing() -> None:
    found = await inference.resolve_models(runtime(FakeEngine()), KEY, canary_spec(), snap())
    assert found.canary_model is not None and str(found.canary_model.uri) == CANARY_URI
    assert found.state is not None and found.state.record == {"model": CANARY_URI, "state": PROGRESSING, "step": 0, "startedAt": st.timestamp(NOW)}


async def test_resolve_models_halts_while_the_conversion_is_missing() -> None:
    class Missing(FakeEngine):
        async def get(self, key: Key) -> None:
            return None

    with pytest.raises(inference.Halt) as caught:
        await inference.resolve_models(runtime(Missing()), KEY, parse_inference_service({"model": {"conversionRef": {"name": "om"}}}, RESOURCE), snap())
    halt = caught.value
    assert (halt.phase, halt.reason, halt.stalled) == (Phase.WAITING, Reason.REFERENCE_NOT_FOUND, False)
    assert [type_ for type_, _ in halt.before] == [ConditionType.SOURCE_READY, ConditionType.PREDICTOR_READY]


def test_models_locations_cover_both_revisions() -> None:
    found = Models(model(), {}, canary_model=model(CANARY_URI))
    assert [str(u) for u in found.locations()] == [STABLE_URI, "None", CANARY_URI, "None"]


async def test_check_secrets_halts_for_a_missing_token_secret() -> None:
    fake = FakeEngine(reads={"secrets/tokens": None})
    with pytest.raises(inference.Halt) as caught:
        await inference.check_secrets(runtime(fake), "default", spec(auth={"secretName": "tokens"}), Models(model(), {}))
    halt = caught.value
    assert (halt.phase, halt.reason, halt.stalled, halt.requeue_after) == (Phase.NOT_READY, Reason.AUTH_SECRET_MISSING, False, 30.0)
    assert halt.before == ((ConditionType.PREDICTOR_READY, halt.message),)
    await inference.check_secrets(runtime(FakeEngine()), "default", spec(), Models(model(), {}))  # pvc://, no auth: no call


# --- the canary -----------------------------------------------------------------------------
async def test_a_service_that_never_had_a_canary_reads_no_canary_deployment() -> None:
    fake = FakeEngine()
    assert await inference.observe_canary(runtime(fake), snap(), spec(), Models(model(), {})) == (None, Revision())
    assert fake.calls == []


async def test_a_rolled_back_canary_is_read_not_observed() -> None:
    fake = FakeEngine(reads={"deployments/flowers-predictor-canary": {"spec": {"replicas": 0}}})
    found = Models(model(), {}, state=canary_state(ROLLED_BACK))
    dep, rev = await inference.observe_canary(runtime(fake), snap(), canary_spec(), found)
    assert dep == {"spec": {"replicas": 0}} and rev == Revision()
    assert fake.calls == [("read", "deployments", "flowers-predictor-canary")]


def test_gitops_promotion_continues_the_canary() -> None:
    progressing = rollout.gitops_state({"canary": {"model": CANARY_URI, "state": PROGRESSING}}, CANARY_URI)
    assert progressing is not None and progressing.state == PROMOTING
    assert [n.reason for n in progressing.notes] == [Reason.PROMOTED]
    promoting = rollout.gitops_state({"canary": {"model": CANARY_URI, "state": PROMOTING}}, CANARY_URI)
    assert promoting is not None and promoting.state == PROMOTING and promoting.notes == []
    promoted = rollout.gitops_state({"canary": {"model": CANARY_URI, "state": PROMOTED}}, CANARY_URI)
    assert promoted is not None and promoted.state == PROMOTED
    assert rollout.gitops_state({"canary": {"model": CANARY_URI, "state": ROLLED_BACK}}, CANARY_URI) is None
    assert rollout.gitops_state({"canary": {"model": CANARY_URI, "state": PROGRESSING}}, STABLE_URI) is None
    assert rollout.gitops_state({}, STABLE_URI) is None


def test_analysis_runs_only_for_a_ready_progressing_canary() -> None:
    with_analysis = spec(canary={"uri": CANARY_URI, "analysis": {"steps": [10, 100]}})
    ready = revision(rolled_out=True, pods=[{"metadata": {"name": "p"}}])
    assert with_analysis.canary is not None
    assert rollout.analysis_due(canary_state(), with_analysis, ready) is with_analysis.canary.analysis
    assert rollout.analysis_due(canary_state(), with_analysis, revision(rolled_out=True)) is None  # no ready pod
    assert rollout.analysis_due(canary_state(PROMOTING), with_analysis, ready) is None
    assert rollout.analysis_due(canary_state(), canary_spec(), ready) is None  # no analysis
    assert rollout.analysis_due(None, with_analysis, ready) is None


# --- the stable revision's model ------------------------------------------------------------
def test_the_stable_revision_serves_spec_model() -> None:
    status: dict[str, Any] = {"promoted": {"over": "elsewhere"}}
    stable = rollout.stable_model(spec(), Models(model(), {"uri": STABLE_URI, "runtime": "acl"}), status, status, simulator=True)
    assert str(stable.model.uri) == STABLE_URI and stable.simulated
    assert status == {"model": {"uri": STABLE_URI, "runtime": "acl", "simulated": True}}


def test_the_stable_revision_rolls_to_a_promoted_canary() -> None:
    found = Models(model(), {"uri": STABLE_URI}, model(CANARY_URI), {"uri": CANARY_URI, "runtime": "acl"}, canary_state(PROMOTING))
    status: dict[str, Any] = {}
    stable = rollout.stable_model(canary_spec(), found, {}, status, simulator=False)
    assert str(stable.model.uri) == CANARY_URI and status["model"] == {"uri": CANARY_URI, "runtime": "acl"}
    assert status["model"] is not found.canary_record


def test_a_promotion_holds_while_spec_model_is_the_one_it_replaced() -> None:
    held = {"over": STABLE_URI, "uri": CANARY_URI, "record": {"uri": CANARY_URI, "runtime": "acl"}}
    old = {"promoted": held}
    status: dict[str, Any] = {}
    stable = rollout.stable_model(spec(), Models(model(), {"uri": STABLE_URI}), old, status, simulator=False)
    assert str(stable.model.uri) == CANARY_URI and status["promoted"] is held
    assert rollout.promotion_hold({"promoted": {**held, "over": "conversionRef/other"}}, spec()) is None
    assert rollout.promotion_hold({"promoted": {**held, "uri": "not a uri"}}, spec()) is None


def test_a_promotion_ends_once_the_stable_revision_rolled_out_the_canary_model() -> None:
    state, status = canary_state(PROMOTING), cast(dict[str, Any], {})
    rollout.settle_promotion(state, canary_spec(), Stable(model(), {}), status, NOW)
    assert state.state == PROMOTING and state.requeue_after == 0.5  # stable still on the old model
    state = canary_state(PROMOTING)
    rollout.settle_promotion(state, canary_spec(), Stable(model(CANARY_URI), {}, created=True, rev=revision(rolled_out=True)), status, NOW)
    assert state.state == PROMOTING and state.requeue_after is None  # just created: not the rollout yet
    record = {"uri": CANARY_URI}
    rollout.settle_promotion(state, canary_spec(), Stable(model(CANARY_URI), record, rev=revision(rolled_out=True)), status, NOW)
    assert state.state == PROMOTED and state.record["endedAt"] == st.timestamp(NOW)
    assert status["promoted"] == {"over": STABLE_URI, "uri": CANARY_URI, "record": record}
    assert [n.reason for n in state.notes] == [Reason.PROMOTED]


# --- the split and the routing ----------------------------------------------------------------
def test_canary_percent_follows_its_state_and_readiness() -> None:
    assert rollout.canary_percent(None, canary_spec(), revision(ready=1)) is None
    assert rollout.canary_percent(canary_state(ROLLED_BACK), canary_spec(), revision(ready=1)) is None
    assert rollout.canary_percent(canary_state(), canary_spec(), revision(ready=0)) == 0
    assert rollout.canary_percent(canary_state(), canary_spec(), revision(ready=1)) == 20
    assert rollout.canary_percent(canary_state(PROMOTING), canary_spec(), revision(ready=1)) == 100
    assert rollout.canary_percent(canary_state(PROMOTING), canary_spec(), revision(ready=0)) is None


def test_routing_selects_the_revisions_that_get_requests() -> None:
    stable, canary = constants.REVISION_STABLE, constants.REVISION_CANARY
    assert rollout.routed(None, None) == ((stable,), None)
    assert rollout.routed(canary_state(), 0) == ((stable,), 0)
    assert rollout.routed(canary_state(), 20) == ((stable, canary), 20)
    assert rollout.routed(canary_state(PROMOTING), 100) == ((canary,), 100)
    assert rollout.promoting(canary_state(PROMOTING), revision(ready=1))
    assert not rollout.promoting(canary_state(PROMOTING), revision(ready=0))


def test_observed_split_is_exact_with_a_gateway_and_by_ready_pods_without() -> None:
    stable, canary = revision(ready=3), revision(ready=1)
    assert rollout.observed_split(20, True, stable, canary) == 20
    assert rollout.observed_split(20, False, stable, canary) == 25
    assert rollout.observed_split(20, False, revision(), revision()) == 0
    assert rollout.observed_split(None, False, stable, canary) == 0
    assert rollout.observed_split(100, False, stable, canary) == 100


# --- what is left of a canary -------------------------------------------------------------------
def test_retirement_waits_for_the_drain_then_removes_or_scales_down() -> None:
    ended = st.timestamp(NOW - datetime.timedelta(seconds=2))
    over = st.timestamp(NOW - datetime.timedelta(seconds=DRAIN_SECONDS + 1))
    assert rollout.retirement(canary_state(), canary_spec(), True, True, NOW) == rollout.RETIRED
    assert rollout.retirement(None, spec(), False, False, NOW) == rollout.RETIRED
    draining = canary_state(PROMOTED, endedAt=ended)
    assert rollout.retirement(draining, spec(), False, True, NOW) == rollout.DRAINING
    assert draining.requeue_after == pytest.approx(DRAIN_SECONDS - 2)
    assert rollout.retirement(canary_state(ROLLED_BACK, endedAt=over), canary_spec(), True, True, NOW) == rollout.SCALE_DOWN
    assert rollout.retirement(canary_state(ROLLED_BACK, endedAt=over), canary_spec(), True, False, NOW) == rollout.SERVICES
    assert rollout.retirement(canary_state(ROLLED_BACK, endedAt=over), spec(), False, True, NOW) == rollout.DELETE
    assert rollout.retirement(canary_state(PROMOTED, endedAt=over), spec(), False, True, NOW) == rollout.DELETE
    assert rollout.retirement(None, spec(), False, True, NOW) == rollout.DELETE


# --- the status ----------------------------------------------------------------------------------
def test_report_canary_without_a_canary_clears_it() -> None:
    s = snap(canary={"model": CANARY_URI})
    s.conditions.set(ConditionType.CANARY_READY, st.TRUE, Reason.PROMOTED, "")
    stable = Stable(model(), {}, rev=revision(replicas=2, ready=2))
    rollout.report_canary(s.status, s.conditions, spec(), Models(model(), {}), stable, Revision(), None, False, True)
    assert s.status["traffic"] == [{"revision": "stable", "model": STABLE_URI, "percent": 100, "replicas": 2, "readyReplicas": 2}]
    assert s.status["trafficSplit"] == "Service" and "canary" not in s.status
    assert s.conditions.get(ConditionType.CANARY_READY) is None


def test_report_canary_keeps_a_draining_canary_until_it_is_retired() -> None:
    s, state = snap(), canary_state(PROMOTED)
    rollout.report_canary(s.status, s.conditions, spec(), Models(model(), {}, state=state), Stable(model(), {}), Revision(), None, True, False)
    assert s.status["canary"] is state.record and s.status["trafficSplit"] == "HTTPRoute"


def test_report_canary_waiting_for_its_model() -> None:
    s = snap()
    waiting = Waiting(Reason.WAITING_FOR_CONVERSION, "spec.model.conversionRef.name: waiting", False)
    rollout.report_canary(s.status, s.conditions, canary_spec(), Models(model(), {}, waiting=waiting), Stable(model(), {}), Revision(), None, False, True)
    assert condition(s.conditions, ConditionType.CANARY_READY) == (st.FALSE, Reason.WAITING_FOR_CONVERSION, "spec.canary.conversionRef.name: waiting")
    assert "canary" not in s.status


def test_report_canary_of_a_serving_canary() -> None:
    s, state = snap(), canary_state()
    stable, rev = Stable(model(), {}, rev=revision(replicas=3, ready=3)), revision(replicas=1, ready=1, rolled_out=True)
    rollout.report_canary(s.status, s.conditions, canary_spec(), Models(model(), {}, state=state), stable, rev, 20, False, True)
    assert [(t["revision"], t["percent"]) for t in s.status["traffic"]] == [("stable", 75), ("canary", 25)]
    assert s.status["canary"]["percent"] == 25 and s.status["canary"]["split"] == "Service"
    assert condition(s.conditions, ConditionType.CANARY_READY) == (
        st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, "1/1 canary replica(s) ready, 25 percent of the requests (Service)"
    )
    assert s.conditions.get(ConditionType.CANARY_PROMOTED) is None


def test_report_canary_of_a_rolled_back_canary() -> None:
    s = snap()
    state = canary_state(ROLLED_BACK, reason=Reason.CRASH_LOOP, message="pod p: the server keeps exiting")
    rollout.report_canary(s.status, s.conditions, canary_spec(), Models(model(), {}, state=state), Stable(model(), {}), revision(replicas=1), None, False, True)
    assert s.status["traffic"][1] == {"revision": "canary", "model": CANARY_URI, "percent": 0, "replicas": 1, "readyReplicas": 0}
    assert condition(s.conditions, ConditionType.CANARY_READY) == (st.FALSE, Reason.CRASH_LOOP, "rolled back to 0 percent")
    assert condition(s.conditions, ConditionType.CANARY_ROLLED_BACK) == (st.TRUE, Reason.CRASH_LOOP, "pod p: the server keeps exiting")


def test_canary_conditions_of_a_promoted_canary() -> None:
    conditions = st.Conditions(None, 1, NOW)
    rollout.canary_conditions(conditions, canary_state(PROMOTED, reason=Reason.ANALYSIS_PASSED, message="every step passed"), Revision(), 0, "Service")
    assert condition(conditions, ConditionType.CANARY_PROMOTED) == (st.TRUE, Reason.ANALYSIS_PASSED, "every step passed")
    assert condition(conditions, ConditionType.CANARY_READY) == (st.TRUE, Reason.PROMOTED, f"{CANARY_URI} is the stable revision")
    rollout.canary_conditions(conditions, canary_state(), revision(ready=0), 0, "Service")
    assert condition(conditions, ConditionType.CANARY_READY) == (
        st.FALSE, Reason.DEPLOYMENT_PROGRESSING, "waiting for the canary's replicas to be ready (0 ready)"
    )
    assert conditions.get(ConditionType.CANARY_PROMOTED) is None


def test_report_exposure_sets_and_clears_address_url_and_autoscaler() -> None:
    exposed = {"model": {"uri": STABLE_URI}, "exposure": {"type": "Ingress", "host": "flowers.example.com"}}
    s = snap(exposed, autoscaler={"kind": "HorizontalPodAutoscaler"}, url="http://old")
    scaling = Scaling(st.TRUE, Reason.AUTOSCALER_READY, "scales", {"kind": "HorizontalPodAutoscaler", "name": "flowers"})
    inference.report_exposure(s, parse_inference_service(exposed, RESOURCE), Settings(), scaling)
    assert s.status["url"] == "http://flowers.example.com" and s.status["autoscaler"] == scaling.record
    assert s.status["address"] == {"url": "http://flowers-predictor.default.svc.cluster.local"}
    assert condition(s.conditions, ConditionType.AUTOSCALING) == (st.TRUE, Reason.AUTOSCALER_READY, "scales")
    inference.report_exposure(s, spec(), Settings(), None)
    assert "url" not in s.status and "autoscaler" not in s.status and s.conditions.get(ConditionType.AUTOSCALING) is None


def test_report_ready_of_a_rolled_out_stable_revision() -> None:
    s = snap()
    stable = Stable(model(), {}, simulated=True, wanted=2, rev=revision(replicas=2, ready=2, updated=2, available=True, rolled_out=True))
    verdict = inference.report_ready(s.status, s.conditions, spec(replicas=2), stable, promoting=False)
    assert verdict.ready and (s.status["phase"], s.status["replicas"], s.status["readyReplicas"]) == (Phase.READY, 2, 2)
    message = f"2/2 replica(s) ready, serving {STABLE_URI} (on the Ascend simulator)"
    assert condition(s.conditions, ConditionType.READY) == (st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
    assert condition(s.conditions, ConditionType.PREDICTOR_READY) == condition(s.conditions, ConditionType.READY)


def test_report_ready_keeps_the_bar_a_ready_service_cleared() -> None:
    s = snap()
    stable = Stable(model(), {}, wanted=4, kept=2, rev=revision(replicas=4, ready=2, updated=4, available=True))
    verdict = inference.report_ready(s.status, s.conditions, spec(replicas=4), stable, promoting=False)
    assert verdict.ready and verdict.reconciling == Reason.DEPLOYMENT_PROGRESSING


def test_events_after_the_status() -> None:
    slow = Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, "1/2 ready; the others wait", reconciling=Reason.POD_START_TIMEOUT)
    posted = inference.events_to_post(slow, {}, None)
    assert [(e.type, e.reason) for e in posted] == [("Warning", Reason.POD_START_TIMEOUT)]
    already = {"conditions": [{"type": ConditionType.RECONCILING, "status": st.TRUE, "reason": Reason.POD_START_TIMEOUT}]}
    assert inference.events_to_post(slow, already, None) == []
    state = canary_state()
    state.note(Reason.STEP_PASSED, "step 1/3 passed")
    assert [e.reason for e in inference.events_to_post(Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, ""), {}, state)] == [Reason.STEP_PASSED]
