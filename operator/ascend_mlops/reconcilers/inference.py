"""InferenceService: resolve the model, keep a Deployment and a Service in shape (and, when asked, an
external address and an autoscaler: reconcilers/serving.py), report readiness honestly.

Ready is computed from the Deployment *and* its pods: a Deployment can look
"progressing" for ten minutes while its pods crash-loop on a model that will
never load, which is exactly the state users of model servers most often
mis-read. The pods' container statuses tell why, and that goes into Ready's
message.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Final

from ascend_mlops import events
from ascend_mlops import status as st
from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import (
    FieldError,
    InferenceServiceSpec,
    SpecError,
    StorageURI,
    parse_inference_service,
    parse_storage_uri,
)
from ascend_mlops.builders import inference as builder
from ascend_mlops.builders.common import Owner, selector_labels
from ascend_mlops.builders.model import ResolvedModel
from ascend_mlops.kube import ApiError
from ascend_mlops.reconcilers import credentials, models
from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers import serving as front  # `serving` is the model being served, below
from ascend_mlops.reconcilers.canary import (
    ACTIVE,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    Canary,
    Revision,
    analyse,
    check_health,
    drain_left,
)
from ascend_mlops.reconcilers.children import delete_if_present, ensure_child, update_if_drifted
from ascend_mlops.reconcilers.jobs import describe_exit, failure_details
from ascend_mlops.reconcilers.models import Waiting
from ascend_mlops.reconcilers.runtime import ChildConflict, Key, Result, Runtime, snapshot
from ascend_mlops.settings import ENV_GATEWAY

KIND: Final = constants.INFERENCE_SERVICE
EVENT_CONDITIONS: Final = (
    ConditionType.VALID,
    ConditionType.SOURCE_READY,
    ConditionType.READY,
    ConditionType.STALLED,
    ConditionType.CANARY_READY,
    ConditionType.CANARY_PROMOTED,
    ConditionType.CANARY_ROLLED_BACK,
    ConditionType.AUTOSCALING,
)
# Exit codes with which a server says "this model cannot be loaded"; restarting will not help.
MODEL_LOAD_EXIT_CODES: Final = frozenset(
    {contract.EXIT_USAGE, contract.EXIT_INVALID_MODEL, contract.EXIT_TOOLKIT_MISSING, contract.EXIT_INVALID_PARAMETERS}
)


async def resolve_model(
    rt: Runtime, key: Key, spec: InferenceServiceSpec, *, canary: bool = False
) -> tuple[ResolvedModel, dict[str, Any]]:
    """The model to serve (spec.model, or spec.canary's) and its status.model record, or raise Waiting."""
    if canary:
        assert spec.canary is not None
        c = spec.canary
        return await models.resolve_model(rt, key, models.ModelRef(c.conversion_ref, c.model, c.labels, spec.runtime), slot="canary")
    return await models.resolve_model(rt, key, models.ModelRef(spec.conversion_ref, spec.model, spec.labels, spec.runtime))


async def ensure_deployment(
    rt: Runtime, owner: Owner, desired: dict[str, Any], replicas_within: tuple[int, int] | None = None
) -> dict[str, Any]:
    return await ensure_child(rt, owner, "apps/v1", "deployments", desired, replicas_within=replicas_within)


async def ensure_service(rt: Runtime, owner: Owner, desired: dict[str, Any]) -> None:
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
    rt: Runtime, owner: Owner, deployment: dict[str, Any] | None, component: str, model: str, replicas: int,
    min_ready: int | None = None,
) -> Revision:
    """Readiness of one revision: its Deployment's counts and its current pods' problems.

    Rolled out: every one of `replicas` pods runs the current template, and
    `min_ready` of them (default: all) are ready. With an autoscaler
    (`min_ready` its minimum) every pod there is runs the current template:
    the count moves under us, and pods beyond what the nodes' devices hold
    stay Pending.
    """
    revision = Revision()
    if deployment is None:
        return revision
    dep_status = deployment.get("status") or {}
    revision.replicas = int(dep_status.get("replicas") or 0)
    revision.ready = int(dep_status.get("readyReplicas") or 0)
    updated = dep_status.get("updatedReplicas")
    dep_generation = (deployment.get("metadata") or {}).get("generation")
    dep_observed = dep_status.get("observedGeneration")
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    revision.rolled_out = (
        (template.get("annotations") or {}).get(constants.ANNOTATION_MODEL_DIGEST, model) == model
        and revision.ready >= (replicas if min_ready is None else min(min_ready, replicas))
        and (updated is None or int(updated) >= (replicas if min_ready is None else revision.replicas))
        and (dep_generation is None or dep_observed is None or int(dep_observed) >= int(dep_generation))
    )
    # Pods of the current template carry the model in an annotation; older ones are on their way out.
    pods = await rt.list_children(owner, "v1", "pods", selector_labels(owner, component), direct=False)
    for pod in pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if annotations.get(constants.ANNOTATION_MODEL_DIGEST, model) != model:
            continue
        state = P.pod_state(pod, builder.CONTAINER)
        if state.ready and not state.deleting:
            revision.pods.append(pod)
        problem = pod_problem(state)
        if problem is not None and revision.problem is None:
            revision.problem = problem
    return revision


