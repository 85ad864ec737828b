"""InferenceService children for clients outside the cluster: the Ingress, and the autoscaler
(a HorizontalPodAutoscaler, or a KEDA ScaledObject) of the stable revision.

The HTTPRoute that exposes a service through the Gateway is the canary's split
route (`inference.build_httproute`), given the exposure's host.
"""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import EXPOSURE_INGRESS, METRIC_CPU, Autoscaling, Exposure, is_host_name
from ascend_mlops.builders import common
from ascend_mlops.builders.inference import (
    COMPONENT,
    SERVICE_PORT,
    deployment_name,
    route_name,
    service_name,
)

KEDA_TRIGGER: Final = "prometheus"


def default_host(owner: common.Owner, domain: str) -> str | None:
    """`<name>.<namespace>.<domain>`; None without a domain or when that is no valid host name (a label > 63)."""
    if not domain:
        return None
    host = f"{owner.name}.{owner.namespace}.{domain}"
    return host if is_host_name(host) else None


def exposure_host(owner: common.Owner, exposure: Exposure, domain: str) -> str | None:
    return exposure.host or default_host(owner, domain)


def external_url(exposure: Exposure, host: str, url_scheme: str) -> str:
    """status.url: https when the Ingress terminates TLS itself, else the operator's scheme setting."""
    scheme = "https" if exposure.type == EXPOSURE_INGRESS and exposure.tls_secret_name else url_scheme
    return f"{scheme}://{host}"


def ingress_name(isvc: str) -> str:
    return route_name(isvc)


def build_ingress(owner: common.Owner, exposure: Exposure, host: str, default_class: str) -> dict[str, Any]:
    """An Ingress for `host` in front of the client Service (whose selector follows a canary's split)."""
    backend = {"service": {"name": service_name(owner.name), "port": {"number": SERVICE_PORT}}}
    spec: dict[str, Any] = {
        "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}],
    }
    class_name = exposure.ingress_class_name or default_class
    if class_name:
        spec["ingressClassName"] = class_name
    if exposure.tls_secret_name:
        spec["tls"] = [{"hosts": [host], "secretName": exposure.tls_secret_name}]
    return {
        "apiVersion": constants.INGRESS_API_VERSION,
        "kind": "Ingress",
        "metadata": common.object_meta(
            ingress_name(owner.name), owner, COMPONENT, annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(spec)}
        ),
        "spec": spec,
    }


def autoscaler_name(isvc: str) -> str:
    """The HPA or ScaledObject is named after the Deployment it scales."""
    return deployment_name(isvc)


def quantity(value: float) -> str:
    """A Kubernetes quantity: '4', or '2500m' for 2.5."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _scale_target(owner: common.Owner) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(owner.name)}


def build_hpa(owner: common.Owner, autoscaling: Autoscaling) -> dict[str, Any]:
    """autoscaling/v2: CPU utilisation (resource metrics API), or in-flight requests per pod (custom metrics API).

    The Pods metric averages over the pods the Deployment selects, so the
    canary's pods (another component label) never count.
    """
    if autoscaling.metric == METRIC_CPU:
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": int(autoscaling.target)}},
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": contract.METRIC_INFLIGHT},
                "target": {"type": "AverageValue", "averageValue": quantity(autoscaling.target)},
            },
        }
    spec = {
        "scaleTargetRef": _scale_target(owner),
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": [metric],
    }
    return {
        "apiVersion": constants.HPA_API_VERSION,
        "kind": constants.KIND_HPA,
        "metadata": common.object_meta(
            autoscaler_name(owner.name), owner, COMPONENT, annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(spec)}
        ),
        "spec": spec,
    }


def inflight_query(owner: common.Owner) -> str:
    """PromQL: the stable revision's in-flight requests, summed over its pods.

    Pods are picked by namespace and name (`<deployment>-<template hash>-<suffix>`,
    the labels every kubernetes_sd scrape config keeps): the canary's pods,
    `<name>-predictor-canary-...`, have one more dash and never match.
    """
    pods = deployment_name(owner.name).replace(".", "\\\\.")
    return f'sum({contract.METRIC_INFLIGHT}{{namespace="{owner.namespace}",pod=~"{pods}-[a-z0-9]+-[a-z0-9]+"}})'


def build_scaled_object(owner: common.Owner, autoscaling: Autoscaling, prometheus: str) -> dict[str, Any]:
    """keda.sh/v1alpha1: a prometheus trigger on the in-flight series, averaged per replica (metricType AverageValue)."""
    spec = {
        "scaleTargetRef": _scale_target(owner),
        "minReplicaCount": autoscaling.min_replicas,
        "maxReplicaCount": autoscaling.max_replicas,
        "triggers": [
            {
                "type": KEDA_TRIGGER,
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": prometheus,
                    "query": inflight_query(owner),
                    "threshold": f"{autoscaling.target:g}",
                },
            }
        ],
    }
    return {
        "apiVersion": constants.KEDA_API_VERSION,
        "kind": constants.KIND_SCALEDOBJECT,
        "metadata": common.object_meta(
            autoscaler_name(owner.name), owner, COMPONENT, annotations={common.ANNOTATION_SPEC_HASH: common.spec_hash(spec)}
        ),
        "spec": spec,
    }
