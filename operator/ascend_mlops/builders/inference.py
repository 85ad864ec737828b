"""InferenceService -> a Deployment of model servers and a ClusterIP Service in front of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import DEFAULT_SERVER_RESOURCES, InferenceServiceSpec, StorageURI
from ascend_mlops.builders import common
from ascend_mlops.settings import DRIVER_MOUNTS_HOSTPATH, Settings
from ascend_mlops.storage import Role, merge, mount

COMPONENT: Final = "predictor"
CONTAINER: Final = "server"
SERVICE_PORT: Final = 80
MODEL_FILE_SUFFIXES: Final = (".om", ".pb")

# Without Ascend Docker Runtime the pod mounts the driver itself (ascend-reference.md §2).
# (host path, hostPath type)
DRIVER_HOST_PATHS: Final = (
    ("/usr/local/Ascend/driver/lib64", "Directory"),
    ("/usr/local/Ascend/driver/include", "Directory"),
    ("/usr/local/dcmi", "Directory"),
    ("/usr/local/bin/npu-smi", "File"),
    ("/var/log/npu/conf/slog", "Directory"),
    ("/etc/ascend_install.info", "File"),
    ("/usr/local/Ascend/driver/version.info", "File"),
)


@dataclass(frozen=True)
class ResolvedModel:
    """The model the servers load, after references were followed."""

    uri: StorageURI
    labels: StorageURI | None
    runtime: str


def deployment_name(isvc: str) -> str:
    return common.clip_name(f"{isvc}-predictor")


def service_name(isvc: str) -> str:
    name = common.clip_name(f"{isvc}-predictor")
    return name if name[0].isalpha() else common.clip_name(f"s-{name}")


def service_url(isvc: str, namespace: str) -> str:
    return f"http://{service_name(isvc)}.{namespace}.svc.cluster.local"


def _driver_mounts() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes, mounts = [], []
    for index, (path, kind) in enumerate(DRIVER_HOST_PATHS):
        name = f"ascend-driver-{index}"
        volumes.append({"name": name, "hostPath": {"path": path, "type": kind}})
        mounts.append({"name": name, "mountPath": path, "readOnly": True})
    return volumes, mounts


def _resources(spec: InferenceServiceSpec) -> dict[str, dict[str, str]]:
    resources: dict[str, dict[str, str]] = {
        section: dict(values) for section, values in (spec.pod.resources or {}).items()
    }
    if not resources:
        resources = {k: dict(v) for k, v in DEFAULT_SERVER_RESOURCES.items()}
    if spec.accelerator is not None:
        # Extended resources must be equal in requests and limits.
        count = str(spec.accelerator.count)
        resources.setdefault("requests", {})[spec.accelerator.resource] = count
        resources.setdefault("limits", {})[spec.accelerator.resource] = count
    return resources


def _scheduling(spec: InferenceServiceSpec, settings: Settings) -> dict[str, Any]:
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    if spec.accelerator is not None:
        node_selector.update(settings.accelerator_node_selector)
        tolerations.append(
            {"key": settings.accelerator_toleration_key, "operator": "Exists", "effect": "NoSchedule"}
        )
    node_selector.update(spec.pod.node_selector)
    for toleration in spec.pod.tolerations:
        if dict(toleration) not in tolerations:
            tolerations.append(dict(toleration))
    result: dict[str, Any] = {}
    if node_selector:
        result["nodeSelector"] = node_selector
    if tolerations:
        result["tolerations"] = tolerations
    return result


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def build_deployment(
    spec: InferenceServiceSpec, owner: common.Owner, settings: Settings, model: ResolvedModel
) -> dict[str, Any]:
    model_mount = mount(model.uri, Role.MODEL, is_file=model.uri.name.endswith(MODEL_FILE_SUFFIXES))
    mounts = [model_mount]
    labels_path: str | None = None
    if model.labels is not None:
        labels_mount = mount(model.labels, Role.LABELS, is_file=True)
        mounts.append(labels_mount)
        labels_path = labels_mount.path
    volumes, volume_mounts = merge(*mounts)
    access = common.object_storage((model.uri, model.labels), spec.storage, settings)
    volumes += access.volumes
    volume_mounts += access.volume_mounts
    tmp, tmp_mount = common.tmp_volume()
    volumes.append(tmp)
    volume_mounts.append(tmp_mount)
    uses_device = spec.accelerator is not None and model.runtime == "acl"
    if uses_device and settings.driver_mounts == DRIVER_MOUNTS_HOSTPATH:
        driver_volumes, driver_mounts = _driver_mounts()
        volumes += driver_volumes
        volume_mounts += driver_mounts
    env = list(common.BASE_ENV)
    if settings.simulator:
        env.append((contract.ENV_SIMULATOR, "1"))
    args = contract.serve_args(
        model=model_mount.path,
        backend=model.runtime,
        name=spec.model_name or owner.name,
        labels=labels_path,
        port=contract.DEFAULT_SERVER_PORT,
        max_batch_size=spec.max_batch_size,
        max_batch_delay_ms=spec.max_batch_delay_ms,
        max_body_bytes=spec.max_body_bytes,
    )
    container = common.workload_container(
        name=CONTAINER,
        image=spec.pod.image or settings.server_image,
        pull_policy=settings.image_pull_policy,
        args=args,
        env=common.container_env(env, spec.pod.env, access),
        volume_mounts=volume_mounts,
        resources=_resources(spec),
    )
    container["ports"] = [{"name": "http", "containerPort": contract.DEFAULT_SERVER_PORT, "protocol": "TCP"}]
    # Loading a model onto the device can take minutes: the startup probe holds
    # liveness off until the server answers once.
    container["startupProbe"] = _probe(contract.HEALTH_LIVE_PATH, 5, 120)
    container["livenessProbe"] = _probe(contract.HEALTH_LIVE_PATH, 10, 3)
    container["readinessProbe"] = _probe(contract.HEALTH_READY_PATH, 5, 3)
    selector = common.selector_labels(owner, COMPONENT)
    template_annotations = {
        # Changing the model changes the template, which rolls the Deployment.
        constants.ANNOTATION_MODEL_DIGEST: str(model.uri),
        common.ANNOTATION_OWNER_NAME: owner.name,
    }
    # One device per pod is scarce: surging an extra pod would wait for a free
    # device forever on a full node, so replace pods one at a time instead.
    strategy = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
        if spec.accelerator is not None
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    deployment_spec: dict[str, Any] = {
        "replicas": spec.replicas,
        "selector": {"matchLabels": selector},
        "strategy": strategy,
        "template": {
            "metadata": {
                "labels": common.child_labels(owner, COMPONENT),
                "annotations": template_annotations,
            },
            "spec": {
                "containers": [container],
                "volumes": volumes,
                "securityContext": common.pod_security_context(),
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 30,
                **_scheduling(spec, settings),
            },
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.object_meta(
            deployment_name(owner.name),
            owner,
            COMPONENT,
            annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(deployment_spec)},
        ),
        "spec": deployment_spec,
    }


def build_service(owner: common.Owner) -> dict[str, Any]:
    spec = {
        "type": "ClusterIP",
        "selector": common.selector_labels(owner, COMPONENT),
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.object_meta(
            service_name(owner.name),
            owner,
            COMPONENT,
            annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(spec)},
        ),
        "spec": spec,
    }
