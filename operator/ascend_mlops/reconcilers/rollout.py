"""An InferenceService's rollout, decided without the API: the model the stable revision serves,
the canary's state, share and routing, what of a canary is left to retire, and status.traffic,
status.canary and the Canary* conditions. inference.py makes the reads and writes they lead to."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, specs
from ascend_mlops.api.constants import ConditionType, Reason
from ascend_mlops.api.specs import FieldError, InferenceServiceSpec, StorageURI, parse_storage_uri
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.reconcilers import canary, sources
from ascend_mlops.reconcilers.canary import ACTIVE, PROMOTED, PROMOTING, Canary, Revision
from ascend_mlops.reconcilers.sources import Waiting

CANARY_CONDITIONS: Final = (ConditionType.CANARY_READY, ConditionType.CANARY_PROMOTED, ConditionType.CANARY_ROLLED_BACK)
# What retirement() leaves to do for a canary that gets no traffic.
RETIRED, DRAINING, SCALE_DOWN, DELETE, SERVICES = "Retired", "Draining", "ScaleDown", "Delete", "Services"


@dataclass
class Models:
    """The models of one reconciliation: spec.model's, and spec.canary's with the canary's state."""

    model: ResolvedModel
    record: dict[str, Any]  # status.model
    canary_model: ResolvedModel | None = None
    canary_record: dict[str, Any] | None = None
    state: Canary | None = None  # status.canary, as this reconciliation changes it
    waiting: Waiting | None = None  # spec.canary's model is not there yet

    def locations(self) -> tuple[StorageURI | None, ...]:
        """What the pods read: the storage Secret must cover it."""
        extra = (self.canary_model.uri, self.canary_model.labels) if self.canary_model is not None else ()
        return (self.model.uri, self.model.labels, *extra)


@dataclass
class Stable:
    """The stable revision: the model it serves, and what its Deployment and pods say."""

    model: ResolvedModel
    record: dict[str, Any]  # status.model
    simulated: bool = False
    created: bool = False  # its Deployment was created by this reconciliation
    wanted: int = 0  # the count to reach (an autoscaler's, with one)
    kept: int | None = None  # the ready count it was Ready with
    rev: Revision = field(default_factory=Revision)


def gitops_state(old_status: Mapping[str, Any], model: str) -> Canary | None:
    """Without spec.canary, a GitOps promotion's canary (spec.model now names its model): it serves while the
    stable revision rolls to it, as in an automatic promotion; a promoted one's pods drain, then go."""
    previous = old_status.get("canary")
    if not isinstance(previous, Mapping) or previous.get("model") != model:
        return None
    if previous.get("state") in ACTIVE:
        state = Canary(dict(previous))
        if state.state != PROMOTING:
            state.promote(Reason.PROMOTED, "spec.model now names the canary's model")
        return state
    return Canary(dict(previous)) if previous.get("state") == PROMOTED else None


def _model_key(spec: InferenceServiceSpec) -> str:
    """spec.model as written: any edit of it ends a promotion's hold."""
    return f"conversionRef/{spec.conversion_ref}" if spec.conversion_ref else str(spec.model)


def promotion_hold(old_status: Mapping[str, Any], spec: InferenceServiceSpec) -> tuple[ResolvedModel, dict[str, Any]] | None:
    """The model an automatic promotion made stable, while spec.model is still the one it replaced."""
    held = old_status.get("promoted")
    if not isinstance(held, Mapping) or held.get("over") != _model_key(spec):
        return None
    record = dict(held.get("record") or {})
    try:
        uri = parse_storage_uri(held.get("uri"), "status.promoted.uri")
        labels = parse_storage_uri(record["labels"], "status.promoted.record.labels") if record.get("labels") else None
    except FieldError:
        return None
    return ResolvedModel(uri, labels, spec.runtime), record


