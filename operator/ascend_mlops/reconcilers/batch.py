"""BatchPrediction: resolve the model, run one `ascend-mlops predict --shard i/N` pod per shard, and
succeed only when every shard did; progress summed over the shards' log lines.

Retries use jobs.drive: a shard failing with a retryable exit code starts the
next attempt of every shard (up to backoffLimit). That costs little, because a
rerun shard skips the inputs whose results are already complete; and it keeps
one attempt counter for the whole batch, as for the other kinds.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract, progress
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import (
    BatchPredictionSpec,
    FieldError,
    SpecError,
    parse_batch_prediction,
    parse_storage_uri,
)
from ascend_mlops.builders import batch as builder
from ascend_mlops.builders.common import Owner
from ascend_mlops.builders.model import ResolvedModel
from ascend_mlops.reconcilers import credentials, jobs, models
from ascend_mlops.reconcilers.runtime import ChildConflict, Key, Result, Runtime, snapshot

logger = logging.getLogger(__name__)

KIND: Final = constants.BATCH_PREDICTION
EVENT_CONDITIONS: Final = (
    ConditionType.VALID,
    ConditionType.SOURCE_READY,
    ConditionType.SUCCEEDED,
    ConditionType.RESTARTING,
    ConditionType.STALLED,
)
# Finished shards keep their pods (their logs); running ones are stopped.
CLEAN_POD_POLICY: Final = "Running"
# How often running shards' logs are read: they print a progress line every few seconds.
PROGRESS_INTERVAL: Final = 10.0
LOG_TAIL_LINES: Final = 20


def is_finished(status: Mapping[str, Any] | None) -> bool:
    return bool((status or {}).get("completionTime"))


def sum_progress(shards: list[progress.BatchProgress]) -> dict[str, Any]:
    """status.progress: the shards' counts added up (imagesPerSecond: their combined rate)."""
    done = sum(p.done for p in shards)
    total = sum(p.total for p in shards)
    return {
        "done": done,
        "total": total,
        "succeeded": sum(p.succeeded for p in shards),
        "failed": sum(p.failed for p in shards),
        "imagesPerSecond": round(sum(p.images_per_second for p in shards), 1),
        "fraction": f"{done}/{total}",
    }


def progress_from_summary(summary: Mapping[str, Any]) -> progress.BatchProgress | None:
    """A finished shard's counts from its termination summary."""

    def count(key: str) -> int | None:
        value = summary.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    total, ok, bad = count("total"), count("succeeded"), count("failed")
    if total is None or ok is None or bad is None:
        return None
    rate = summary.get("imagesPerSecond")
    return progress.BatchProgress(total, total, ok, bad, float(rate) if isinstance(rate, int | float) else 0.0)


async def read_shard_progress(rt: Runtime, namespace: str, pod: str) -> progress.BatchProgress | None:
    """The last progress line in a running shard's log tail; raises when the log cannot be read."""
    text = await rt.client.read_pod_log(namespace, pod, container=builder.CONTAINER, tail_lines=LOG_TAIL_LINES)
    lines = [p for line in text.splitlines() if (p := progress.parse_batch(line)) is not None]
    return lines[-1] if lines else None


async def collect_progress(
    rt: Runtime, namespace: str, outcome: jobs.JobOutcome, finished_only: bool = False
) -> dict[str, Any] | None:
    """status.progress over all shards, or None (keep the old one) when nothing could be read.

    Progress is a convenience: a log that cannot be read never fails or slows the reconcile.
    """
    shards: list[progress.BatchProgress] = []
    for summary in outcome.summaries.values():
        found = progress_from_summary(summary)
        if found is not None:
            shards.append(found)
    if not finished_only:
        for pod in outcome.running.values():
            try:
                line = await read_shard_progress(rt, namespace, pod)
            except Exception as exc:  # API errors, timeouts: "not this time"
                logger.debug("%s/%s: cannot read the log for progress: %s", namespace, pod, exc)
                return None
            if line is not None:
                shards.append(line)
    return sum_progress(shards) if shards else None


def _recorded_model(status: Mapping[str, Any], spec: BatchPredictionSpec) -> tuple[ResolvedModel, dict[str, Any]] | None:
    """Once started, a batch sticks to the model it started with (a rerun conversion does not change it)."""
    record = status.get("model")
    if not status.get("startTime") or not isinstance(record, Mapping) or not record.get("uri"):
        return None
    try:
        uri = parse_storage_uri(record["uri"], "status.model.uri")
        labels = parse_storage_uri(record["labels"], "status.model.labels") if record.get("labels") else None
    except FieldError:
        return None
    return ResolvedModel(uri, labels, spec.runtime), dict(record)


