"""An InferenceService's Ready and PredictorReady, decided from its stable revision alone (pure).

Ready is about serving: True while at least the stable revision's minimum
(`replicas`, or `minReplicas` with an autoscaler) of ready pods serve, whatever
a canary does and while the stable Deployment rolls to a new template (a
promotion, a new model) or a new count. What is in progress shows in kstatus'
`Reconciling` (and the canary in its own conditions), not in Ready.

`verdict` is the one place the message is built, so that a message never
contradicts its own counts (never "waiting for 4 replica(s) ... (4 ready)").
"""

from __future__ import annotations

from dataclasses import dataclass

from ascend_mlops.api.constants import Reason
from ascend_mlops.reconcilers.canary import Revision

SIMULATED_NOTE = " (on the Ascend simulator)"


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    message: str
    reconciling: str | None = None  # kstatus Reconciling=True with this reason; None: nothing in progress
    stalled: str | None = None  # kstatus Stalled=True with this reason (it wins over Reconciling)


def minimum(target: int, min_ready: int | None, kept: int | None) -> int:
    """Ready pods the stable revision needs to count as serving.

    `target`: the replica count asked for; `min_ready`: an autoscaler's
    minimum; `kept`: the ready count of a service that was Ready at its last
    reconciliation (status.readyReplicas). A count raised since (scale 2 -> 4)
    is no loss: the pods that made it Ready still serve, so the bar is not
    raised above what it had until the new pods are ready.
    """
    floor = target if min_ready is None else min(min_ready, target)
    if kept is not None:
        floor = min(floor, max(kept, 1))
    return max(floor, 0)


def verdict(
    stable: Revision, *, wanted: int, needed: int, serving: str, scaled: str = "", simulated: bool = False,
    promoting: bool = False, tolerate_unschedulable: bool = False,
) -> Verdict:
    """Ready / PredictorReady for the stable revision `stable`.

    `wanted`: the count the Deployment is asked for (an autoscaler's, with one);
    `needed`: `minimum(...)`; `serving`: the model URI the stable revision is
    asked to serve; `promoting`: a canary that serves every request while the
    stable revision rolls to its model; `tolerate_unschedulable`: pods an
    autoscaler added beyond the nodes' devices wait without making the
    service not Ready.
    """
    sim = SIMULATED_NOTE if simulated else ""
    counts = f"{stable.ready}/{wanted} replica(s) ready{scaled}"
    problem = stable.problem
    # Pods that wait while enough others serve: those an autoscaler added beyond the nodes' devices, and
    # any pod past the start timeout (a surge pod, a scaled-up one): reported, never a reason for Ready=False.
    waiting = problem is not None and stable.available and (
        problem[0] == Reason.POD_START_TIMEOUT or (tolerate_unschedulable and problem[0] == Reason.UNSCHEDULABLE)
    )
    if stable.rolled_out and problem is not None and not promoting and not waiting:
        # Nothing left to roll, and a pod of the current model is broken: the Deployment's counts cannot be trusted.
        reason, message = problem
        return Verdict(False, reason, message, *_in_progress(reason))
    if stable.rolled_out:
        message = f"{counts}, serving {serving}{sim}"
        if waiting and problem is not None:
            message += f"; the others wait: {problem[1]}"
            if problem[0] == Reason.POD_START_TIMEOUT:
                return Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, message, reconciling=problem[0])
        return Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
    if promoting:
        message = f"promoting {serving}: the canary serves while the stable revision rolls ({stable.ready}/{wanted} ready){sim}"
        return Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, message, reconciling=Reason.DEPLOYMENT_PROGRESSING)
    if stable.available:
        # Rolling (a new model, template or count) with enough ready pods: the service serves meanwhile.
        message = f"{counts}; rolling out {serving} ({stable.updated} updated){sim}"
        if problem is not None:
            reason, why = problem
            return Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, f"{message}; {why}", *_in_progress(reason))
        return Verdict(True, Reason.MINIMUM_REPLICAS_AVAILABLE, message, reconciling=Reason.DEPLOYMENT_PROGRESSING)
    if problem is not None:
        reason, message = problem
        return Verdict(False, reason, message, *_in_progress(reason))
    # Not available: fewer than `needed` ready, so the counts below cannot contradict each other.
    message = f"waiting for {needed} replica(s) to be ready ({stable.ready} ready){scaled}{sim}"
    return Verdict(False, Reason.DEPLOYMENT_PROGRESSING, message, reconciling=Reason.DEPLOYMENT_PROGRESSING)


def _in_progress(problem: str) -> tuple[str | None, str | None]:
    """(Reconciling, Stalled) reasons for a broken pod: a model that cannot load needs a person."""
    return (None, problem) if problem == Reason.MODEL_LOAD_FAILED else (problem, None)