def stable_model(spec: InferenceServiceSpec, found: Models, old_status: Mapping[str, Any], status: dict[str, Any], simulator: bool) -> Stable:
    """spec.model, the canary's while promoted, or the one a promotion holds: a later canary, or removing
    spec.canary, does not roll the stable revision back behind the user's back."""
    model, record, held, state = found.model, found.record, promotion_hold(old_status, spec), found.state
    if state is not None and state.state == PROMOTING and found.canary_model is not None and found.canary_record is not None:
        model, record = found.canary_model, dict(found.canary_record)
    elif held is not None:
        model, record = held
        status["promoted"] = old_status["promoted"]
    if held is None:
        status.pop("promoted", None)
    status["model"] = record
    return Stable(model, record, simulated=sources.on_simulator(model, record, simulator))


def analysis_due(state: Canary | None, spec: InferenceServiceSpec, rev: Revision) -> specs.CanaryAnalysis | None:
    """spec.canary.analysis when a turn of it may run: a Progressing canary, rolled out, with ready pods."""
    if state is None or state.state != canary.PROGRESSING or spec.canary is None or not (rev.rolled_out and rev.pods):
        return None
    return spec.canary.analysis


def settle_promotion(state: Canary | None, spec: InferenceServiceSpec, stable: Stable, status: dict[str, Any], now: datetime.datetime) -> None:
    """A promotion is over once the stable revision (not just created) rolled out the canary's model."""
    if state is None or state.state != PROMOTING:
        return
    if str(stable.model.uri) != state.record["model"]:
        state.wake(0.5)  # promoted just now: the next turn rolls the stable revision to the canary's model
    elif stable.rev.rolled_out and not stable.created:
        state.record.update(state=PROMOTED, message=f"{state.record['model']} is the stable revision")
        state.end(now)
        if spec.canary is not None:  # automatic: spec.model still names the old model
            status["promoted"] = {"over": _model_key(spec), "uri": str(stable.model.uri), "record": stable.record}
        state.note(Reason.PROMOTED, f"canary {state.record['model']} promoted: the stable revision serves it")


def canary_percent(state: Canary | None, spec: InferenceServiceSpec, rev: Revision) -> int | None:
    """The canary's weight now; None when there is no canary Deployment to send anything to."""
    if state is None or state.state not in ACTIVE:
        return None
    if state.state == PROMOTING:
        return 100 if rev.ready else None
    return state.percent(spec.canary) if rev.ready else 0


def promoting(state: Canary | None, rev: Revision) -> bool:
    """A ready canary serves every request while the stable revision rolls to its model."""
    return state is not None and state.state == PROMOTING and rev.ready > 0


def routed(state: Canary | None, percent: int | None) -> tuple[tuple[str, ...], int | None]:
    """The revisions the client Service selects, and the canary's weight in an HTTPRoute (None: no split)."""
    both = (constants.REVISION_STABLE, constants.REVISION_CANARY)
    revisions = both[:1] if not percent else both[1:] if percent == 100 else both
    return revisions, percent if state is not None and state.state in ACTIVE else None


def retirement(state: Canary | None, spec: InferenceServiceSpec, model: bool, existing: bool, now: datetime.datetime) -> str:
    """What is left of a canary that gets no traffic (`model`: spec.canary's is resolved; `existing`: its
    Deployment is there): RETIRED, nothing; DRAINING, not before DRAIN_SECONDS (`state` wakes then);
    SCALE_DOWN, a rolled-back one's Deployment to 0 (its NPUs go back); DELETE it; SERVICES, the revision Services."""
    if (state is not None and state.state in ACTIVE) or (not existing and state is None):
        return RETIRED
    left = canary.drain_left(state, now)
    if left > 0:
        assert state is not None
        state.wake(left)
        return DRAINING
    if state is not None and state.state == canary.ROLLED_BACK and spec.canary is not None and model:
        return SCALE_DOWN if existing else SERVICES
    return DELETE if existing else SERVICES


