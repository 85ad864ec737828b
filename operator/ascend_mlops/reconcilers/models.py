"""The model of an InferenceService or a BatchPrediction: `spec.model` by `uri`, or by
`conversionRef` to a ModelConversion, which is waited for (SourceReady) as long as it
runs. Labels default to the referenced conversion's TrainingJob's labels.txt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import Reason
from ascend_mlops.api.specs import FieldError, StorageURI, parse_storage_uri
from ascend_mlops.builders.model import ResolvedModel
from ascend_mlops.reconcilers import references
from ascend_mlops.reconcilers.runtime import Key, Runtime


@dataclass(frozen=True)
class ModelRef:
    """`spec.model` and `spec.runtime` as both kinds parse them."""

    conversion_ref: str | None
    model: StorageURI | None
    labels: StorageURI | None
    runtime: str


class Waiting(Exception):
    def __init__(self, reason: str, message: str, failed: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.failed = failed


async def resolve_model(
    rt: Runtime, key: Key, ref: ModelRef, slot: str = ""
) -> tuple[ResolvedModel, dict[str, Any]]:
    """The model the pods load and its status.model record, or raise Waiting.

    `slot` names the field being resolved when an object has more than one (an
    InferenceService's canary): each keeps its own references."""
    if ref.model is not None:
        rt.set_references(key, (), slot)
        record: dict[str, Any] = {"uri": str(ref.model), "runtime": ref.runtime}
        if ref.labels is not None:
            record["labels"] = str(ref.labels)
        return ResolvedModel(ref.model, ref.labels, ref.runtime), record
    assert ref.conversion_ref is not None
    name = ref.conversion_ref
    mc_key = Key(constants.MODEL_CONVERSION, key.namespace, name)
    conversion = await rt.get(mc_key)
    state = references.summarize(conversion)
    referenced = [mc_key]
    if not state.found:
        rt.set_references(key, referenced, slot)
        raise Waiting(
            Reason.REFERENCE_NOT_FOUND,
            f"spec.model.conversionRef.name: ModelConversion {name!r} not found in namespace {key.namespace!r}; "
            "create it or fix the name",
            failed=False,
        )
    if state.failed:
        rt.set_references(key, referenced, slot)
        raise Waiting(
            Reason.REFERENCE_FAILED,
            f"spec.model.conversionRef.name: ModelConversion {name!r} failed ({state.message}); fix it or "
            "serve another model",
            failed=True,
        )
    if not state.succeeded:
        rt.set_references(key, referenced, slot)
        raise Waiting(
            Reason.WAITING_FOR_CONVERSION,
            f"waiting for ModelConversion {name!r} to succeed (phase {state.phase})",
            failed=False,
        )
    mc_status = (conversion or {}).get("status") or {}
    source = mc_status.get("source") or {}
    if ref.runtime == "tensorflow":
        # The CPU runtime serves what the conversion started from: the frozen graph.
        location, field_name = source.get("uri"), "status.source.uri"
    else:
        location, field_name = (mc_status.get("artifacts") or {}).get("model"), "status.artifacts.model"
    try:
        model_uri = parse_storage_uri(location, f"ModelConversion {name} {field_name}")
    except FieldError as exc:
        rt.set_references(key, referenced, slot)
        raise Waiting(
            Reason.REFERENCE_FAILED,
            f"spec.model.conversionRef.name: ModelConversion {name!r} succeeded but reports no usable model "
            f"({exc}); rerun it or set spec.model.uri",
            failed=True,
        ) from None
    labels: StorageURI | None = ref.labels
    job_name = source.get("trainingJob")
    if labels is None and isinstance(job_name, str) and job_name:
        job_key = Key(constants.TRAINING_JOB, key.namespace, job_name)
        referenced.append(job_key)
        job = await rt.get(job_key)
        labels_uri = (((job or {}).get("status") or {}).get("artifacts") or {}).get(contract.ARTIFACT_LABELS)
        if labels_uri:
            try:
                labels = parse_storage_uri(labels_uri, f"TrainingJob {job_name} status.artifacts.labels")
            except FieldError:
                labels = None  # serve without class names rather than not at all
    rt.set_references(key, referenced, slot)
    record = {"uri": str(model_uri), "runtime": ref.runtime, "conversion": name}
    if labels is not None:
        record["labels"] = str(labels)
    if mc_status.get("simulated"):
        record["simulated"] = True
    return ResolvedModel(model_uri, labels, ref.runtime), record
