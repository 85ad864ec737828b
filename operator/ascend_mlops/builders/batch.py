"""BatchPrediction -> one run-to-completion Pod per shard, each running `ascend-mlops predict --shard i/N`.

The predict command ships in the server image (it reuses the server's backends
and processing), so the pods default to the operator's server image.
"""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import DEFAULT_SERVER_RESOURCES, BatchPredictionSpec
from ascend_mlops.builders import accelerator, common
from ascend_mlops.builders.model import ResolvedModel, model_mounts
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
    located = model_mounts(model)
    source = mount(spec.input, Role.DATASET, is_file=spec.input.name.endswith(MANIFEST_SUFFIX))
    output = mount(spec.output, Role.OUTPUT)
    volumes, volume_mounts = located.volumes(source, output)
    access = common.object_storage((model.uri, model.labels, spec.input, spec.output), spec.storage, settings)
    volumes += access.volumes
    volume_mounts += access.volume_mounts
    tmp, tmp_mount = common.tmp_volume()
    volumes.append(tmp)
    volume_mounts.append(tmp_mount)
    driver_volumes, driver_volume_mounts = accelerator.driver_mounts(
        settings, spec.accelerator is not None and model.runtime == "acl"
    )
    volumes += driver_volumes
    volume_mounts += driver_volume_mounts
    env = list(common.BASE_ENV)
    if settings.simulator:
        env.append((contract.ENV_SIMULATOR, "1"))
    args = contract.predict_args(
        model=located.model_path,
        backend=model.runtime,
        input_path=source.path,
        output=output.path,
        shard=shard,
        shards=spec.parallelism,
        task_id=owner.name,
        labels=located.labels_path,
        batch_size=spec.batch_size,
        top_k=spec.top_k,
    )
    container = common.workload_container(
        name=CONTAINER,
        image=image(spec, settings),
        pull_policy=settings.image_pull_policy,
        args=args,
        env=common.container_env(env, spec.pod.env, access),
        volume_mounts=volume_mounts,
        resources=accelerator.resources(spec.pod, spec.accelerator, DEFAULT_SERVER_RESOURCES),
    )
    labels = {constants.LABEL_REPLICA_INDEX: str(shard), constants.LABEL_ATTEMPT: str(attempt)}
    pod_spec: dict[str, Any] = {
        # The operator, not the kubelet, decides about retries: it needs to see every exit code.
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
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
