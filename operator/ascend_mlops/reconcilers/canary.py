"""The canary of an InferenceService: its state machine, kept in `status.canary`.

    (spec.canary set) -> Progressing --(analysis passes the last step)--> Promoting --(stable rolled)--> Promoted
                              |                                             ^
                              +--(crash loop, load failure, unschedulable,  |  (GitOps: spec.model := canary's
                                  deadline, analysis fails)--> RolledBack   |   model, spec.canary removed)

The state is keyed by the canary's model: a different model in spec.canary
starts again at Progressing; the same one stays where it was decided, so a
rolled-back canary is not retried until its spec changes, and a restarted
operator continues from the status it finds.

Promotion needs no extra Ascend device: the canary (already running) takes
every request while the stable Deployment rolls to the canary's model in
place, one pod at a time; then the canary goes. No request needs a pod that
is not there.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ascend_mlops import events
from ascend_mlops import status as st
from ascend_mlops.api.constants import Reason
from ascend_mlops.api.specs import CanaryAnalysis, CanarySpec
from ascend_mlops.reconcilers import analysis

PROGRESSING: Final = "Progressing"
PROMOTING: Final = "Promoting"
PROMOTED: Final = "Promoted"
ROLLED_BACK: Final = "RolledBack"
ACTIVE: Final = frozenset({PROGRESSING, PROMOTING})  # states with a running canary Deployment
MAX_DECISIONS: Final = 10  # analysis records kept in status.canary.decisions
# Between moving the traffic off a canary and removing its pods: time for routers (kube-proxy,
# a Gateway's data plane) to follow, so that no request is sent to a pod that is going away.
DRAIN_SECONDS: Final = 5.0


@dataclass
class Revision:
    """What a revision's Deployment and pods say."""

    replicas: int = 0
    ready: int = 0
    updated: int = 0  # pods of the current template (the Deployment's updatedReplicas)
    # Serving: at least its minimum of ready pods, whatever template they run. A revision
    # rolling to a new template (a promotion, a new model, a scale) stays available.
    available: bool = False
    rolled_out: bool = False  # every replica of the current template ready: nothing left to roll
    problem: tuple[str, str] | None = None  # (reason, message) of a broken pod
    pods: list[dict[str, Any]] = field(default_factory=list)
    requeue_after: float | None = None  # when a pod waiting to start reaches ASCEND_MLOPS_POD_START_TIMEOUT


@dataclass
class Canary:
    """`status.canary`, as read and as it is being changed by this reconciliation."""

    record: dict[str, Any]
    notes: list[events.Event] = field(default_factory=list)
    requeue_after: float | None = None

    @classmethod
    def load(cls, status: Mapping[str, Any], model: str, now: datetime.datetime) -> Canary:
        old = status.get("canary")
        if isinstance(old, Mapping) and old.get("model") == model and old.get("state"):
            return cls(dict(old))
        return cls({"model": model, "state": PROGRESSING, "step": 0, "startedAt": st.timestamp(now)})

    @property
    def state(self) -> str:
        return str(self.record.get("state"))

    @property
    def step(self) -> int:
        return int(self.record.get("step") or 0)

    def note(self, reason: str, message: str) -> None:
        kind = events.WARNING if reason in events.WARNING_REASONS else events.NORMAL
        self.notes.append(events.Event(kind, reason, message))

    def wake(self, seconds: float) -> None:
        seconds = max(0.5, seconds)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)

    def end(self, now: datetime.datetime) -> None:
        """The canary gets no more traffic from now on; its pods go after DRAIN_SECONDS."""
        self.record["endedAt"] = st.timestamp(now)

    def roll_back(self, reason: str, message: str, now: datetime.datetime) -> None:
        self.record.update(state=ROLLED_BACK, reason=reason, message=st.shorten(message))
        self.end(now)
        for key in ("baseline", "lastAnalysis"):
            self.record.pop(key, None)
        self.note(reason, f"canary {self.record['model']} rolled back to 0 percent: {message}")

    def promote(self, reason: str, message: str) -> None:
        self.record.update(state=PROMOTING, reason=reason, message=st.shorten(message))
        for key in ("baseline", "lastAnalysis"):
            self.record.pop(key, None)
        self.note(reason, f"promoting canary {self.record['model']}: {message}")

    def percent(self, spec: CanarySpec | None) -> int:
        """The canary's share of the requests this state asks for (before readiness)."""
        if self.state == PROMOTING:
            return 100
        if self.state != PROGRESSING or spec is None:
            return 0
        if spec.analysis is not None:
            return spec.analysis.steps[min(self.step, len(spec.analysis.steps) - 1)]
        return spec.traffic_percent


