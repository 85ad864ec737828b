"""InferenceService: resolve the model, keep a Deployment and a Service in shape (and, when asked, an
external address and an autoscaler: reconcilers/serving.py), report readiness honestly.

Ready is computed from the Deployment *and* its pods: a Deployment can look
"progressing" for ten minutes while its pods crash-loop on a model that will
never load, which is exactly the state users of model servers most often
mis-read. The pods' container statuses tell why, and that goes into Ready's
message. `reconcile` is a sequence of steps; the canary's decisions are
reconcilers/rollout.py's, the reads and writes they lead to are here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops import events
from ascend_mlops import status as st
from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import InferenceServiceSpec, SpecError, parse_inference_service
from ascend_mlops.builders import inference as builder
from ascend_mlops.builders.common import Owner, selector_labels
from ascend_mlops.kube import ApiError
from ascend_mlops.reconcilers import credentials, podstart, readiness, rollout, serving, sources
from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers.canary import ACTIVE, Canary, Revision, analyse, check_health
from ascend_mlops.reconcilers.children import delete_if_present, ensure_child, update_if_drifted
from ascend_mlops.reconcilers.engine import ChildConflict, Engine, Key, Result, Snapshot, snapshot
from ascend_mlops.reconcilers.jobs import describe_exit, earliest, failure_details
from ascend_mlops.reconcilers.rollout import Models, Stable
from ascend_mlops.reconcilers.sources import ModelRef, Waiting
from ascend_mlops.settings import ENV_GATEWAY, Settings

KIND: Final = constants.INFERENCE_SERVICE
EVENT_CONDITIONS: Final = (ConditionType.VALID, ConditionType.SOURCE_READY, ConditionType.READY, ConditionType.STALLED, *rollout.CANARY_CONDITIONS, ConditionType.AUTOSCALING)
# Exit codes with which a server says "this model cannot be loaded"; restarting will not help.
MODEL_LOAD_EXIT_CODES: Final = frozenset({contract.EXIT_USAGE, contract.EXIT_INVALID_MODEL, contract.EXIT_TOOLKIT_MISSING, contract.EXIT_INVALID_PARAMETERS})
PREDICTOR: Final = ConditionType.PREDICTOR_READY
CANARY: Final = constants.REVISION_CANARY


async def reconcile(rt: Engine, key: Key) -> Result:
    """One reconciliation: the steps of serve(), or the status of the step that halted them."""
    snap = await snapshot(rt, key)
    if snap is None:
        return Result()
    try:
        return await serve(rt, key, snap)
    except Halt as halt:
        halt.report(snap.status, snap.conditions)
        await rt.write_status(key, snap.body, snap.status, EVENT_CONDITIONS)
        return Result(requeue_after=halt.requeue_after)


async def serve(rt: Engine, key: Key, snap: Snapshot) -> Result:
    """Spec, models, their Secrets, the canary, the stable revision, the other children, the status."""
    spec = valid_spec(snap, rt.settings)
    found = await resolve_models(rt, key, spec, snap)
    await check_secrets(rt, snap.owner.namespace, spec, found)
    canary_dep, canary_rev = await observe_canary(rt, snap, spec, found)
    stable = rollout.stable_model(spec, found, snap.old_status, snap.status, rt.settings.simulator)
    state = found.state
    try:
        await roll_stable(rt, snap, spec, stable)
        analysis = rollout.analysis_due(state, spec, canary_rev)
        if analysis is not None and state is not None:
            await analyse(state, analysis, canary_rev.pods, stable.rev.pods, snap.now)
        rollout.settle_promotion(state, spec, stable, snap.status, snap.now)
        percent = rollout.canary_percent(state, spec, canary_rev)
        scaling, retired = await ensure_children(rt, snap, spec, found, canary_dep, percent)
    except ChildConflict as exc:
        raise Halt(Phase.NOT_READY, Reason.RECONCILE_ERROR, str(exc), True, ((PREDICTOR, str(exc)),), 30.0) from exc
    report_exposure(snap, spec, rt.settings, scaling)
    rollout.report_canary(snap.status, snap.conditions, spec, found, stable, canary_rev, percent, rt.settings.gateway is not None, retired)
    verdict = report_ready(snap.status, snap.conditions, spec, stable, rollout.promoting(state, canary_rev))
    await rt.write_status(key, snap.body, snap.status, EVENT_CONDITIONS)
    events.post(snap.body, events_to_post(verdict, snap.old_status, state))
    return Result(requeue_after=earliest(state.requeue_after if state else None, scaling.requeue_after if scaling else None, stable.rev.requeue_after))


@dataclass(eq=False)
class Halt(Exception):
    """A reconciliation that stops short: the `before` (condition, message)s, Ready and kstatus False with `reason`."""

    phase: str
    reason: str
    message: str
    stalled: bool
    before: tuple[tuple[str, str], ...] = ()
    requeue_after: float | None = None

    def report(self, status: dict[str, Any], conditions: st.Conditions) -> None:
        for type_, message in self.before:
            conditions.set(type_, st.FALSE, self.reason, message)
        conditions.set(ConditionType.READY, st.FALSE, self.reason, self.message)
        stalled = self.reason if self.stalled else None
        st.set_kstatus(conditions, reconciling=None if stalled else self.reason, stalled=stalled, message=self.message)
        status.update(phase=self.phase, conditions=conditions.to_list())


def valid_spec(snap: Snapshot, settings: Settings) -> InferenceServiceSpec:
    """The spec, if these settings can serve it (spec.exposure); else Halt, Stalled until it is edited."""
    try:
        spec = parse_inference_service(snap.body.get("spec"), settings.accelerator_resource)
        unservable = serving.exposure_errors(spec, snap.owner, settings)
        if unservable:
            raise SpecError(unservable)
    except SpecError as exc:
        raise Halt(Phase.INVALID, Reason.INVALID_SPEC, str(exc), True, ((ConditionType.VALID, str(exc)),)) from None
    snap.conditions.set(ConditionType.VALID, st.TRUE, Reason.SPEC_VALID, "")
    return spec


async def resolve_models(rt: Engine, key: Key, spec: InferenceServiceSpec, snap: Snapshot) -> Models:
    """spec.model's model (else Halt: a Deployment keeps serving the old one), spec.canary's, the canary's state."""
    try:
        model, record = await sources.resolve_model(rt, key, ModelRef(spec.conversion_ref, spec.model, spec.labels, spec.runtime))
    except Waiting as w:
        before = ((ConditionType.SOURCE_READY, w.message), (PREDICTOR, "no model to serve yet"))
        raise Halt(Phase.FAILED if w.failed else Phase.WAITING, w.reason, w.message, w.failed, before) from None
    snap.conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.MODEL_RESOLVED, f"serving {model.uri}")
    found, c = Models(model, record), spec.canary
    if c is None:
        rt.set_references(key, (), "canary")
        found.state = rollout.gitops_state(snap.old_status, str(model.uri))
        return found
    try:
        found.canary_model, found.canary_record = await sources.resolve_model(rt, key, ModelRef(c.conversion_ref, c.model, c.labels, spec.runtime), slot="canary")
    except Waiting as waiting:
        found.waiting = waiting
    else:
        found.state = Canary.load(snap.old_status, str(found.canary_model.uri), snap.now)
    return found


