"""InferenceService: resolve the model, keep a Deployment and a Service in shape, report readiness honestly.

Ready is computed from the Deployment *and* its pods: a Deployment can look
"progressing" for ten minutes while its pods crash-loop on a model that will
never load, which is exactly the state users of model servers most often
mis-read. The pods' container statuses tell why, and that goes into Ready's
message.
"""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import InferenceServiceSpec, SpecError, parse_inference_service
from ascend_mlops.builders import inference as builder
from ascend_mlops.builders.common import ANNOTATION_SPEC_HASH, Owner, selector_labels
from ascend_mlops.builders.model import ResolvedModel
from ascend_mlops.reconcilers import credentials, models
from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers.jobs import describe_exit, failure_details
from ascend_mlops.reconcilers.models import Waiting
from ascend_mlops.reconcilers.runtime import ChildConflict, Key, Result, Runtime, snapshot

KIND: Final = constants.INFERENCE_SERVICE
EVENT_CONDITIONS: Final = (
    ConditionType.VALID,
    ConditionType.SOURCE_READY,
    ConditionType.READY,
    ConditionType.STALLED,
)
# Exit codes with which a server says "this model cannot be loaded"; restarting will not help.
MODEL_LOAD_EXIT_CODES: Final = frozenset(
    {contract.EXIT_USAGE, contract.EXIT_INVALID_MODEL, contract.EXIT_TOOLKIT_MISSING, contract.EXIT_INVALID_PARAMETERS}
)


async def resolve_model(
    rt: Runtime, key: Key, spec: InferenceServiceSpec
) -> tuple[ResolvedModel, dict[str, Any]]:
    """The model to serve and its status.model record, or raise Waiting."""
    return await models.resolve_model(rt, key, models.ModelRef(spec.conversion_ref, spec.model, spec.labels, spec.runtime))


async def ensure_deployment(rt: Runtime, owner: Owner, desired: dict[str, Any]) -> dict[str, Any]:
    name = desired["metadata"]["name"]
    existing = await rt.client.get("apps/v1", "deployments", owner.namespace, name)
    if existing is None:
        await rt.create_child(owner, "apps/v1", "deployments", desired)
        return desired
    return await _update_if_drifted(rt, owner, "apps/v1", "deployments", existing, desired)


async def ensure_service(rt: Runtime, owner: Owner, desired: dict[str, Any]) -> None:
    name = desired["metadata"]["name"]
    existing = await rt.client.get("v1", "services", owner.namespace, name)
    if existing is None:
        await rt.create_child(owner, "v1", "services", desired)
        return
    # The cluster IP is immutable and allocated by the API server: keep it.
    for field_name in ("clusterIP", "clusterIPs"):
        if field_name in (existing.get("spec") or {}):
            desired["spec"][field_name] = existing["spec"][field_name]
    await _update_if_drifted(rt, owner, "v1", "services", existing, desired)


async def _update_if_drifted(
    rt: Runtime, owner: Owner, api_version: str, plural: str, existing: dict[str, Any], desired: dict[str, Any]
) -> dict[str, Any]:
    meta = existing.get("metadata") or {}
    want = desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    if (meta.get("annotations") or {}).get(ANNOTATION_SPEC_HASH) == want:
        return existing
    if not any(ref.get("kind") == owner.kind and ref.get("name") == owner.name for ref in meta.get("ownerReferences") or []):
        raise ChildConflict(
            f"{desired['kind']} {owner.namespace}/{meta.get('name')} exists and does not belong to "
            f"{owner.kind} {owner.name}; delete or rename it"
        )
    body = {
        **desired,
        "metadata": {
            **meta,
            "labels": {**(meta.get("labels") or {}), **desired["metadata"]["labels"]},
            "annotations": {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]},
            "ownerReferences": desired["metadata"]["ownerReferences"],
        },
    }
    body.pop("status", None)
    return await rt.client.replace(api_version, plural, owner.namespace, meta["name"], body)


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
    if rt.settings.simulator:
        record["simulated"] = True
    conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.MODEL_RESOLVED, f"serving {model.uri}")
    status["model"] = record

    blocked = await credentials.check_storage_secret(rt, owner.namespace, (model.uri, model.labels), spec.storage)
    if blocked is not None:
        # No Deployment is created or changed until the pods could start; one already running keeps serving.
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, blocked.reason, blocked.message)
        not_ready(Phase.NOT_READY, blocked.reason, blocked.message, stalled=False)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=blocked.requeue_after)

    desired = builder.build_deployment(spec, owner, rt.settings, model)
    try:
        deployment = await ensure_deployment(rt, owner, desired)
        await ensure_service(rt, owner, builder.build_service(owner))
    except ChildConflict as exc:
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, Reason.RECONCILE_ERROR, str(exc))
        not_ready(Phase.NOT_READY, Reason.RECONCILE_ERROR, str(exc), stalled=True)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=30.0)
    status["url"] = builder.service_url(owner.name, owner.namespace)

    dep_status = deployment.get("status") or {}
    ready_replicas = int(dep_status.get("readyReplicas") or 0)
    updated = dep_status.get("updatedReplicas")
    status["replicas"] = int(dep_status.get("replicas") or 0)
    status["readyReplicas"] = ready_replicas

    # Pods of the current template carry the model in an annotation; older ones are on their way out.
    server_pods = await rt.list_children(
        owner, "v1", "pods", selector_labels(owner, builder.COMPONENT), direct=False
    )
    problems: list[tuple[str, str]] = []
    for pod in server_pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if annotations.get(constants.ANNOTATION_MODEL_DIGEST, str(model.uri)) != str(model.uri):
            continue
        problem = pod_problem(P.pod_state(pod, builder.CONTAINER))
        if problem is not None:
            problems.append(problem)

    dep_generation = (deployment.get("metadata") or {}).get("generation")
    dep_observed = dep_status.get("observedGeneration")
    rolled_out = (
        ready_replicas >= spec.replicas
        and (updated is None or int(updated) >= spec.replicas)
        and (dep_generation is None or dep_observed is None or int(dep_observed) >= int(dep_generation))
    )
    simulated = " (on the Ascend simulator)" if record.get("simulated") else ""
    if problems:
        reason = problems[0][0]
        message = "; ".join(m for _, m in problems[:3])
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, reason, message)
        not_ready(Phase.NOT_READY, reason, message, stalled=reason == Reason.MODEL_LOAD_FAILED)
    elif rolled_out:
        message = f"{ready_replicas}/{spec.replicas} replica(s) ready, serving {model.uri}{simulated}"
        conditions.set(ConditionType.PREDICTOR_READY, st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
        conditions.set(ConditionType.READY, st.TRUE, Reason.MINIMUM_REPLICAS_AVAILABLE, message)
        st.set_kstatus(conditions, reconciling=None, stalled=None)
        status.update(phase=Phase.READY, conditions=conditions.to_list())
    else:
        message = f"waiting for {spec.replicas} replica(s) to be ready ({ready_replicas} ready){simulated}"
        conditions.set(ConditionType.PREDICTOR_READY, st.FALSE, Reason.DEPLOYMENT_PROGRESSING, message)
        not_ready(Phase.NOT_READY, Reason.DEPLOYMENT_PROGRESSING, message, stalled=False)
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    return Result()
