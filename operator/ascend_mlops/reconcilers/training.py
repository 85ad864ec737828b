"""TrainingJob: worker pods running `ascend-mlops train`, retried up to backoffLimit; results into status."""

from __future__ import annotations

import datetime
import logging
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract, progress
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import SpecError, StorageURI, TrainingJobSpec, parse_training_job
from ascend_mlops.builders import training as builder
from ascend_mlops.builders.common import Owner
from ascend_mlops.reconcilers import credentials, jobs
from ascend_mlops.reconcilers.runtime import ChildConflict, Key, Result, Runtime, snapshot

logger = logging.getLogger(__name__)

KIND: Final = constants.TRAINING_JOB
# How often a running job's progress is read from its chief's log: an epoch of
# real training takes minutes, so this shows each one without loading the API server.
PROGRESS_INTERVAL: Final = 15.0
# Enough to span a few epochs' worth of other log lines (TensorFlow warnings, evaluation).
LOG_TAIL_LINES: Final = 50
EVENT_CONDITIONS: Final = (
    ConditionType.VALID,
    ConditionType.SUCCEEDED,
    ConditionType.RESTARTING,
    ConditionType.STALLED,
)
ARTIFACT_KEYS: Final = (
    contract.ARTIFACT_FROZEN_GRAPH,
    contract.ARTIFACT_SAVED_MODEL,
    contract.ARTIFACT_LABELS,
    contract.ARTIFACT_METRICS,
    contract.ARTIFACT_MODEL_PACKAGE,
)


def is_finished(status: dict[str, Any] | None) -> bool:
    return bool((status or {}).get("completionTime"))


def artifacts_from_summary(output: StorageURI, summary: dict[str, Any]) -> dict[str, str]:
    """Artifact paths in the trainer's summary are relative to the output root: make them URIs."""
    found: dict[str, str] = {}
    raw = summary.get(contract.SUMMARY_ARTIFACTS)
    if not isinstance(raw, dict):
        return found
    for key in ARTIFACT_KEYS:
        value = raw.get(key)
        if isinstance(value, str) and value:
            try:
                found[key] = str(output.join(value))
            except ValueError:
                continue  # a path escaping the output root is not an artifact we publish
    return found


def metrics_from_summary(summary: dict[str, Any]) -> dict[str, float | int]:
    raw = summary.get(contract.SUMMARY_METRICS)
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): v for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


async def reconcile(rt: Runtime, key: Key) -> Result:
    snap = await snapshot(rt, key)
    if snap is None:
        return Result()
    body, owner, now = snap.body, snap.owner, snap.now
    old_status, status, conditions = snap.old_status, snap.status, snap.conditions
    try:
        spec = parse_training_job(body.get("spec"))
    except SpecError as exc:
        if is_finished(old_status):
            # Finished jobs keep their result; a later edit cannot change what ran.
            return await _finished(rt, key, body, owner, None, status, conditions, now)
        return await _invalid(rt, key, body, status, conditions, str(exc))
    conditions.set(ConditionType.VALID, st.TRUE, Reason.SPEC_VALID, "")
    if is_finished(old_status):
        return await _finished(rt, key, body, owner, spec, status, conditions, now)

    plan = jobs.JobPlan(
        what="training",
        component=builder.COMPONENT,
        workers=spec.workers,
        backoff_limit=spec.backoff_limit,
        deadline_seconds=spec.active_deadline_seconds,
        build_pods=lambda attempt: builder.build_pods(spec, owner, rt.settings, attempt=attempt),
        services=builder.build_services(spec, owner),
        container=builder.CONTAINER,
        precheck=lambda: credentials.check_storage_secret(
            rt, owner.namespace, (spec.dataset, spec.output, spec.weights), spec.storage
        ),
    )
    try:
        outcome = await jobs.drive(rt, owner, plan, status, conditions, now)
    except ChildConflict as exc:
        jobs.mark_child_conflict(status, conditions, exc)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=jobs.CONFLICT_RETRY_SECONDS)

    if outcome.state == jobs.STATE_SUCCEEDED:
        summary = outcome.summary
        version = summary.get(contract.SUMMARY_VERSION)
        if isinstance(version, str) and version:
            status["outputVersion"] = version
        artifacts = artifacts_from_summary(spec.output, summary)
        if artifacts:
            status["artifacts"] = artifacts
        found = metrics_from_summary(summary)
        if found:
            status["metrics"] = found
        if artifacts:
            message = f"trained {spec.algorithm}; {version or 'output'} written to {spec.output.join(str(version or ''))}"
        else:
            message = (
                f"the trainer exited 0 but reported no artifacts in its termination message; "
                f"look in {spec.output}"
            )
        if "accuracy" in found:
            message += f"; validation accuracy {found['accuracy']:.4f}"
        return await _finish(rt, key, body, owner, spec, status, conditions, now, True, Reason.SUCCEEDED, message)
    if outcome.state == jobs.STATE_FAILED:
        return await _finish(
            rt, key, body, owner, spec, status, conditions, now, False, outcome.reason, outcome.message
        )

    requeue_after = outcome.requeue_after
    if outcome.running_chief is not None:
        reported = await read_progress(rt, owner.namespace, outcome.running_chief, status.get("progress"))
        if reported is not None:
            status["progress"] = reported
        requeue_after = min(requeue_after, PROGRESS_INTERVAL) if requeue_after is not None else PROGRESS_INTERVAL
    running = outcome.state == jobs.STATE_RUNNING
    conditions.set(ConditionType.RUNNING, st.TRUE if running else st.FALSE, outcome.reason, outcome.message)
    conditions.set(ConditionType.SUCCEEDED, st.UNKNOWN, outcome.reason, outcome.message)
    st.set_kstatus(conditions, reconciling=outcome.reason, stalled=None, message=outcome.message)
    status.update(phase=Phase.RUNNING if running else Phase.PENDING, conditions=conditions.to_list())
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    return Result(requeue_after=requeue_after)