async def check_secrets(rt: Engine, namespace: str, spec: InferenceServiceSpec, found: Models) -> None:
    """Halt while the pods could not start for want of a Secret: no Deployment changes; a running one serves."""
    blocked = await credentials.check_storage_secret(rt, namespace, found.locations(), spec.storage)
    if blocked is None:
        blocked = await serving.check_auth_secret(rt, namespace, spec)
    if blocked is not None:
        raise Halt(Phase.NOT_READY, blocked.reason, blocked.message, False, ((PREDICTOR, blocked.message),), blocked.requeue_after)


async def observe_canary(rt: Engine, snap: Snapshot, spec: InferenceServiceSpec, found: Models) -> tuple[dict[str, Any] | None, Revision]:
    """The canary Deployment (unread if there never was one); while active, its pods' state (check_health)."""
    owner, state, old = snap.owner, found.state, snap.old_status
    deployment = None
    if state is not None or spec.canary is not None or old.get("canary") or len(old.get("traffic") or []) > 1:
        deployment = await rt.read("apps/v1", "deployments", owner.namespace, builder.deployment_name(owner.name, CANARY))
    if state is None or state.state not in ACTIVE:
        return deployment, Revision()
    replicas = spec.canary.replicas if spec.canary is not None else int((deployment or {}).get("spec", {}).get("replicas") or 0)
    revision = await observe(rt, owner, deployment, builder.CANARY_COMPONENT, state.record["model"], replicas)
    if spec.canary is not None:
        check_health(state, spec.canary, revision, snap.now)
    return deployment, revision


