"""InferenceService -> a Deployment of model servers and a ClusterIP Service in front of them."""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import DEFAULT_SERVER_RESOURCES, InferenceServiceSpec
from ascend_mlops.builders import accelerator, common
from ascend_mlops.builders.model import ResolvedModel, model_pod
from ascend_mlops.settings import Settings

COMPONENT: Final = "predictor"
CONTAINER: Final = "server"
SERVICE_PORT: Final = 80
__all__ = ["ResolvedModel", "build_deployment", "build_service", "deployment_name", "service_name", "service_url"]

def deployment_name(isvc: str) -> str:
    return common.clip_name(f"{isvc}-predictor")


def service_name(isvc: str) -> str:
    name = common.clip_name(f"{isvc}-predictor")
    return name if name[0].isalpha() else common.clip_name(f"s-{name}")


def service_url(isvc: str, namespace: str) -> str:
    return f"http://{service_name(isvc)}.{namespace}.svc.cluster.local"


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
    parts = model_pod(
        model, settings, pod=spec.pod, storage=spec.storage,
        device=spec.accelerator,
    )
    args = contract.serve_args(
        model=parts.model_path,
        backend=model.runtime,
        name=spec.model_name or owner.name,
        labels=parts.labels_path,
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
        env=parts.env,
        volume_mounts=parts.volume_mounts,
        resources=accelerator.resources(spec.pod, spec.accelerator, DEFAULT_SERVER_RESOURCES),
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
                "volumes": parts.volumes,
                "securityContext": common.pod_security_context(),
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 30,
                **accelerator.scheduling(spec.pod, spec.accelerator, settings),
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