async def read_progress(rt: Runtime, namespace: str, pod: str, old: Any) -> dict[str, Any] | None:
    """status.progress from the last progress line in the chief pod's log tail.

    None (keep the old progress) when the log cannot be read or has no progress
    line yet: progress is a convenience and must never fail or slow the reconcile.
    """
    try:
        text = await rt.client.read_pod_log(namespace, pod, container=builder.CONTAINER, tail_lines=LOG_TAIL_LINES)
    except Exception as exc:  # API errors, timeouts, connection drops: all mean "not this time"
        logger.debug("%s/%s: cannot read the log for progress: %s", namespace, pod, exc)
        return None
    lines = [p for line in text.splitlines() if (p := progress.parse(line)) is not None]
    if not lines:
        return None
    found: dict[str, Any] = lines[-1].to_status()
    if "valAccuracy" not in found:
        # Validation runs on some epochs only: show the latest measured one.
        measured = [p.val_accuracy for p in lines if p.val_accuracy is not None]
        if measured:
            found["valAccuracy"] = round(measured[-1], 4)
        elif isinstance(old, dict) and isinstance(old.get("valAccuracy"), int | float):
            found["valAccuracy"] = old["valAccuracy"]
    return found


async def _invalid(
    rt: Runtime, key: Key, body: dict[str, Any], status: dict[str, Any], conditions: st.Conditions, message: str
) -> Result:
    conditions.set(ConditionType.VALID, st.FALSE, Reason.INVALID_SPEC, message)
    conditions.set(ConditionType.SUCCEEDED, st.FALSE, Reason.INVALID_SPEC, message)
    st.set_kstatus(conditions, reconciling=None, stalled=Reason.INVALID_SPEC, message=message)
    status.update(phase=Phase.INVALID, conditions=conditions.to_list())
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    return Result()  # an edit of the spec wakes us up


async def _finish(
    rt: Runtime,
    key: Key,
    body: dict[str, Any],
    owner: Owner,
    spec: TrainingJobSpec,
    status: dict[str, Any],
    conditions: st.Conditions,
    now: datetime.datetime,
    succeeded: bool,
    reason: str,
    message: str,
) -> Result:
    jobs.mark_finished(status, conditions, now, succeeded, reason, message)
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    return await _finished(rt, key, {**body, "status": status}, owner, spec, status, conditions, now)


async def _finished(
    rt: Runtime,
    key: Key,
    body: dict[str, Any],
    owner: Owner,
    spec: TrainingJobSpec | None,
    status: dict[str, Any],
    conditions: st.Conditions,
    now: datetime.datetime,
) -> Result:
    """A finished job: apply the clean-pod policy and the TTL; nothing else changes."""
    if spec is not None:
        services = [s["metadata"]["name"] for s in builder.build_services(spec, owner)]
        await jobs.cleanup(rt, owner, builder.COMPONENT, spec.clean_pod_policy, services)
    status["conditions"] = conditions.to_list()
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    ttl = spec.ttl_seconds_after_finished if spec is not None else None
    return await jobs.expire_after_ttl(rt, key, status, ttl, now)
