"""ModelConversion: wait for the source, run `ascend-mlops convert` in a pod, record the ATC result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ascend_mlops import status as st
from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import ConditionType, Reason
from ascend_mlops.api.specs import (
    FieldError,
    ModelConversionSpec,
    StorageURI,
    parse_model_conversion,
    parse_storage_uri,
)
from ascend_mlops.builders import conversion as builder
from ascend_mlops.reconcilers import jobs, lifecycle, references
from ascend_mlops.reconcilers.engine import Engine, Key, Result

KIND: Final = constants.MODEL_CONVERSION
TRAINING_JOB_REF: Final = references.RefField(
    "spec.source.trainingJobRef.name",
    Reason.WAITING_FOR_TRAINING_JOB,
    "create it or fix the name (the conversion starts by itself once it succeeds)",
    "fix and rerun it, or point spec.source at another job",
)


async def resolve_source(
    rt: Engine, key: Key, spec: ModelConversionSpec, status: dict[str, Any]
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
    name = spec.training_job_ref
    ref_key = Key(constants.TRAINING_JOB, key.namespace, name)
    job = await references.require_succeeded(rt, key, ref_key, TRAINING_JOB_REF)
    job_status = job.get("status") or {}
    frozen = (job_status.get("artifacts") or {}).get(contract.ARTIFACT_FROZEN_GRAPH)
    try:
        source = parse_storage_uri(frozen, f"TrainingJob {name} status.artifacts.frozenGraph")
    except FieldError as exc:
        detail = f"has no usable frozen graph ({exc}); rerun the training or set spec.source.uri"
        raise references.unusable(TRAINING_JOB_REF, ref_key, detail) from None
    version = str(job_status.get("outputVersion") or "")
    recorded_source = {"uri": str(source), "trainingJob": name}
    if version:
        recorded_source["outputVersion"] = version
    return source, spec.output or builder.default_output_for_source(source), recorded_source


class ModelConversion(lifecycle.JobKind[ModelConversionSpec]):
    what, component, container = "conversion", builder.COMPONENT, builder.CONTAINER
    event_conditions = lifecycle.WAITING_JOB_EVENT_CONDITIONS
    source: StorageURI
    output: StorageURI

    def parse(self, raw: Any) -> ModelConversionSpec:
        return parse_model_conversion(raw)

    async def plan(self, spec: ModelConversionSpec, status: dict[str, Any], conditions: st.Conditions) -> jobs.JobPlan:
        rt, owner = self.rt, self.owner
        source, output, recorded_source = await resolve_source(rt, self.key, spec, status)
        self.source, self.output = source, output
        conditions.set(ConditionType.SOURCE_READY, st.TRUE, Reason.SOURCE_READY, f"converting {source}")
        status["source"] = recorded_source
        if rt.settings.simulator:
            status["simulated"] = True
        return self.pods(
            spec,
            1,
            lambda attempt: [builder.build_pod(spec, owner, rt.settings, source=source, output=output, attempt=attempt)],
            (source, output),
        )

    async def succeeded(self, spec: ModelConversionSpec, outcome: jobs.JobOutcome, status: dict[str, Any]) -> str:
        summary = _record_summary(outcome.summary, status)
        model_file = summary.get(contract.SUMMARY_MODEL)
        om_name = model_file if isinstance(model_file, str) and model_file else contract.OM_FILE
        try:
            om = self.output.join(om_name)
        except ValueError:
            om = self.output.join(contract.OM_FILE)
        status["artifacts"] = {"model": str(self.output), "om": str(om)}
        for stale in ("errorCodes", "logTail"):
            status.pop(stale, None)
        return f"converted {self.source} to {om}{self.note(status)}"

    async def failed(self, spec: ModelConversionSpec, outcome: jobs.JobOutcome, status: dict[str, Any]) -> str:
        summary = _record_summary(outcome.summary, status)
        codes = summary.get(contract.SUMMARY_ERROR_CODES)
        if isinstance(codes, list) and codes:
            status["errorCodes"] = [str(c) for c in codes]
        tail = summary.get(contract.SUMMARY_LOG_TAIL)
        if isinstance(tail, str) and tail:
            status["logTail"] = st.shorten(tail, 4096)
        return Reason.CONVERSION_FAILED if outcome.reason == Reason.PERMANENT_ERROR else outcome.reason

    def note(self, status: Mapping[str, Any]) -> str:
        return " (simulated: ATC simulator, loadable only by the Ascend simulator)" if status.get("simulated") else ""


def _record_summary(summary: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """What the converter's termination summary says of any ending: the ATC command, whether simulated."""
    command = summary.get(contract.SUMMARY_ATC_COMMAND)
    if isinstance(command, str) and command:
        status["atcCommand"] = command
    if isinstance(summary.get(contract.SUMMARY_SIMULATED), bool):
        status["simulated"] = summary[contract.SUMMARY_SIMULATED]
    return summary


async def reconcile(rt: Engine, key: Key) -> Result:
    return await lifecycle.reconcile(rt, key, ModelConversion)