async def reconcile(rt: Runtime, key: Key) -> Result:
    snap = await snapshot(rt, key)
    if snap is None:
        return Result()
    body, owner, now = snap.body, snap.owner, snap.now
    old_status, status, conditions = snap.old_status, snap.status, snap.conditions
    try:
        spec = parse_batch_prediction(body.get("spec"), rt.settings.accelerator_resource)
    except SpecError as exc:
        if is_finished(old_status):
            # A finished batch keeps its result; a later edit cannot change what ran.
            return await _finished(rt, key, body, owner, None, status, conditions, now)
        message = str(exc)
        conditions.set(ConditionType.VALID, st.FALSE, Reason.INVALID_SPEC, message)
        conditions.set(ConditionType.SUCCEEDED, st.FALSE, Reason.INVALID_SPEC, message)
        st.set_kstatus(conditions, reconciling=None, stalled=Reason.INVALID_SPEC, message=message)
        status.update(phase=Phase.INVALID, conditions=conditions.to_list())
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result()  # an edit of the spec wakes us up
    conditions.set(ConditionType.VALID, st.TRUE, Reason.SPEC_VALID, "")
    if is_finished(old_status):
        return await _finished(rt, key, body, owner, spec, status, conditions, now)

    resolved = _recorded_model(status, spec)
    if resolved is None:
        try:
            resolved = await models.resolve_model(
                rt, key, models.ModelRef(spec.conversion_ref, spec.model, spec.labels, spec.runtime)
            )
        except models.Waiting as waiting:
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
    model, record = resolved
    if rt.settings.simulator:
        record["simulated"] = True
    conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.MODEL_RESOLVED, f"classifying with {model.uri}")
    status["model"] = record

    plan = jobs.JobPlan(
        what="batch prediction",
        component=builder.COMPONENT,
        workers=spec.parallelism,
        backoff_limit=spec.backoff_limit,
        deadline_seconds=spec.active_deadline_seconds,
        build_pods=lambda attempt: builder.build_pods(spec, owner, rt.settings, model, attempt=attempt),
        container=builder.CONTAINER,
        precheck=lambda: credentials.check_storage_secret(
            rt, owner.namespace, (model.uri, model.labels, spec.input, spec.output), spec.storage
        ),
        success_policy=jobs.SUCCESS_ALL_WORKERS,
    )
    try:
        outcome = await jobs.drive(rt, owner, plan, status, conditions, now)
    except ChildConflict as exc:
        jobs.mark_child_conflict(status, conditions, exc)
        await rt.write_status(key, body, status, EVENT_CONDITIONS)
        return Result(requeue_after=jobs.CONFLICT_RETRY_SECONDS)

    if outcome.state == jobs.STATE_SUCCEEDED:
        found = await collect_progress(rt, owner.namespace, outcome, finished_only=True)
        if found is not None:
            status["progress"] = found
        manifest = spec.output.join(contract.batch_manifest_name(owner.name))
        status["artifacts"] = {"manifest": str(manifest), "results": str(spec.output.join(contract.batch_results_dir(owner.name)))}
        counts = status.get("progress") or {}
        message = (
            f"classified {counts.get('total', '?')} input(s) in {spec.parallelism} shard(s): "
            f"{counts.get('succeeded', '?')} succeeded, {counts.get('failed', '?')} failed; manifest {manifest}"
        )
        if not any(s.get("manifest") for s in outcome.summaries.values()):
            message += " (no shard reported assembling it: look in the output folder)"
        return await _finish(rt, key, body, owner, spec, status, conditions, now, True, Reason.SUCCEEDED, message)
    if outcome.state == jobs.STATE_FAILED:
        return await _finish(rt, key, body, owner, spec, status, conditions, now, False, outcome.reason, outcome.message)

    requeue_after = outcome.requeue_after
    if outcome.running or outcome.summaries:
        found = await collect_progress(rt, owner.namespace, outcome)
        if found is not None:
            status["progress"] = found
        if outcome.running:
            requeue_after = min(requeue_after, PROGRESS_INTERVAL) if requeue_after is not None else PROGRESS_INTERVAL
    running = outcome.state == jobs.STATE_RUNNING
    conditions.set(ConditionType.RUNNING, st.TRUE if running else st.FALSE, outcome.reason, outcome.message)
    conditions.set(ConditionType.SUCCEEDED, st.UNKNOWN, outcome.reason, outcome.message)
    st.set_kstatus(conditions, reconciling=outcome.reason, stalled=None, message=outcome.message)
    status.update(phase=Phase.RUNNING if running else Phase.PENDING, conditions=conditions.to_list())
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    return Result(requeue_after=requeue_after)


async def _finish(
    rt: Runtime,
    key: Key,
    body: dict[str, Any],
    owner: Owner,
    spec: BatchPredictionSpec,
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
    spec: BatchPredictionSpec | None,
    status: dict[str, Any],
    conditions: st.Conditions,
    now: datetime.datetime,
) -> Result:
    """A finished batch: stop what still runs, then apply the TTL; nothing else changes."""
    await jobs.cleanup(rt, owner, builder.COMPONENT, CLEAN_POD_POLICY, [])
    status["conditions"] = conditions.to_list()
    await rt.write_status(key, body, status, EVENT_CONDITIONS)
    ttl = spec.ttl_seconds_after_finished if spec is not None else None
    return await jobs.expire_after_ttl(rt, key, status, ttl, now)
