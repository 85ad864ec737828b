"""TrainingJob -> one Pod per worker (and, with several workers, a headless Service each + TF_CONFIG)."""

from __future__ import annotations

import json
from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import TrainingJobSpec
from ascend_mlops.builders import common
from ascend_mlops.settings import Settings
from ascend_mlops.storage import Role, merge, mount

COMPONENT: Final = "trainer"
CONTAINER: Final = "trainer"
TF_PORT: Final = 2222


def worker_service_name(job: str, index: int) -> str:
    # Services need an RFC 1035 label (<= 63, starts with a letter).
    name = common.clip_name(f"{job}-worker-{index}")
    return name if name[0].isalpha() else common.clip_name(f"w-{name}")


def pod_name(job: str, index: int, attempt: int) -> str:
    """Deterministic per (worker, attempt): a restarted operator finds, never duplicates, its pods."""
    base = f"{job}-worker-{index}"
    return common.clip_name(base if attempt == 0 else f"{base}-retry-{attempt}", 253)


def tf_config(job: str, namespace: str, workers: int, index: int) -> str:
    """TF_CONFIG as Kubeflow's TFJob writes it: every worker addressed through its headless Service."""
    cluster = [f"{worker_service_name(job, i)}.{namespace}.svc:{TF_PORT}" for i in range(workers)]
    return json.dumps(
        {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}},
        separators=(",", ":"),
        sort_keys=True,
    )


def build_pod(
    spec: TrainingJobSpec, owner: common.Owner, settings: Settings, *, index: int, attempt: int
) -> dict[str, Any]:
    dataset = mount(spec.dataset, Role.DATASET)
    output = mount(spec.output, Role.OUTPUT)
    mounts = [dataset, output]
    weights_path: str | None = None
    if spec.weights is not None:
        weights = mount(spec.weights, Role.WEIGHTS, is_file=True)
        mounts.append(weights)
        weights_path = weights.path
    volumes, volume_mounts = merge(*mounts)
    access = common.object_storage((spec.dataset, spec.output, spec.weights), spec.storage, settings)
    tmp, tmp_mount = common.tmp_volume()
    args = contract.train_args(
        algorithm=spec.algorithm,
        data=dataset.path,
        output=output.path,
        train_ratio=spec.train_ratio,
        hyperparameters=spec.hyperparameters,
        weights=weights_path,
        seed=spec.seed,
    )
    env_base = list(common.BASE_ENV)
    if spec.workers > 1:
        env_base.append((contract.ENV_TF_CONFIG, tf_config(owner.name, owner.namespace, spec.workers, index)))
    container = common.workload_container(
        name=CONTAINER,
        image=spec.pod.image or settings.trainer_image,
        pull_policy=settings.image_pull_policy,
        args=args,
        env=common.container_env(env_base, spec.pod.env, access),
        volume_mounts=[*volume_mounts, *access.volume_mounts, tmp_mount],
        resources=spec.pod.resources,
    )
    if spec.workers > 1:
        container["ports"] = [{"name": "tf", "containerPort": TF_PORT, "protocol": "TCP"}]
    labels = {constants.LABEL_REPLICA_INDEX: str(index), constants.LABEL_ATTEMPT: str(attempt)}
    pod_spec: dict[str, Any] = {
        # The operator, not the kubelet, decides about retries: it needs to see every exit code.
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [*volumes, *access.volumes, tmp],
        "securityContext": common.pod_security_context(),
        "automountServiceAccountToken": False,
        **common.pod_scheduling(spec.pod),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": common.object_meta(pod_name(owner.name, index, attempt), owner, COMPONENT, labels),
        "spec": pod_spec,
    }


def build_pods(spec: TrainingJobSpec, owner: common.Owner, settings: Settings, *, attempt: int) -> list[dict[str, Any]]:
    return [build_pod(spec, owner, settings, index=i, attempt=attempt) for i in range(spec.workers)]


def build_services(spec: TrainingJobSpec, owner: common.Owner) -> list[dict[str, Any]]:
    """One headless Service per worker; none for single-worker jobs (nothing needs to reach them)."""
    if spec.workers <= 1:
        return []
    services = []
    for index in range(spec.workers):
        selector = {
            **common.selector_labels(owner, COMPONENT),
            constants.LABEL_REPLICA_INDEX: str(index),
        }
        services.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": common.object_meta(
                    worker_service_name(owner.name, index),
                    owner,
                    COMPONENT,
                    {constants.LABEL_REPLICA_INDEX: str(index)},
                ),
                "spec": {
                    "clusterIP": "None",
                    # Workers must resolve each other before any of them is Ready.
                    "publishNotReadyAddresses": True,
                    "selector": selector,
                    "ports": [{"name": "tf", "port": TF_PORT, "targetPort": TF_PORT, "protocol": "TCP"}],
                },
            }
        )
    return services