async def roll_stable(rt: Engine, snap: Snapshot, spec: InferenceServiceSpec, stable: Stable) -> None:
    """The stable Deployment as the spec says (its count the autoscaler's, with one); what it and its pods say."""
    scaling, old = spec.autoscaling, snap.old_status
    desired = builder.build_deployment(spec, snap.owner, rt.settings, stable.model)
    deployment = await ensure_deployment(rt, snap.owner, desired, (scaling.min_replicas, scaling.max_replicas) if scaling else None)
    stable.created = deployment is desired
    # With an autoscaler its count is the one to reach, and minReplicas ready is enough.
    stable.wanted = serving.live_replicas(deployment, spec.replicas) if scaling is not None else spec.replicas
    # A service that was Ready keeps the bar it cleared: a count raised since (a scale-up) is no loss.
    kept = old.get("readyReplicas") if st.condition_is(old, ConditionType.READY, st.TRUE) else None
    stable.kept = kept if isinstance(kept, int) else None
    stable.rev = await observe(
        rt, snap.owner, deployment, builder.COMPONENT, str(stable.model.uri), stable.wanted,
        min_ready=scaling.min_replicas if scaling is not None else None, kept=stable.kept, now=snap.now,
    )


async def ensure_children(
    rt: Engine, snap: Snapshot, spec: InferenceServiceSpec, found: Models, canary_dep: dict[str, Any] | None, percent: int | None
) -> tuple[serving.Scaling | None, bool]:
    """The other children, the canary's before traffic moves to it and retired after (True: nothing left)."""
    owner, state, model = snap.owner, found.state, found.canary_model
    if state is not None and state.state in ACTIVE:
        if spec.canary is not None and model is not None:
            desired = builder.build_deployment(spec, owner, rt.settings, model, revision=CANARY, replicas=spec.canary.replicas)
            await ensure_deployment(rt, owner, desired)
        for revision in (constants.REVISION_STABLE, CANARY):
            await ensure_service(rt, owner, builder.build_revision_service(owner, revision))
    await ensure_routing(rt, owner, *rollout.routed(state, percent), serving.route_host(spec, owner, rt.settings))
    await serving.ensure_ingress(rt, owner, spec, snap.old_status)
    scaling = await serving.ensure_autoscaler(rt, owner, spec, snap.old_status)
    action = rollout.retirement(state, spec, model is not None, canary_dep is not None, snap.now)
    if action == rollout.SCALE_DOWN and model is not None:
        await ensure_deployment(rt, owner, builder.build_deployment(spec, owner, rt.settings, model, revision=CANARY, replicas=0))
    elif action == rollout.DELETE:
        await delete_if_present(rt, owner, "apps/v1", "deployments", builder.deployment_name(owner.name, CANARY))
    if action in (rollout.SCALE_DOWN, rollout.DELETE, rollout.SERVICES):
        for revision in (constants.REVISION_STABLE, CANARY):
            await delete_if_present(rt, owner, "v1", "services", builder.revision_service_name(owner.name, revision))
    return scaling, action != rollout.DRAINING


async def ensure_routing(rt: Engine, owner: Owner, revisions: tuple[str, ...], weights: int | None, host: str | None) -> None:
    """The client Service selects `revisions`; with a Gateway, the HTTPRoute carries exact weights
    (and spec.exposure's host, when it exposes the service through the Gateway)."""
    await ensure_service(rt, owner, builder.build_service(owner, revisions))
    if rt.settings.gateway is not None:
        route = builder.build_httproute(owner, rt.settings.gateway, host, weights)
        try:
            await ensure_child(rt, owner, constants.GATEWAY_API_VERSION, constants.HTTPROUTES, route)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise GatewayMissing(
                f"{ENV_GATEWAY} names a Gateway, but the cluster serves no HTTPRoute ({constants.GATEWAY_API_VERSION}); "
                f"install the Gateway API CRDs or unset {ENV_GATEWAY} to split by ready replicas"
            ) from None