def observed_split(percent: int | None, gateway: bool, stable: Revision, rev: Revision) -> int:
    """The canary's share: exact with a Gateway; without, requests spread over both revisions' ready pods."""
    if gateway or percent in (None, 0, 100):
        return percent or 0
    total = stable.ready + rev.ready
    return round(100 * rev.ready / total) if total else 0


def report_canary(
    status: dict[str, Any], conditions: st.Conditions, spec: InferenceServiceSpec, found: Models, stable: Stable,
    rev: Revision, percent: int | None, gateway: bool, retired: bool,
) -> None:
    """status.traffic (one entry per revision), status.trafficSplit, status.canary, the Canary* conditions."""
    mode, state, waiting = "HTTPRoute" if gateway else "Service", found.state, found.waiting
    split = observed_split(percent, gateway, stable.rev, rev)
    traffic = [{"revision": constants.REVISION_STABLE, "model": str(stable.model.uri), "percent": 100 - split, "replicas": stable.rev.replicas, "readyReplicas": stable.rev.ready}]
    if state is not None and state.state in ACTIVE:
        traffic.append({"revision": constants.REVISION_CANARY, "model": state.record["model"], "percent": split, "replicas": rev.replicas, "readyReplicas": rev.ready})
    elif spec.canary is not None and state is not None and state.state == canary.ROLLED_BACK:
        traffic.append({"revision": constants.REVISION_CANARY, "model": state.record["model"], "percent": 0, "replicas": rev.replicas, "readyReplicas": 0})
    status.update(traffic=traffic, trafficSplit=mode)
    if spec.canary is None and (state is None or state.state not in ACTIVE):
        if state is not None and not retired:
            status["canary"] = state.record  # kept until its pods are gone (the drain), then cleared
        else:
            status.pop("canary", None)
        for type_ in CANARY_CONDITIONS:
            conditions.remove(type_)
    elif waiting is not None:
        status.pop("canary", None)
        conditions.set(ConditionType.CANARY_READY, st.FALSE, waiting.reason, waiting.message.replace("spec.model", "spec.canary"))
        conditions.remove(ConditionType.CANARY_PROMOTED)
        conditions.remove(ConditionType.CANARY_ROLLED_BACK)
    else:
        assert state is not None
        state.record.update(percent=split, split=mode)
        status["canary"] = state.record
        canary_conditions(conditions, state, rev, split, mode)


def canary_conditions(conditions: st.Conditions, state: Canary, rev: Revision, split: int, mode: str) -> None:
    """CanaryReady, CanaryPromoted and CanaryRolledBack of a canary that spec.canary names, or a promoted one."""
    record = state.record
    if state.state == canary.ROLLED_BACK:
        conditions.set(ConditionType.CANARY_READY, st.FALSE, str(record.get("reason")), "rolled back to 0 percent")
        conditions.set(ConditionType.CANARY_ROLLED_BACK, st.TRUE, str(record.get("reason")), str(record.get("message")))
        conditions.remove(ConditionType.CANARY_PROMOTED)
        return
    conditions.remove(ConditionType.CANARY_ROLLED_BACK)
    if state.state in (PROMOTING, PROMOTED):
        conditions.set(ConditionType.CANARY_PROMOTED, st.TRUE, str(record.get("reason") or Reason.PROMOTED), str(record.get("message") or ""))
    else:
        conditions.remove(ConditionType.CANARY_PROMOTED)
    if state.state == PROMOTED:
        conditions.set(ConditionType.CANARY_READY, st.TRUE, Reason.PROMOTED, f"{record['model']} is the stable revision")
    elif rev.rolled_out:
        message = f"{rev.ready}/{rev.replicas} canary replica(s) ready, {split} percent of the requests ({mode})"
        conditions.set(ConditionType.CANARY_READY, st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
    else:
        message = f"waiting for the canary's replicas to be ready ({rev.ready} ready)"
        conditions.set(ConditionType.CANARY_READY, st.FALSE, Reason.DEPLOYMENT_PROGRESSING, message)
