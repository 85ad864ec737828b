"""InferenceService -> a Deployment of model servers and a ClusterIP Service in front of them."""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import DEFAULT_SERVER_RESOURCES, InferenceServiceSpec
from ascend_mlops.builders import accelerator, common
from ascend_mlops.builders.model_pod import ResolvedModel, model_pod
from ascend_mlops.settings import Settings

COMPONENT: Final = constants.COMPONENT_PREDICTOR
CANARY_COMPONENT: Final = constants.COMPONENT_CANARY
CONTAINER: Final = "server"
SERVICE_PORT: Final = 80
AUTH_VOLUME: Final = "auth-tokens"
# Read by the server's user through the pod's fsGroup; nobody else in the pod needs the tokens.
AUTH_FILE_MODE: Final = 0o440
# The common scrape convention (Prometheus' kubernetes_sd examples, many charts): where /metrics is.
PROMETHEUS_ANNOTATIONS: Final = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(contract.DEFAULT_METRICS_PORT),
    "prometheus.io/path": contract.METRICS_PATH,
}
COMPONENTS: Final = {constants.REVISION_STABLE: COMPONENT, constants.REVISION_CANARY: CANARY_COMPONENT}
__all__ = [
    "ResolvedModel", "build_deployment", "build_httproute", "build_revision_service", "build_service",
    "deployment_name", "revision_service_name", "route_name", "service_name", "service_url",
]

# Seconds a server pod keeps serving after its deletion, before its SIGTERM.
PRESTOP_DRAIN_SECONDS: Final = 5


def deployment_name(isvc: str, revision: str = constants.REVISION_STABLE) -> str:
    suffix = "" if revision == constants.REVISION_STABLE else f"-{revision}"
    return common.clip_name(f"{isvc}-predictor{suffix}")