async def reconcile(rt: Runtime, key: Key) -> Result:
    snap = await snapshot(rt, key)
    if snap is None:
        return Result()
    body, owner = snap.body, snap.owner
    status, conditions = snap.status, snap.conditions

    def not_ready(phase: str, reason: str, message: str, stalled: bool) -> None:
        conditions.set(ConditionType.READY, st.FALSE, reason, message)
        st.set_kstatus(
            conditions,
            reconciling=None if stalled else reason,
            stalled=reason if stalled else None,
            message=message,
        )
        status.update(phase=phase, conditions=conditions.to_list())

    try:
        spec = parse_inference_service(body.get("spec"), rt.settings.accelerator_resource)
        unservable = front.exposure_errors(spec, owner, rt.settings)
        if unservable:
            raise SpecError(unservable)
    except SpecError as exc:
        conditions.set(ConditionType.VALID, st.FALSE, Reason.INVALID_SPEC, str(exc))
        not_ready(Phase.INVALID, Reason.INVALID_SPEC, str(exc), stalled=True)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result()
    conditions.set(ConditionType.VALID, st.TRUE, Reason.SPEC_VALID, "")

    try:
        model, record = await resolve_model(rt, key, spec)
    except Waiting as waiting:
        conditions.set(ConditionType.SOURCE_READY, st.FALSE, waiting.reason, waiting.message)
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, waiting.reason, "no model to serve yet")
        # An existing Deployment keeps serving the previous model meanwhile.
        not_ready(Phase.FAILED if waiting.failed else Phase.WAITING, waiting.reason, waiting.message, waiting.failed)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result()
    conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.MODEL_RESOLVED, f"serving {model.uri}")

    # --- the canary's model and state -----------------------------------------------------
    canary_model: ResolvedModel | None = None
    canary_record: dict[str, Any] | None = None
    state: Canary | None = None
    canary_waiting: Waiting | None = None
    if spec.canary is not None:
        try:
            canary_model, canary_record = await resolve_model(rt, key, spec, canary=True)
        except Waiting as waiting:
            canary_waiting = waiting
        else:
            state = Canary.load(snap.old_status, str(canary_model.uri), snap.now)
    else:
        rt.set_references(key, (), "canary")
        previous = snap.old_status.get("canary")
        if isinstance(previous, Mapping) and previous.get("state") in ACTIVE and previous.get("model") == str(model.uri):
            # GitOps promotion: spec.model is now the canary's model and spec.canary is gone. The
            # canary keeps serving while the stable revision rolls to it, as an automatic promotion does.
            state = Canary(dict(previous))
            if state.state != PROMOTING:
                state.promote(Reason.PROMOTED, "spec.model now names the canary's model")
        elif isinstance(previous, Mapping) and previous.get("state") == PROMOTED and previous.get("model") == str(model.uri):
            state = Canary(dict(previous))  # promoted the GitOps way: the canary's pods drain, then go

    models_to_check: list[StorageURI | None] = [model.uri, model.labels]
    if canary_model is not None:
        models_to_check += [canary_model.uri, canary_model.labels]
    blocked = await credentials.check_storage_secret(rt, owner.namespace, tuple(models_to_check), spec.storage)
    if blocked is None:
        blocked = await front.check_auth_secret(rt, owner.namespace, spec)
    if blocked is not None:
        # No Deployment is created or changed until the pods could start; one already running keeps serving.
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, blocked.reason, blocked.message)
        not_ready(Phase.NOT_READY, blocked.reason, blocked.message, stalled=False)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=blocked.requeue_after)

    canary_name = builder.deployment_name(owner.name, constants.REVISION_CANARY)
    had_canary = bool(snap.old_status.get("canary")) or len(snap.old_status.get("traffic") or []) > 1
    canary_dep = None
    if state is not None or spec.canary is not None or had_canary:  # no extra read for services that never had one
        canary_dep = await rt.read("apps/v1", "deployments", owner.namespace, canary_name)
    canary_rev = Revision()
    if state is not None and state.state in ACTIVE:
        canary_replicas = spec.canary.replicas if spec.canary is not None else int((canary_dep or {}).get("spec", {}).get("replicas") or 0)
        canary_rev = await observe(rt, owner, canary_dep, builder.CANARY_COMPONENT, state.record["model"], canary_replicas)
        if spec.canary is not None:
            check_health(state, spec.canary, canary_rev, snap.now)

    # --- the stable revision: spec.model, or the canary's model once it is being promoted ---------
    serving = model
    held = _promotion_hold(snap.old_status, spec)
    if state is not None and state.state == PROMOTING and canary_model is not None and canary_record is not None:
        serving, record = canary_model, dict(canary_record)
    elif held is not None:
        # An automatic promotion holds while spec.model is what it replaced: a later canary, or removing
        # spec.canary, does not roll the stable revision back behind the user's back.
        serving, record = held
        status["promoted"] = snap.old_status["promoted"]
    if held is None:
        status.pop("promoted", None)
    if rt.settings.simulator:
        record["simulated"] = True
    status["model"] = record
    desired = builder.build_deployment(spec, owner, rt.settings, serving)
    autoscaling = spec.autoscaling
    bounds = (autoscaling.min_replicas, autoscaling.max_replicas) if autoscaling is not None else None
    scaling: front.Scaling | None = None
    try:
        deployment = await ensure_deployment(rt, owner, desired, bounds)
        # With an autoscaler its count is the one to reach, and minReplicas ready is enough.
        wanted = front.live_replicas(deployment, spec.replicas) if autoscaling is not None else spec.replicas
        stable_rev = await observe(
            rt, owner, deployment, builder.COMPONENT, str(serving.uri), wanted,
            min_ready=autoscaling.min_replicas if autoscaling is not None else None,
        )
        if state is not None and state.state == PROGRESSING and spec.canary is not None and spec.canary.analysis is not None:
            if canary_rev.rolled_out and canary_rev.pods:
                await analyse(state, spec.canary.analysis, canary_rev.pods, stable_rev.pods, snap.now)
        if state is not None and state.state == PROMOTING and str(serving.uri) != state.record["model"]:
            state.wake(0.5)  # promoted just now: the next turn rolls the stable revision to the canary's model
        elif state is not None and state.state == PROMOTING and stable_rev.rolled_out and deployment is not desired:
            state.record.update(state=PROMOTED, message=f"{state.record['model']} is the stable revision")
            state.end(snap.now)
            if spec.canary is not None:  # automatic: spec.model still names the old model
                status["promoted"] = {"over": _model_key(spec), "uri": str(serving.uri), "record": record}
            state.note(Reason.PROMOTED, f"canary {state.record['model']} promoted: the stable revision serves it")
        percent = _canary_percent(state, spec, canary_rev)
        await _ensure_canary_children(rt, owner, spec, state, canary_model)
        await _ensure_routing(rt, owner, state, percent, front.route_host(spec, owner, rt.settings))
        await front.ensure_ingress(rt, owner, spec, snap.old_status)
        scaling = await front.ensure_autoscaler(rt, owner, spec, snap.old_status)
        retired = await _retire_canary_children(rt, owner, spec, state, canary_model, canary_dep, snap.now)
    except ChildConflict as exc:
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, Reason.RECONCILE_ERROR, str(exc))
        not_ready(Phase.NOT_READY, Reason.RECONCILE_ERROR, str(exc), stalled=True)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=30.0)
    url = front.external_url(spec, owner, rt.settings)
    if url is not None:
        status["url"] = url
    else:
        status.pop("url", None)
    status["address"] = {"url": builder.service_url(owner.name, owner.namespace)}
    if scaling is not None:
        status["autoscaler"] = scaling.record
        conditions.set(ConditionType.AUTOSCALING, scaling.status, scaling.reason, scaling.message)
    else:
        status.pop("autoscaler", None)
        conditions.remove(ConditionType.AUTOSCALING)
    status["replicas"] = stable_rev.replicas
    status["readyReplicas"] = stable_rev.ready
    _canary_status(
        status, conditions, spec, serving, state, canary_waiting, canary_rev, stable_rev, percent, rt.settings.gateway is not None, retired
    )

    simulated = " (on the Ascend simulator)" if record.get("simulated") else ""
    promoting = state is not None and state.state == PROMOTING and canary_rev.ready > 0
    # An autoscaler may ask for more pods than the nodes have devices for: those wait, the service serves.
    waiting_for_devices = (
        autoscaling is not None and stable_rev.rolled_out and stable_rev.problem is not None
        and stable_rev.problem[0] == Reason.UNSCHEDULABLE
    )
    scaled = f" (autoscaling {autoscaling.min_replicas}-{autoscaling.max_replicas})" if autoscaling is not None else ""
    if stable_rev.problem is not None and not promoting and not waiting_for_devices:
        reason, message = stable_rev.problem
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, reason, message)
        not_ready(Phase.NOT_READY, reason, message, stalled=reason == Reason.MODEL_LOAD_FAILED)
    elif stable_rev.rolled_out or promoting:
        if stable_rev.rolled_out:
            message = f"{stable_rev.ready}/{wanted} replica(s) ready{scaled}, serving {serving.uri}{simulated}"
            if waiting_for_devices and stable_rev.problem is not None:
                message += f"; the others wait: {stable_rev.problem[1]}"
        else:
            message = f"promoting {serving.uri}: the canary serves while the stable revision rolls ({stable_rev.ready}/{wanted} ready){simulated}"
        conditions.set(ConditionType.PREDICTOR_READY, st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
        conditions.set(ConditionType.READY, st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
        st.set_kstatus(conditions, reconciling=None, stalled=None)
        status.update(phase=Phase.READY, conditions=conditions.to_list())
    else:
        needed = autoscaling.min_replicas if autoscaling is not None else spec.replicas
        message = f"waiting for {needed} replica(s) to be ready ({stable_rev.ready} ready){scaled}{simulated}"
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, Reason.DEPLOYMENT_PROGRESSING, message)
        not_ready(Phase.NOT_READY, Reason.DEPLOYMENT_PROGRESSING, message, stalled=False)
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    if state is not None and state.notes:
        events.post(body, state.notes)
    wakes = [t for t in (state.requeue_after if state is not None else None, scaling.requeue_after if scaling else None) if t is not None]
    return Result(requeue_after=min(wakes) if wakes else None)


def _model_key(spec: InferenceServiceSpec) -> str:
    """spec.model as written: any edit of it ends a promotion's hold."""
    return f"conversionRef/{spec.conversion_ref}" if spec.conversion_ref else str(spec.model)


def _promotion_hold(old_status: Mapping[str, Any], spec: InferenceServiceSpec) -> tuple[ResolvedModel, dict[str, Any]] | None:
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


def _canary_percent(state: Canary | None, spec: InferenceServiceSpec, canary: Revision) -> int | None:
    """The canary's weight now; None when there is no canary Deployment to send anything to."""
    if state is None or state.state not in ACTIVE:
        return None
    if state.state == PROMOTING:
        return 100 if canary.ready else None
    return state.percent(spec.canary) if canary.ready else 0


async def _ensure_canary_children(
    rt: Runtime, owner: Owner, spec: InferenceServiceSpec, state: Canary | None, model: ResolvedModel | None,
) -> None:
    """Before traffic moves to it: the running canary's Deployment and the per-revision Services."""
    if state is None or state.state not in ACTIVE:
        return
    if spec.canary is not None and model is not None:
        desired = builder.build_deployment(
            spec, owner, rt.settings, model, revision=constants.REVISION_CANARY, replicas=spec.canary.replicas
        )
        await ensure_deployment(rt, owner, desired)
    for revision in (constants.REVISION_STABLE, constants.REVISION_CANARY):
        await ensure_service(rt, owner, builder.build_revision_service(owner, revision))


async def _retire_canary_children(
    rt: Runtime, owner: Owner, spec: InferenceServiceSpec, state: Canary | None, model: ResolvedModel | None,
    existing: dict[str, Any] | None, now: datetime.datetime,
) -> bool:
    """After traffic moved away (and DRAIN_SECONDS for routers to follow): scale a rolled-back canary to 0
    (its NPUs go back) or delete a finished one. True when nothing of it is left to retire."""
    if state is not None and state.state in ACTIVE:
        return True
    if existing is None and state is None:
        return True
    left = drain_left(state, now)
    if left > 0:
        assert state is not None
        state.wake(left)
        return False
    name = builder.deployment_name(owner.name, constants.REVISION_CANARY)
    if state is not None and state.state == ROLLED_BACK and spec.canary is not None and model is not None:
        if existing is not None:
            desired = builder.build_deployment(spec, owner, rt.settings, model, revision=constants.REVISION_CANARY, replicas=0)
            await ensure_deployment(rt, owner, desired)
    elif existing is not None:
        await delete_if_present(rt, owner, "apps/v1", "deployments", name)
    for revision in (constants.REVISION_STABLE, constants.REVISION_CANARY):
        await delete_if_present(rt, owner, "v1", "services", builder.revision_service_name(owner.name, revision))
    return True


async def _ensure_routing(rt: Runtime, owner: Owner, state: Canary | None, percent: int | None, host: str | None) -> None:
    """The client Service's selector follows the split; with a Gateway, the HTTPRoute carries exact weights
    (and spec.exposure's host, when it exposes the service through the Gateway)."""
    if percent is None or percent == 0:
        revisions: tuple[str, ...] = (constants.REVISION_STABLE,)
    elif percent == 100:
        revisions = (constants.REVISION_CANARY,)
    else:
        revisions = (constants.REVISION_STABLE, constants.REVISION_CANARY)
    await ensure_service(rt, owner, builder.build_service(owner, revisions))
    if rt.settings.gateway is not None:
        weights = percent if state is not None and state.state in ACTIVE and percent is not None else None
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


def _canary_status(
    status: dict[str, Any], conditions: st.Conditions, spec: InferenceServiceSpec, serving: ResolvedModel,
    state: Canary | None, waiting: Waiting | None, canary: Revision, stable: Revision, percent: int | None, gateway: bool,
    retired: bool = True,
) -> None:
    """status.traffic (one entry per revision), status.canary and the Canary* conditions."""
    mode = "HTTPRoute" if gateway else "Service"
    split = percent or 0
    if not gateway and percent not in (None, 0, 100):
        # Without a Gateway requests spread over the ready pods of both revisions.
        total = stable.ready + canary.ready
        split = round(100 * canary.ready / total) if total else 0
    traffic = [{
        "revision": constants.REVISION_STABLE, "model": str(serving.uri), "percent": 100 - split,
        "replicas": stable.replicas, "readyReplicas": stable.ready,
    }]
    if state is not None and state.state in ACTIVE:
        traffic.append({
            "revision": constants.REVISION_CANARY, "model": state.record["model"], "percent": split,
            "replicas": canary.replicas, "readyReplicas": canary.ready,
        })
    elif spec.canary is not None and state is not None and state.state == ROLLED_BACK:
        traffic.append({"revision": constants.REVISION_CANARY, "model": state.record["model"], "percent": 0, "replicas": canary.replicas, "readyReplicas": 0})
    status["traffic"] = traffic
    status["trafficSplit"] = mode
    if spec.canary is None and (state is None or state.state not in ACTIVE):
        if state is not None and not retired:
            status["canary"] = state.record  # kept until its pods are gone (the drain), then cleared
        else:
            status.pop("canary", None)
        for type_ in (ConditionType.CANARY_READY, ConditionType.CANARY_PROMOTED, ConditionType.CANARY_ROLLED_BACK):
            conditions.remove(type_)
        return
    if waiting is not None:
        status.pop("canary", None)
        conditions.set(ConditionType.CANARY_READY, st.FALSE, waiting.reason, waiting.message.replace("spec.model", "spec.canary"))
        conditions.remove(ConditionType.CANARY_PROMOTED)
        conditions.remove(ConditionType.CANARY_ROLLED_BACK)
        return
    assert state is not None
    record = state.record
    record["percent"] = split
    record["split"] = mode
    status["canary"] = record
    if state.state == ROLLED_BACK:
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
    elif canary.rolled_out:
        message = f"{canary.ready}/{canary.replicas} canary replica(s) ready, {split} percent of the requests ({mode})"
        conditions.set(ConditionType.CANARY_READY, st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
    else:
        message = f"waiting for the canary's replicas to be ready ({canary.ready} ready)"
        conditions.set(ConditionType.CANARY_READY, st.FALSE, Reason.DEPLOYMENT_PROGRESSING, message)
