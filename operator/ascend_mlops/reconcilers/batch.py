"""BatchPrediction: resolve the model, run one `ascend-mlops predict --shard i/N` pod per shard, and
succeed only when every shard did; progress summed over the shards' log lines.

Retries use jobs.drive: a shard failing with a retryable exit code starts the
next attempt of every shard (up to backoffLimit). That costs little, because a
rerun shard skips the inputs whose results are already complete; and it keeps
one attempt counter for the whole batch, as for the other kinds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract, progress
from ascend_mlops.api.constants import ConditionType, Reason
from ascend_mlops.api.specs import (
    BatchPredictionSpec,
    FieldError,
    parse_batch_prediction,
    parse_storage_uri,
)
from ascend_mlops.builders import batch as builder
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.reconcilers import jobs, lifecycle, sources
from ascend_mlops.reconcilers.engine import Engine, Key, Result

logger = logging.getLogger(__name__)

KIND: Final = constants.BATCH_PREDICTION
# How often running shards' logs are read: they print a progress line every few seconds.
PROGRESS_INTERVAL: Final = 10.0
LOG_TAIL_LINES: Final = 20


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


async def read_shard_progress(rt: Engine, namespace: str, pod: str) -> progress.BatchProgress | None:
    """The last progress line in a running shard's log tail; raises when the log cannot be read."""
    text = await rt.client.read_pod_log(namespace, pod, container=builder.CONTAINER, tail_lines=LOG_TAIL_LINES)
    lines = [p for line in text.splitlines() if (p := progress.parse_batch(line)) is not None]
    return lines[-1] if lines else None


async def collect_progress(
    rt: Engine, namespace: str, outcome: jobs.JobOutcome, finished_only: bool = False
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


class BatchPrediction(lifecycle.JobKind[BatchPredictionSpec]):
    """Finished shards keep their pods (their logs); running ones are stopped (the default policy)."""

    what, component, container = "batch prediction", builder.COMPONENT, builder.CONTAINER
    event_conditions = lifecycle.WAITING_JOB_EVENT_CONDITIONS

    def parse(self, raw: Any) -> BatchPredictionSpec:
        return parse_batch_prediction(raw, self.rt.settings.accelerator_resource)

    async def plan(self, spec: BatchPredictionSpec, status: dict[str, Any], conditions: st.Conditions) -> jobs.JobPlan:
        rt, owner = self.rt, self.owner
        resolved = _recorded_model(status, spec)
        if resolved is None:
            ref = sources.ModelRef(spec.conversion_ref, spec.model, spec.labels, spec.runtime)
            resolved = await sources.resolve_model(rt, self.key, ref)
        model, record = resolved
        sources.on_simulator(model, record, rt.settings.simulator)
        conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.MODEL_RESOLVED, f"classifying with {model.uri}")
        status["model"] = record
        return self.pods(
            spec,
            spec.parallelism,
            lambda attempt: builder.build_pods(spec, owner, rt.settings, model, attempt=attempt),
            (model.uri, model.labels, spec.input, spec.output),
            success_policy=jobs.SUCCESS_ALL_WORKERS,
        )

    async def succeeded(self, spec: BatchPredictionSpec, outcome: jobs.JobOutcome, status: dict[str, Any]) -> str:
        name = self.owner.name
        found = await collect_progress(self.rt, self.owner.namespace, outcome, finished_only=True)
        if found is not None:
            status["progress"] = found
        manifest = spec.output.join(contract.batch_manifest_name(name))
        status["artifacts"] = {"manifest": str(manifest), "results": str(spec.output.join(contract.batch_results_dir(name)))}
        counts = status.get("progress") or {}
        message = (
            f"classified {counts.get('total', '?')} input(s) in {spec.parallelism} shard(s): "
            f"{counts.get('succeeded', '?')} succeeded, {counts.get('failed', '?')} failed; manifest {manifest}"
        )
        if not any(s.get("manifest") for s in outcome.summaries.values()):
            message += " (no shard reported assembling it: look in the output folder)"
        return message

    async def progress(self, outcome: jobs.JobOutcome, status: dict[str, Any]) -> float | None:
        if not (outcome.running or outcome.summaries):
            return None
        found = await collect_progress(self.rt, self.owner.namespace, outcome)
        if found is not None:
            status["progress"] = found
        return PROGRESS_INTERVAL if outcome.running else None

    def ttl(self, spec: BatchPredictionSpec | None) -> int | None:
        return spec.ttl_seconds_after_finished if spec is not None else None


async def reconcile(rt: Engine, key: Key) -> Result:
    return await lifecycle.reconcile(rt, key, BatchPrediction)