def revision_service_name(isvc: str, revision: str) -> str:
    """One Service per revision (`<name>-predictor-stable`, `-canary`): what an HTTPRoute's weights point at."""
    name = common.clip_name(f"{isvc}-predictor-{revision}")
    return name if name[0].isalpha() else common.clip_name(f"s-{name}")


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
    spec: InferenceServiceSpec,
    owner: common.Owner,
    settings: Settings,
    model: ResolvedModel,
    *,
    revision: str = constants.REVISION_STABLE,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment of one revision: the stable one (spec.model) or the canary (spec.canary).

    With spec.autoscaling the stable revision's replica count belongs to the
    autoscaler: it is left out of the spec hash, so a count the autoscaler
    changed is no drift (the reconciler keeps the live count on updates).
    """
    component = COMPONENTS[revision]
    parts = model_pod(
        model, settings, pod=spec.pod, storage=spec.storage,
        device=spec.accelerator,
    )
    volumes, mounts = list(parts.volumes), list(parts.volume_mounts)
    if spec.auth is not None:
        # The whole Secret as a directory (one file per key), so that the kubelet's
        # atomic update of a rotated Secret reaches the server without a restart.
        volumes.append({"name": AUTH_VOLUME, "secret": {"secretName": spec.auth.secret_name, "defaultMode": AUTH_FILE_MODE}})
        mounts.append({"name": AUTH_VOLUME, "mountPath": contract.MOUNT_AUTH_TOKENS, "readOnly": True})
    args = contract.serve_args(
        model=parts.model_path,
        backend=model.runtime,
        name=spec.model_name or owner.name,
        labels=parts.labels_path,
        port=contract.DEFAULT_SERVER_PORT,
        max_batch_size=spec.max_batch_size,
        max_batch_delay_ms=spec.max_batch_delay_ms,
        max_body_bytes=spec.max_body_bytes,
        auth_tokens=contract.MOUNT_AUTH_TOKENS if spec.auth is not None else None,
        metrics_port=contract.DEFAULT_METRICS_PORT,
    )
    container = common.workload_container(
        name=CONTAINER,
        image=spec.pod.image or settings.server_image,
        pull_policy=settings.image_pull_policy,
        args=args,
        env=parts.env,
        volume_mounts=mounts,
        resources=accelerator.resources(spec.pod, spec.accelerator, DEFAULT_SERVER_RESOURCES),
    )
    # /metrics has a port of its own: a NetworkPolicy can admit Prometheus (and the
    # operator's canary analysis) there, and clients to "http" only.
    container["ports"] = [
        {"name": "http", "containerPort": contract.DEFAULT_SERVER_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": contract.DEFAULT_METRICS_PORT, "protocol": "TCP"},
    ]
    # Loading a model onto the device can take minutes: the startup probe holds
    # liveness off until the server answers once.
    container["startupProbe"] = _probe(contract.HEALTH_LIVE_PATH, 5, 120)
    container["livenessProbe"] = _probe(contract.HEALTH_LIVE_PATH, 10, 3)
    container["readinessProbe"] = _probe(contract.HEALTH_READY_PATH, 5, 3)
    # A deleted pod leaves the Service's endpoints while kube-proxy (or the
    # ingress, the Gateway) still sends it new connections for a moment: the
    # server keeps serving through the preStop sleep, and only then gets the
    # SIGTERM that closes its listener. Without it a rollout refused a few
    # connections on a real cluster (tests/cluster/test_serving.py).
    container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_DRAIN_SECONDS)]}}}
    selector = common.selector_labels(owner, component)
    template_annotations = {
        # Changing the model changes the template, which rolls the Deployment.
        constants.ANNOTATION_MODEL_DIGEST: str(model.uri),
        common.ANNOTATION_OWNER_NAME: owner.name,
        **PROMETHEUS_ANNOTATIONS,
    }
    # One device per pod is scarce: surging an extra pod would wait for a free
    # device forever on a full node, so replace pods one at a time instead.
    strategy = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
        if spec.accelerator is not None
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    deployment_spec: dict[str, Any] = {
        "replicas": spec.replicas if replicas is None else replicas,
        "selector": {"matchLabels": selector},
        "strategy": strategy,
        "template": {
            "metadata": {
                "labels": common.child_labels(owner, component),
                "annotations": template_annotations,
            },
            "spec": {
                "containers": [container],
                "volumes": volumes,
                "securityContext": common.pod_security_context(),
                "automountServiceAccountToken": False,
                # The preStop sleep, then the server's --shutdown-timeout (25 s) to answer what it accepted.
                "terminationGracePeriodSeconds": PRESTOP_DRAIN_SECONDS + 30,
                **accelerator.scheduling(spec.pod, spec.accelerator, settings),
            },
        },
    }
    autoscaled = revision == constants.REVISION_STABLE and spec.autoscaling is not None
    hashed = {k: v for k, v in deployment_spec.items() if k != "replicas"} if autoscaled else deployment_spec
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.object_meta(
            deployment_name(owner.name, revision),
            owner,
            component,
            annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(hashed), constants.ANNOTATION_REVISION: revision},
        ),
        "spec": deployment_spec,
    }


def serving_selector(owner: common.Owner, revisions: tuple[str, ...]) -> dict[str, str]:
    """Pods of these revisions: one revision's component labels, or the owner's labels for both."""
    if len(revisions) == 1:
        return common.selector_labels(owner, COMPONENTS[revisions[0]])
    both = common.selector_labels(owner, COMPONENT)
    del both[constants.LABEL_COMPONENT]
    return both


def _service(name: str, owner: common.Owner, selector: dict[str, str], revision: str | None = None) -> dict[str, Any]:
    spec = {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    annotations = {common.ANNOTATION_SPEC_HASH: common.spec_hash(spec)}
    if revision is not None:
        annotations[constants.ANNOTATION_REVISION] = revision
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.object_meta(name, owner, COMPONENT, annotations=annotations),
        "spec": spec,
    }


def build_service(owner: common.Owner, revisions: tuple[str, ...] = (constants.REVISION_STABLE,)) -> dict[str, Any]:
    """The Service clients call, `<name>-predictor`: it selects the revisions that get traffic.

    Without a Gateway that is the split: both revisions selected means requests
    spread over their ready pods, so the canary's share follows its share of
    the ready replicas.
    """
    return _service(service_name(owner.name), owner, serving_selector(owner, revisions))


def build_revision_service(owner: common.Owner, revision: str) -> dict[str, Any]:
    return _service(revision_service_name(owner.name, revision), owner, serving_selector(owner, (revision,)), revision)


def route_name(isvc: str) -> str:
    return common.clip_name(isvc)


def build_httproute(
    owner: common.Owner, gateway: tuple[str, str], host: str | None, canary_percent: int | None
) -> dict[str, Any]:
    """One HTTPRoute on the configured Gateway; with a canary its two backends carry exact weights.

    `host`: the route's host name (spec.exposure's, or <name>.<namespace>.<domain>);
    None: no hostnames, the route matches every host of the listener.
    `canary_percent` None: no canary, every request goes to the client Service.
    """
    if canary_percent is None:
        backends = [{"name": service_name(owner.name), "port": SERVICE_PORT, "weight": 1}]
    else:
        backends = [
            {"name": revision_service_name(owner.name, constants.REVISION_STABLE), "port": SERVICE_PORT, "weight": 100 - canary_percent},
            {"name": revision_service_name(owner.name, constants.REVISION_CANARY), "port": SERVICE_PORT, "weight": canary_percent},
        ]
    spec: dict[str, Any] = {
        "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": gateway[0], "name": gateway[1]}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backends}],
    }
    if host:
        spec["hostnames"] = [host]
    return {
        "apiVersion": constants.GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": common.object_meta(
            route_name(owner.name), owner, COMPONENT, annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(spec)}
        ),
        "spec": spec,
    }