def report_exposure(snap: Snapshot, spec: InferenceServiceSpec, settings: Settings, scaling: serving.Scaling | None) -> None:
    """status.url (with spec.exposure), status.address, status.autoscaler and the Autoscaling condition."""
    status, owner = snap.status, snap.owner
    status.pop("url", None)
    if (url := serving.external_url(spec, owner, settings)) is not None:
        status["url"] = url
    status["address"] = {"url": builder.service_url(owner.name, owner.namespace)}
    if scaling is not None:
        status["autoscaler"] = scaling.record
        snap.conditions.set(ConditionType.AUTOSCALING, scaling.status, scaling.reason, scaling.message)
    else:
        status.pop("autoscaler", None)
        snap.conditions.remove(ConditionType.AUTOSCALING)


def report_ready(status: dict[str, Any], conditions: st.Conditions, spec: InferenceServiceSpec, stable: Stable, promoting: bool) -> readiness.Verdict:
    """status.replicas, Ready and PredictorReady (readiness.verdict of the stable revision), kstatus, the phase."""
    scaling, rev = spec.autoscaling, stable.rev
    verdict = readiness.verdict(
        rev, wanted=stable.wanted, serving=str(stable.model.uri), simulated=stable.simulated,
        needed=readiness.minimum(stable.wanted, scaling.min_replicas if scaling is not None else None, stable.kept),
        scaled=f" (autoscaling {scaling.min_replicas}-{scaling.max_replicas})" if scaling is not None else "",
        promoting=promoting,
        tolerate_unschedulable=scaling is not None,  # pods an autoscaler added beyond the nodes' devices wait
    )
    summary = st.TRUE if verdict.ready else st.FALSE
    conditions.set(PREDICTOR, summary, verdict.reason, verdict.message)
    conditions.set(ConditionType.READY, summary, verdict.reason, verdict.message)
    st.set_kstatus(conditions, reconciling=verdict.reconciling, stalled=verdict.stalled, message=verdict.message)
    phase = Phase.READY if verdict.ready else Phase.NOT_READY
    status.update(replicas=rev.replicas, readyReplicas=rev.ready, phase=phase, conditions=conditions.to_list())
    return verdict


def events_to_post(verdict: readiness.Verdict, old_status: dict[str, Any], state: Canary | None) -> list[events.Event]:
    """A pod that does not start while Ready stays True (no transition to post), then what the canary did."""
    posted = []
    previous = (st.get_condition(old_status, ConditionType.RECONCILING) or {}).get("reason")
    if verdict.ready and verdict.reconciling == Reason.POD_START_TIMEOUT and previous != Reason.POD_START_TIMEOUT:
        posted.append(events.Event(events.WARNING, Reason.POD_START_TIMEOUT, verdict.message))
    return posted + (state.notes if state is not None else [])


async def ensure_deployment(
    rt: Engine, owner: Owner, desired: dict[str, Any], replicas_within: tuple[int, int] | None = None
) -> dict[str, Any]:
    return await ensure_child(rt, owner, "apps/v1", "deployments", desired, replicas_within=replicas_within)


async def ensure_service(rt: Engine, owner: Owner, desired: dict[str, Any]) -> None:
    name = desired["metadata"]["name"]
    existing = await rt.read("v1", "services", owner.namespace, name)
    if existing is None:
        await rt.create_child(owner, "v1", "services", desired)
        return
    # The cluster IP is immutable and allocated by the API server: keep it.
    for field_name in ("clusterIP", "clusterIPs"):
        if field_name in (existing.get("spec") or {}):
            desired["spec"][field_name] = existing["spec"][field_name]
    await update_if_drifted(rt, owner, "v1", "services", existing, desired)