def drain_left(canary: Canary | None, now: datetime.datetime) -> float:
    """Seconds until a canary that stopped getting traffic may lose its pods (0: now)."""
    ended = st.parse_timestamp((canary.record if canary is not None else {}).get("endedAt"))
    if ended is None:
        return 0.0
    return max(0.0, DRAIN_SECONDS - (now - ended).total_seconds())


def check_health(canary: Canary, spec: CanarySpec, revision: Revision, now: datetime.datetime) -> None:
    """Roll a Progressing canary back when it cannot become ready: broken pods, or the deadline."""
    if canary.state != PROGRESSING:
        return
    if revision.problem is not None:
        canary.roll_back(*revision.problem, now)
        return
    if revision.rolled_out:
        canary.record.pop("waitingSince", None)
        return
    started = st.parse_timestamp(canary.record.get("waitingSince")) or now
    canary.record["waitingSince"] = st.timestamp(started)
    waited = (now - started).total_seconds()
    if waited >= spec.progress_deadline_seconds:
        canary.roll_back(
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"{revision.ready}/{revision.replicas} canary replica(s) ready after {waited:.0f}s "
            f"(progressDeadlineSeconds {spec.progress_deadline_seconds})",
            now,
        )
    else:
        canary.wake(spec.progress_deadline_seconds - waited)


async def analyse(
    canary: Canary, spec: CanaryAnalysis, canary_pods: list[dict[str, Any]], stable_pods: list[dict[str, Any]], now: datetime.datetime
) -> None:
    """One analysis turn of a ready, Progressing canary: take a baseline, or judge the interval since it."""
    last = st.parse_timestamp(canary.record.get("lastAnalysis"))
    if last is not None and (now - last).total_seconds() < spec.interval_seconds:
        canary.wake(spec.interval_seconds - (now - last).total_seconds())
        return
    readings = {"canary": await analysis.read_pods(canary_pods), "stable": await analysis.read_pods(stable_pods)}
    baseline = canary.record.get("baseline")
    canary.record["lastAnalysis"] = st.timestamp(now)
    canary.wake(spec.interval_seconds)
    if last is None or not isinstance(baseline, Mapping):
        canary.record["baseline"] = readings
        return
    ours = analysis.window(readings["canary"], baseline.get("canary") or {})
    theirs = analysis.window(readings["stable"], baseline.get("stable") or {})
    step = canary.step
    percent = spec.steps[step]
    decision: dict[str, Any] = {
        "time": st.timestamp(now), "step": step, "percent": percent, "canary": ours.record(), "stable": theirs.record(),
    }
    figures = f"canary {ours.describe()}; stable {theirs.describe()}"
    failures = []
    if ours.requests and ours.error_rate > spec.max_error_rate:
        failures.append(f"5xx share {ours.error_rate:.1%} > maxErrorRate {spec.max_error_rate:.1%}")
    if spec.max_latency_p99_ms is not None and ours.p99_ms is not None and ours.p99_ms > spec.max_latency_p99_ms:
        failures.append(f"p99 {ours.p99_ms:.0f} ms > maxLatencyP99Ms {spec.max_latency_p99_ms:g}")
    if failures:
        decision.update(decision="RollBack", reason="; ".join(failures))
        _remember(canary, decision)
        canary.roll_back(Reason.ANALYSIS_FAILED, f"at {percent} percent: {'; '.join(failures)} ({figures})", now)
    elif ours.requests < spec.min_requests:
        # Not enough evidence yet: keep the baseline, so that the next interval adds to this one.
        decision.update(decision="Wait", reason=f"{ours.requests} canary requests < minRequests {spec.min_requests}")
        _remember(canary, decision)
    elif step + 1 < len(spec.steps):
        decision.update(decision="Advance", reason=f"passed at {percent} percent; next {spec.steps[step + 1]} percent")
        _remember(canary, decision)
        canary.record.update(step=step + 1, baseline=readings)
        canary.note(Reason.STEP_PASSED, f"canary {canary.record['model']}: step {step + 1}/{len(spec.steps)} passed at "
                    f"{percent} percent ({figures}); now {spec.steps[step + 1]} percent")
    else:
        decision.update(decision="Promote", reason=f"passed the last step ({percent} percent)")
        _remember(canary, decision)
        canary.promote(Reason.ANALYSIS_PASSED, f"every step passed ({figures})")


def _remember(canary: Canary, decision: dict[str, Any]) -> None:
    decisions = list(canary.record.get("decisions") or [])
    decisions.append(decision)
    canary.record["decisions"] = decisions[-MAX_DECISIONS:]
