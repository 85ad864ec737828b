"""ModelConversion: wait for the source, run `ascend-mlops convert` in a pod, record the ATC result."""

from __future__ import annotations

import datetime
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import (
    FieldError,
    ModelConversionSpec,
    SpecError,
    StorageURI,
    parse_model_conversion,
    parse_storage_uri,
)
from ascend_mlops.builders import conversion as builder
from ascend_mlops.builders.common import Owner
from ascend_mlops.reconcilers import credentials, jobs, references
from ascend_mlops.reconcilers.runtime import ChildConflict, Key, Result, Runtime, snapshot

KIND: Final = constants.MODEL_CONVERSION
EVENT_CONDITIONS: Final = (
    ConditionType.VALID,
    ConditionType.SOURCE_READY,
    ConditionType.SUCCEEDED,
    ConditionType.RESTARTING,
    ConditionType.STALLED,
)
CLEAN_POD_POLICY: Final = "Running"


def is_finished(status: dict[str, Any] | None) -> bool:
    return bool((status or {}).get("completionTime"))


class Waiting(Exception):
    """The source is not usable yet (or not at all); carries the condition to report."""

    def __init__(self, reason: str, message: str, failed: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.failed = failed


async def resolve_source(
    rt: Runtime, key: Key, spec: ModelConversionSpec, status: dict[str, Any]
) -> tuple[StorageURI, StorageURI, dict[str, str]]:
    """(frozen graph, output, status.source) or raise Waiting."""
    recorded = (status.get("source") or {}).get("uri")
    if recorded and status.get("startTime"):
        # Once started, the conversion sticks to what it started with.
        source = parse_storage_uri(recorded, "status.source.uri")
        output = spec.output or builder.default_output_for_source(source)
        return source, output, dict(status["source"])
    if spec.source is not None:
        rt.set_references(key, ())
        return spec.source, spec.output or builder.default_output_for_source(spec.source), {"uri": str(spec.source)}
    assert spec.training_job_ref is not None
    ref_key = Key(constants.TRAINING_JOB, key.namespace, spec.training_job_ref)
    rt.set_references(key, [ref_key])
    job = await rt.get(ref_key)
    state = references.summarize(job)
    name = spec.training_job_ref
    if not state.found:
        raise Waiting(
            Reason.REFERENCE_NOT_FOUND,
            f"spec.source.trainingJobRef.name: TrainingJob {name!r} not found in namespace {key.namespace!r}; "
            "create it or fix the name (the conversion starts by itself once it succeeds)",
            failed=False,
        )
    if state.failed:
        raise Waiting(
            Reason.REFERENCE_FAILED,
            f"spec.source.trainingJobRef.name: TrainingJob {name!r} failed ({state.message}); fix and rerun "
            "it, or point spec.source at another job",
            failed=True,
        )
    if not state.succeeded:
        raise Waiting(
            Reason.WAITING_FOR_TRAINING_JOB,
            f"waiting for TrainingJob {name!r} to succeed (phase {state.phase})",
            failed=False,
        )
    job_status = (job or {}).get("status") or {}
    frozen = (job_status.get("artifacts") or {}).get(contract.ARTIFACT_FROZEN_GRAPH)
    try:
        source = parse_storage_uri(frozen, f"TrainingJob {name} status.artifacts.frozenGraph")
    except FieldError as exc:
        raise Waiting(
            Reason.REFERENCE_FAILED,
            f"spec.source.trainingJobRef.name: TrainingJob {name!r} succeeded but has no usable frozen graph "
            f"({exc}); rerun the training or set spec.source.uri",
            failed=True,
        ) from None
    version = str(job_status.get("outputVersion") or "")
    recorded_source = {"uri": str(source), "trainingJob": name}
    if version:
        recorded_source["outputVersion"] = version
    return source, spec.output or builder.default_output_for_source(source), recorded_source


async def reconcile(rt: Runtime, key: Key) -> Result:
    snap = await snapshot(rt, key)
    if snap is None:
        return Result()
    body, owner, now = snap.body, snap.owner, snap.now
    old_status, status, conditions = snap.old_status, snap.status, snap.conditions
    if is_finished(old_status):
        await jobs.cleanup(rt, owner, builder.COMPONENT, CLEAN_POD_POLICY, [])
        return Result()
    try:
        spec = parse_model_conversion(body.get("spec"))
    except SpecError as exc:
        message = str(exc)
        conditions.set(ConditionType.VALID, st.FALSE, Reason.INVALID_SPEC, message)
        conditions.set(ConditionType.SUCCEEDED, st.FALSE, Reason.INVALID_SPEC, message)
        st.set_kstatus(conditions, reconciling=None, stalled=Reason.INVALID_SPEC, message=message)
        status.update(phase=Phase.INVALID, conditions=conditions.to_list())
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result()
    conditions.set(ConditionType.VALID, st.TRUE, Reason.SPEC_VALID, "")

    try:
        source, output, recorded_source = await resolve_source(rt, key, spec, status)
    except Waiting as waiting:
        conditions.set(ConditionType.SOURCE_READY, st.FALSE, waiting.reason, waiting.message)
        if waiting.failed:
            conditions.set(ConditionType.SUCCEEDED, st.FALSE, waiting.reason, waiting.message)
            st.set_kstatus(conditions, reconciling=None, stalled=waiting.reason, message=waiting.message)
        else:
            conditions.set(ConditionType.SUCCEEDED, st.UNKNOWN, waiting.reason, waiting.message)
            st.set_kstatus(conditions, reconciling=waiting.reason, stalled=None, message=waiting.message)
        status.update(phase=Phase.WAITING, conditions=conditions.to_list())
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result()
    conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.SOURCE_READY, f"converting {source}")
    status["source"] = recorded_source
    if rt.settings.simulator:
        status["simulated"] = True

    plan = jobs.JobPlan(
        what="conversion",
        component=builder.COMPONENT,
        workers=1,
        backoff_limit=spec.backoff_limit,
        deadline_seconds=spec.active_deadline_seconds,
        build_pods=lambda attempt: [
            builder.build_pod(spec, owner, rt.settings, source=source, output=output, attempt=attempt)
        ],
        container=builder.CONTAINER,
        precheck=lambda: credentials.check_storage_secret(rt, owner.namespace, (source, output), spec.storage),
    )
    try:
        outcome = await jobs.drive(rt, owner, plan, status, conditions, now)
    except ChildConflict as exc:
        jobs.mark_child_conflict(status, conditions, exc)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=jobs.CONFLICT_RETRY_SECONDS)

    summary = outcome.summary
    command = summary.get(contract.SUMMARY_ATC_COMMAND)
    if isinstance(command, str) and command:
        status["atcCommand"] = command
    if isinstance(summary.get(contract.SUMMARY_SIMULATED), bool):
        status["simulated"] = summary[contract.SUMMARY_SIMULATED]
    simulated_note = " (simulated: ATC simulator, loadable only by the Ascend simulator)" if status.get("simulated") else ""

    if outcome.state == jobs.STATE_SUCCEEDED:
        model_file = summary.get(contract.SUMMARY_MODEL)
        om_name = model_file if isinstance(model_file, str) and model_file else contract.OM_FILE
        try:
            om = output.join(om_name)
        except ValueError:
            om = output.join(contract.OM_FILE)
        status["artifacts"] = {"model": str(output), "om": str(om)}
        for stale in ("errorCodes", "logTail"):
            status.pop(stale, None)
        message = f"converted {source} to {om}{simulated_note}"
        return await _finish(rt, key, body, owner, status, conditions, now, True, Reason.SUCCEEDED, message)
    if outcome.state == jobs.STATE_FAILED:
        codes = summary.get(contract.SUMMARY_ERROR_CODES)
        if isinstance(codes, list) and codes:
            status["errorCodes"] = [str(c) for c in codes]
        tail = summary.get(contract.SUMMARY_LOG_TAIL)
        if isinstance(tail, str) and tail:
            status["logTail"] = st.shorten(tail, 4096)
        reason = Reason.CONVERSION_FAILED if outcome.reason == Reason.PERMANENT_ERROR else outcome.reason
        return await _finish(rt, key, body, owner, status, conditions, now, False, reason, outcome.message)

    running = outcome.state == jobs.STATE_RUNNING
    message = outcome.message + simulated_note
    conditions.set(ConditionType.RUNNING, st.TRUE if running else st.FALSE, outcome.reason, message)
    conditions.set(ConditionType.SUCCEEDED, st.UNKNOWN, outcome.reason, message)
    st.set_kstatus(conditions, reconciling=outcome.reason, stalled=None, message=message)
    status.update(phase=Phase.RUNNING if running else Phase.PENDING, conditions=conditions.to_list())
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    return Result(requeue_after=outcome.requeue_after)


async def _finish(
    rt: Runtime,
    key: Key,
    body: dict[str, Any],
    owner: Owner,
    status: dict[str, Any],
    conditions: st.Conditions,
    now: datetime.datetime,
    succeeded: bool,
    reason: str,
    message: str,
) -> Result:
    jobs.mark_finished(status, conditions, now, succeeded, reason, message)
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    await jobs.cleanup(rt, owner, builder.COMPONENT, CLEAN_POD_POLICY, [])
    return Result()
