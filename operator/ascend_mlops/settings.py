"""The operator's settings: one typed object read from `ASCEND_MLOPS_*` environment variables.

The names are shared with the Helm chart and the sandbox. Reading fails fast with a
message that names the variable, the bad value and what would be accepted, so a
typo in a chart value stops the operator at startup instead of surfacing later as
pods that never schedule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ascend_mlops.api import catalog
from ascend_mlops.api.specs import is_object_name, is_quantity

PREFIX: Final = "ASCEND_MLOPS_"

ENV_NAMESPACES: Final = "ASCEND_MLOPS_NAMESPACES"
ENV_TRAINER_IMAGE: Final = "ASCEND_MLOPS_TRAINER_IMAGE"
ENV_CONVERTER_IMAGE: Final = "ASCEND_MLOPS_CONVERTER_IMAGE"
ENV_SERVER_IMAGE: Final = "ASCEND_MLOPS_SERVER_IMAGE"
ENV_IMAGE_PULL_POLICY: Final = "ASCEND_MLOPS_IMAGE_PULL_POLICY"
ENV_ACCELERATOR_RESOURCE: Final = "ASCEND_MLOPS_ACCELERATOR_RESOURCE"
ENV_ACCELERATOR_NODE_SELECTOR: Final = "ASCEND_MLOPS_ACCELERATOR_NODE_SELECTOR"
ENV_ACCELERATOR_TOLERATION_KEY: Final = "ASCEND_MLOPS_ACCELERATOR_TOLERATION_KEY"
ENV_DRIVER_MOUNTS: Final = "ASCEND_MLOPS_DRIVER_MOUNTS"
ENV_SIMULATOR: Final = "ASCEND_MLOPS_SIMULATOR"
ENV_METRICS_PORT: Final = "ASCEND_MLOPS_METRICS_PORT"
ENV_HEALTH_PORT: Final = "ASCEND_MLOPS_HEALTH_PORT"
ENV_LOG_FORMAT: Final = "ASCEND_MLOPS_LOG_FORMAT"
ENV_STORAGE_SECRET: Final = "ASCEND_MLOPS_STORAGE_SECRET"
ENV_SCRATCH_SIZE: Final = "ASCEND_MLOPS_SCRATCH_SIZE"
ENV_GATEWAY: Final = "ASCEND_MLOPS_GATEWAY"
ENV_DOMAIN: Final = "ASCEND_MLOPS_DOMAIN"
ENV_INGRESS_CLASS: Final = "ASCEND_MLOPS_INGRESS_CLASS"
ENV_URL_SCHEME: Final = "ASCEND_MLOPS_URL_SCHEME"
ENV_PROMETHEUS_ADDRESS: Final = "ASCEND_MLOPS_PROMETHEUS_ADDRESS"
ENV_POD_START_TIMEOUT: Final = "ASCEND_MLOPS_POD_START_TIMEOUT"

DRIVER_MOUNTS_RUNTIME: Final = "runtime"
DRIVER_MOUNTS_HOSTPATH: Final = "hostpath"
DRIVER_MOUNT_MODES: Final = (DRIVER_MOUNTS_RUNTIME, DRIVER_MOUNTS_HOSTPATH)
PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
LOG_FORMATS: Final = ("plain", "json")
URL_SCHEMES: Final = ("http", "https")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})
# RFC 1123 label (namespaces) and the qualified-name shape of label keys / resource names.
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN: Final = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME: Final = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE: Final = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    trainer_image: str = "ascend-mlops/trainer:0.1.0"
    converter_image: str = "ascend-mlops/converter:0.1.0"
    server_image: str = "ascend-mlops/server:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    accelerator_resource: str = catalog.DEFAULT_ACCELERATOR_RESOURCE
    accelerator_node_selector: Mapping[str, str] = field(
        default_factory=lambda: {"accelerator": "huawei-Ascend310"}
    )
    accelerator_toleration_key: str = "huawei.com/Ascend310"
    driver_mounts: str = DRIVER_MOUNTS_RUNTIME
    simulator: bool = False
    metrics_port: int = 8000  # 0 disables the Prometheus endpoint
    health_port: int = 8080  # 0 disables the liveness endpoint
    log_format: str = "plain"
    # Object storage (s3://, obs://): the Secret (same name in each resource's
    # namespace) whose AWS_* keys the pods get when spec.storage.secretName is not
    # set; "" wires none, and the pods use their own identity (IRSA, node role).
    storage_secret: str = ""
    scratch_size: str = "20Gi"  # sizeLimit of the scratch emptyDir object-storage pods download into
    # "<namespace>/<name>" of a Gateway API Gateway: each InferenceService gets an
    # HTTPRoute attached to it, with exact canary weights. "" = no Gateway: the
    # client Service selects the revisions and the split follows ready replicas.
    gateway: tuple[str, str] | None = None
    # Default host names of exposed InferenceServices (spec.exposure) and of the HTTPRoutes
    # on the Gateway: <name>.<namespace>.<domain>; "" = none (routes match every host).
    domain: str = ""
    # IngressClass of spec.exposure Ingresses that name none; "" = the cluster's default class.
    ingress_class: str = ""
    # Scheme of status.url where the operator cannot see TLS: HTTPRoute exposure (the Gateway's
    # listener terminates it) and Ingresses without spec.exposure.tlsSecretName.
    url_scheme: str = "http"
    # Prometheus that scrapes the model servers, for KEDA ScaledObjects' prometheus trigger
    # (spec.autoscaling, metric concurrency); "" = no ScaledObjects, a HorizontalPodAutoscaler instead.
    prometheus_address: str = ""
    # Seconds a workload or server pod may stay not running after it was scheduled (volumes
    # mounting, the image pulled, the sandbox created) before its resource says so: the
    # PodStartTimeout condition, with the kubelet's reason, and a Warning Event.
    pod_start_timeout: int = 300

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every `ASCEND_MLOPS_*` setting; raise SettingsError naming the first bad one."""
        source = os.environ if env is None else env
        defaults = cls()

        def text(name: str, default: str) -> str:
            value = source.get(name)
            if value is None or not value.strip():
                return default
            return value.strip()

        return cls(
            namespaces=_namespaces(source.get(ENV_NAMESPACES, "")),
            trainer_image=text(ENV_TRAINER_IMAGE, defaults.trainer_image),
            converter_image=text(ENV_CONVERTER_IMAGE, defaults.converter_image),
            server_image=text(ENV_SERVER_IMAGE, defaults.server_image),
            image_pull_policy=_choice(
                ENV_IMAGE_PULL_POLICY, text(ENV_IMAGE_PULL_POLICY, defaults.image_pull_policy), PULL_POLICIES
            ),
            accelerator_resource=_resource_name(
                text(ENV_ACCELERATOR_RESOURCE, defaults.accelerator_resource)
            ),
            accelerator_node_selector=_node_selector(
                source.get(ENV_ACCELERATOR_NODE_SELECTOR, "accelerator=huawei-Ascend310")
            ),
            accelerator_toleration_key=_label_key(
                ENV_ACCELERATOR_TOLERATION_KEY,
                text(ENV_ACCELERATOR_TOLERATION_KEY, defaults.accelerator_toleration_key),
            ),
            driver_mounts=_choice(
                ENV_DRIVER_MOUNTS, text(ENV_DRIVER_MOUNTS, defaults.driver_mounts).lower(), DRIVER_MOUNT_MODES
            ),
            simulator=_flag(ENV_SIMULATOR, source.get(ENV_SIMULATOR, "")),
            metrics_port=_port(ENV_METRICS_PORT, text(ENV_METRICS_PORT, str(defaults.metrics_port))),
            health_port=_port(ENV_HEALTH_PORT, text(ENV_HEALTH_PORT, str(defaults.health_port))),
            log_format=_choice(ENV_LOG_FORMAT, text(ENV_LOG_FORMAT, defaults.log_format).lower(), LOG_FORMATS),
            storage_secret=_secret_name(text(ENV_STORAGE_SECRET, defaults.storage_secret)),
            scratch_size=_size(ENV_SCRATCH_SIZE, text(ENV_SCRATCH_SIZE, defaults.scratch_size)),
            gateway=_gateway(text(ENV_GATEWAY, "")),
            domain=_domain(text(ENV_DOMAIN, "")),
            ingress_class=_ingress_class(text(ENV_INGRESS_CLASS, "")),
            url_scheme=_choice(ENV_URL_SCHEME, text(ENV_URL_SCHEME, defaults.url_scheme).lower(), URL_SCHEMES),
            prometheus_address=_prometheus(text(ENV_PROMETHEUS_ADDRESS, "")),
            pod_start_timeout=_seconds(
                ENV_POD_START_TIMEOUT, text(ENV_POD_START_TIMEOUT, str(defaults.pod_start_timeout))
            ),
        )


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not supported; use one of: {', '.join(allowed)}")
    return value


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean; use 1/true to enable or 0/false to disable")


