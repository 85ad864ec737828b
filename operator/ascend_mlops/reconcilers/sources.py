"""The model of an InferenceService or a BatchPrediction: `spec.model` by `uri`, or by
`conversionRef` to a ModelConversion, which is waited for (SourceReady) as long as it
runs. Labels default to the referenced conversion's TrainingJob's labels.txt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import Reason
from ascend_mlops.api.specs import FieldError, StorageURI, parse_storage_uri
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.reconcilers import references
from ascend_mlops.reconcilers.engine import Engine, Key
from ascend_mlops.reconcilers.references import (
    Waiting as Waiting,  # re-exported for the kinds that resolve models
)

CONVERSION_REF: Final = references.RefField(
    "spec.model.conversionRef.name", Reason.WAITING_FOR_CONVERSION, "create it or fix the name", "fix it or serve another model"
)


@dataclass(frozen=True)
class ModelRef:
    """`spec.model` and `spec.runtime` as both kinds parse them."""

    conversion_ref: str | None
    model: StorageURI | None
    labels: StorageURI | None
    runtime: str


async def resolve_model(
    rt: Engine, key: Key, ref: ModelRef, slot: str = ""
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
    conversion = await references.require_succeeded(rt, key, mc_key, CONVERSION_REF, slot)
    referenced = [mc_key]
    mc_status = conversion.get("status") or {}
    source = mc_status.get("source") or {}
    if ref.runtime == "tensorflow":
        # The CPU runtime serves what the conversion started from: the frozen graph.
        location, field_name = source.get("uri"), "status.source.uri"
    else:
        location, field_name = (mc_status.get("artifacts") or {}).get("model"), "status.artifacts.model"
    try:
        model_uri = parse_storage_uri(location, f"ModelConversion {name} {field_name}")
    except FieldError as exc:
        detail = f"reports no usable model ({exc}); rerun it or set spec.model.uri"
        raise references.unusable(CONVERSION_REF, mc_key, detail) from None
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
        record["simulated"] = True  # the .om is the ATC simulator's; on_simulator() decides for the pods
    return ResolvedModel(model_uri, labels, ref.runtime), record


def on_simulator(model: ResolvedModel, record: dict[str, Any], simulator: bool) -> bool:
    """Whether the pods that load `model` run on the Ascend simulator; `record` (status.model) says so or not.

    Only the acl runtime does (the operator's simulator setting, or an .om the ATC
    simulator wrote); a TensorFlow pod runs the graph on the CPU, also the frozen
    graph a simulated conversion started from."""
    simulated = model.runtime == "acl" and (simulator or bool(record.get("simulated")))
    if simulated:
        record["simulated"] = True
    else:
        record.pop("simulated", None)
    return simulated
