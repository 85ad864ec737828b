"""TrainingJob: worker pods running `ascend-mlops train`, retried up to backoffLimit; results into status."""

from __future__ import annotations

import logging
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract, progress
from ascend_mlops.api.specs import StorageURI, TrainingJobSpec, parse_training_job
from ascend_mlops.builders import training as builder
from ascend_mlops.reconcilers import jobs, lifecycle
from ascend_mlops.reconcilers.engine import Engine, Key, Result

logger = logging.getLogger(__name__)

KIND: Final = constants.TRAINING_JOB
# How often a running job's progress is read from its chief's log: an epoch of
# real training takes minutes, so this shows each one without loading the API server.
PROGRESS_INTERVAL: Final = 15.0
# Enough to span a few epochs' worth of other log lines (TensorFlow warnings, evaluation).
LOG_TAIL_LINES: Final = 50
ARTIFACT_KEYS: Final = (
    contract.ARTIFACT_FROZEN_GRAPH,
    contract.ARTIFACT_SAVED_MODEL,
    contract.ARTIFACT_LABELS,
    contract.ARTIFACT_METRICS,
    contract.ARTIFACT_MODEL_PACKAGE,
)


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


class TrainingJob(lifecycle.JobKind[TrainingJobSpec]):
    what, component, container = "training", builder.COMPONENT, builder.CONTAINER

    def parse(self, raw: Any) -> TrainingJobSpec:
        return parse_training_job(raw)

    async def plan(self, spec: TrainingJobSpec, status: dict[str, Any], conditions: st.Conditions) -> jobs.JobPlan:
        rt, owner = self.rt, self.owner
        return self.pods(
            spec,
            spec.workers,
            lambda attempt: builder.build_pods(spec, owner, rt.settings, attempt=attempt),
            (spec.dataset, spec.output, spec.weights),
            services=builder.build_services(spec, owner),
        )

    async def succeeded(self, spec: TrainingJobSpec, outcome: jobs.JobOutcome, status: dict[str, Any]) -> str:
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
        return message

    async def progress(self, outcome: jobs.JobOutcome, status: dict[str, Any]) -> float | None:
        if outcome.running_chief is None:
            return None
        reported = await read_progress(self.rt, self.owner.namespace, outcome.running_chief, status.get("progress"))
        if reported is not None:
            status["progress"] = reported
        return PROGRESS_INTERVAL

    def clean_pod_policy(self, spec: TrainingJobSpec | None) -> tuple[str, list[str]]:
        if spec is None:
            return "None", []
        return spec.clean_pod_policy, [s["metadata"]["name"] for s in builder.build_services(spec, self.owner)]

    def ttl(self, spec: TrainingJobSpec | None) -> int | None:
        return spec.ttl_seconds_after_finished if spec is not None else None


async def reconcile(rt: Engine, key: Key) -> Result:
    return await lifecycle.reconcile(rt, key, TrainingJob)


async def read_progress(rt: Engine, namespace: str, pod: str, old: Any) -> dict[str, Any] | None:
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
