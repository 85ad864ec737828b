"""BatchPrediction -> one run-to-completion Pod per shard, each running `ascend-mlops predict --shard i/N`.

The predict command ships in the server image (it reuses the server's backends
and processing), so the pods default to the operator's server image.
"""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import DEFAULT_SERVER_RESOURCES, BatchPredictionSpec
from ascend_mlops.builders import accelerator, common
from ascend_mlops.builders.model_pod import ResolvedModel, model_pod
from ascend_mlops.settings import Settings
from ascend_mlops.storage import Role, mount

COMPONENT: Final = "batch-predictor"
CONTAINER: Final = "predictor"
MANIFEST_SUFFIX: Final = ".manifest"


def pod_name(batch: str, shard: int, attempt: int) -> str:
    """Deterministic per (shard, attempt): a restarted operator finds, never duplicates, its pods."""
    base = f"{batch}-shard-{shard}"
    return common.clip_name(base if attempt == 0 else f"{base}-retry-{attempt}", 253)


def image(spec: BatchPredictionSpec, settings: Settings) -> str:
    return spec.pod.image or settings.server_image


def build_pod(
    spec: BatchPredictionSpec,
    owner: common.Owner,
    settings: Settings,
    model: ResolvedModel,
    *,
    shard: int,
    attempt: int,
) -> dict[str, Any]:
    source = mount(spec.input, Role.DATASET, is_file=spec.input.name.endswith(MANIFEST_SUFFIX))
    output = mount(spec.output, Role.OUTPUT)
    parts = model_pod(
        model, settings, pod=spec.pod, storage=spec.storage,
        device=spec.accelerator,
        extra=((spec.input, source), (spec.output, output)),
    )
    args = contract.predict_args(
        model=parts.model_path,
        backend=model.runtime,
        input_path=source.path,
        output=output.path,
        shard=shard,
        shards=spec.parallelism,
        task_id=owner.name,
        labels=parts.labels_path,
        batch_size=spec.batch_size,
        top_k=spec.top_k,
    )
    container = common.workload_container(
        name=CONTAINER,
        image=image(spec, settings),
        pull_policy=settings.image_pull_policy,
        args=args,
        env=parts.env,
        volume_mounts=parts.volume_mounts,
        resources=accelerator.resources(spec.pod, spec.accelerator, DEFAULT_SERVER_RESOURCES),
    )
    labels = {constants.LABEL_REPLICA_INDEX: str(shard), constants.LABEL_ATTEMPT: str(attempt)}
    pod_spec: dict[str, Any] = {
        # The operator, not the kubelet, decides about retries: it needs to see every exit code.
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": parts.volumes,
        "securityContext": common.pod_security_context(),
        "automountServiceAccountToken": False,
        **accelerator.scheduling(spec.pod, spec.accelerator, settings),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": common.object_meta(
            pod_name(owner.name, shard, attempt),
            owner,
            COMPONENT,
            labels,
            annotations={constants.ANNOTATION_MODEL_DIGEST: str(model.uri)},
        ),
        "spec": pod_spec,
    }


def build_pods(
    spec: BatchPredictionSpec, owner: common.Owner, settings: Settings, model: ResolvedModel, *, attempt: int
) -> list[dict[str, Any]]:
    return [
        build_pod(spec, owner, settings, model, shard=i, attempt=attempt) for i in range(spec.parallelism)
    ]