def pod_problem(state: P.PodState) -> tuple[str, str] | None:
    """(reason, message) when a server pod is broken in a way a user must hear about."""
    if state.deleting or state.phase in (P.SUCCEEDED,):
        return None
    if state.waiting_reason == "CrashLoopBackOff" or state.phase == P.FAILED or (
        state.terminated is not None and state.terminated.exit_code != 0
    ):
        code, error, _ = failure_details(state)
        reason = Reason.MODEL_LOAD_FAILED if code in MODEL_LOAD_EXIT_CODES else Reason.CRASH_LOOP
        restarts = f" after {state.restarts} restart(s)" if state.restarts else ""
        return reason, f"pod {state.name}: the server keeps exiting{restarts}, last with {describe_exit(code)}: {error}"
    if state.waiting_reason in P.IMAGE_PULL_REASONS:
        return Reason.IMAGE_PULL_FAILED, P.pending_explanation(state)
    if state.unschedulable:
        return Reason.UNSCHEDULABLE, P.pending_explanation(state)
    if state.waiting_reason in P.CONFIG_ERROR_REASONS:
        return Reason.CRASH_LOOP, P.pending_explanation(state)
    return None


class GatewayMissing(ChildConflict):
    """The operator is told to use a Gateway, but the Gateway API is not installed."""


async def observe(
    rt: Engine, owner: Owner, deployment: dict[str, Any] | None, component: str, model: str, replicas: int,
    min_ready: int | None = None, kept: int | None = None, now: datetime.datetime | None = None,
) -> Revision:
    """Readiness of one revision: its Deployment's counts and its current pods' problems.

    Available: at least its minimum of pods are ready (`min_ready`, default
    all `replicas`; no more than `kept`, the ready count it was Ready with),
    whatever template they run: a revision rolling to a new template or
    generation (a promotion, a new model, a scale) serves meanwhile.
    Rolled out: also every one of `replicas` pods runs the current template,
    and the Deployment has seen its latest generation. With an autoscaler
    (`min_ready` its minimum) every pod there is runs the current template:
    the count moves under us, and pods beyond what the nodes' devices hold
    stay Pending.
    With `now`: a current pod still not running ASCEND_MLOPS_POD_START_TIMEOUT
    seconds after it was scheduled is a problem of reason PodStartTimeout (and
    `requeue_after` is when the next waiting pod reaches that deadline).
    """
    revision = Revision()
    if deployment is None:
        return revision
    dep_status = deployment.get("status") or {}
    revision.replicas = int(dep_status.get("replicas") or 0)
    revision.ready = int(dep_status.get("readyReplicas") or 0)
    # A count the apiserver leaves out is 0 (omitempty): right after a template change the
    # Deployment controller reports its new generation before the new ReplicaSet has a pod.
    revision.updated = int(dep_status.get("updatedReplicas") or 0)
    revision.available = revision.ready >= readiness.minimum(replicas, min_ready, kept)
    dep_generation = (deployment.get("metadata") or {}).get("generation")
    dep_observed = dep_status.get("observedGeneration")
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    revision.rolled_out = (
        (template.get("annotations") or {}).get(constants.ANNOTATION_MODEL_DIGEST, model) == model
        and revision.ready >= (replicas if min_ready is None else min(min_ready, replicas))
        and revision.updated >= (replicas if min_ready is None else revision.replicas)
        and (dep_generation is None or dep_observed is None or int(dep_observed) >= int(dep_generation))
    )
    # Pods of the current template carry the model in an annotation; older ones are on their way out.
    pods = await rt.list_children(owner, "v1", "pods", selector_labels(owner, component), direct=False)
    current = [
        (pod, P.pod_state(pod, builder.CONTAINER)) for pod in pods
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(constants.ANNOTATION_MODEL_DIGEST, model) == model
    ]
    started = podstart.StartCheck("")
    if now is not None:
        started = await podstart.check(rt, owner.namespace, [state for _, state in current], now)
        revision.requeue_after = started.requeue_after
    for pod, state in current:
        if state.ready and not state.deleting:
            revision.pods.append(pod)
        # Past the start timeout a waiting pod's problem (an image pull, a config error, or nothing
        # said: a volume, the pod sandbox) is that it has not started, with the kubelet's reason.
        problem = (Reason.POD_START_TIMEOUT, started.message) if state.name in started.pods else pod_problem(state)
        if problem is not None and revision.problem is None:
            revision.problem = problem
    return revision