def _port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a port number; use 1-65535, or 0 to disable") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name}={port} is out of range; use 1-65535, or 0 to disable")
    return port


def _seconds(name: str, value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number of seconds; use a whole number such as 300") from None
    if seconds < 1:
        raise SettingsError(f"{name}={seconds} is too small; use a whole number of seconds, at least 1 (default 300)")
    return seconds


def _secret_name(value: str) -> str:
    if value and not is_object_name(value):
        raise SettingsError(
            f"{ENV_STORAGE_SECRET}={value!r} is not a Secret name (lowercase letters, digits, '-', '.', "
            "at most 253 characters); leave it empty to wire no Secret"
        )
    return value


def _size(name: str, value: str) -> str:
    if not is_quantity(value) or value.startswith("-"):
        raise SettingsError(f"{name}={value!r} is not a size; use a quantity such as '20Gi' or '500Mi'")
    return value


def _namespaces(value: str) -> tuple[str, ...]:
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        if not _DNS_LABEL.match(name):
            raise SettingsError(
                f"{ENV_NAMESPACES}: {name!r} is not a valid namespace name "
                "(lowercase letters, digits and '-', at most 63 characters); "
                "leave the variable empty to watch all namespaces"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _gateway(value: str) -> tuple[str, str] | None:
    if not value:
        return None
    namespace, sep, name = value.partition("/")
    if not sep or not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
        raise SettingsError(
            f"{ENV_GATEWAY}={value!r} is not '<namespace>/<name>' of a Gateway (gateway.networking.k8s.io); "
            "leave it empty to split canary traffic by ready replicas"
        )
    return namespace, name


def _domain(value: str) -> str:
    value = value.strip(".").lower()
    if value and not _DNS_SUBDOMAIN.match(value):
        raise SettingsError(f"{ENV_DOMAIN}={value!r} is not a DNS domain such as 'models.example.com'")
    return value


def _ingress_class(value: str) -> str:
    if value and not _DNS_SUBDOMAIN.match(value):
        raise SettingsError(
            f"{ENV_INGRESS_CLASS}={value!r} is not an IngressClass name such as 'nginx'; "
            "leave it empty for the cluster's default class"
        )
    return value


_HTTP_URL: Final = re.compile(r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/\S*)?$")


def _prometheus(value: str) -> str:
    if value and not _HTTP_URL.match(value):
        raise SettingsError(
            f"{ENV_PROMETHEUS_ADDRESS}={value!r} is not an http(s) URL such as "
            "'http://prometheus-operated.monitoring.svc:9090'; leave it empty to use HorizontalPodAutoscalers only"
        )
    return value.rstrip("/")


def _label_key(name: str, value: str) -> str:
    if not _QUALIFIED_NAME.match(value) or len(value) > 316:
        raise SettingsError(f"{name}={value!r} is not a valid label/taint key such as 'huawei.com/Ascend310'")
    return value


def _resource_name(value: str) -> str:
    # Extended resources must be domain-qualified (the device plugin's own name).
    if "/" not in value or not _QUALIFIED_NAME.match(value):
        raise SettingsError(
            f"{ENV_ACCELERATOR_RESOURCE}={value!r} is not an extended resource name; "
            "use the device plugin's resource such as 'huawei.com/Ascend310'"
        )
    return value


def _node_selector(value: str) -> dict[str, str]:
    selector: dict[str, str] = {}
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, label = item.partition("=")
        key, label = key.strip(), label.strip()
        if not sep or not key:
            raise SettingsError(
                f"{ENV_ACCELERATOR_NODE_SELECTOR}: {item!r} is not KEY=VALUE; "
                "use comma-separated pairs such as 'accelerator=huawei-Ascend310'"
            )
        _label_key(ENV_ACCELERATOR_NODE_SELECTOR, key)
        if not _LABEL_VALUE.match(label):
            raise SettingsError(
                f"{ENV_ACCELERATOR_NODE_SELECTOR}: {label!r} is not a valid label value "
                "(letters, digits, '-', '_', '.', at most 63 characters)"
            )
        selector[key] = label
    return selector
