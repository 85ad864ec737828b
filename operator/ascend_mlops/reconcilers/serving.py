"""What an InferenceService needs to serve clients outside the cluster: its external address
(spec.exposure), its token Secret (spec.auth) and its autoscaler (spec.autoscaling).

Each child exists exactly while its spec field does: removing spec.exposure or
spec.autoscaling deletes the Ingress or the autoscaler. The token Secret is the
user's; the operator only checks that it exists, by its metadata, so that no
token ever passes through the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.constants import Reason
from ascend_mlops.api.specs import (
    EXPOSURE_HTTPROUTE,
    EXPOSURE_INGRESS,
    METRIC_CONCURRENCY,
    METRIC_CPU,
    Autoscaling,
    FieldError,
    InferenceServiceSpec,
)
from ascend_mlops.builders import serving as builder
from ascend_mlops.builders.common import Owner
from ascend_mlops.kube import ApiError
from ascend_mlops.reconcilers import credentials
from ascend_mlops.reconcilers.children import delete_if_present, ensure_child
from ascend_mlops.reconcilers.credentials import RETRY_SECONDS, Blocked
from ascend_mlops.reconcilers.engine import Engine
from ascend_mlops.settings import ENV_DOMAIN, ENV_GATEWAY, ENV_PROMETHEUS_ADDRESS, Settings

# We do not watch autoscalers: while one has not reported that it can scale, look again this often.
AUTOSCALER_RECHECK_SECONDS: Final = 60.0
STATUS_TRUE: Final = "True"
STATUS_FALSE: Final = "False"
STATUS_UNKNOWN: Final = "Unknown"


# --- exposure -------------------------------------------------------------------------------
def exposure_errors(spec: InferenceServiceSpec, owner: Owner, settings: Settings) -> list[FieldError]:
    """What spec.exposure asks for that this operator's settings cannot give (a host, a Gateway)."""
    exposure = spec.exposure
    if exposure is None:
        return []
    errors = []
    if exposure.type == EXPOSURE_HTTPROUTE and settings.gateway is None:
        errors.append(FieldError(
            "spec.exposure.type",
            f"is HTTPRoute, but the operator has no Gateway to attach it to ({ENV_GATEWAY}, chart value gateway.parent); "
            "use type: Ingress, or configure the Gateway",
        ))
    if builder.exposure_host(owner, exposure, settings.domain) is None:
        if not settings.domain:
            errors.append(FieldError(
                "spec.exposure.host",
                f"is required: the operator has no default domain ({ENV_DOMAIN}, chart value domain) for "
                "<name>.<namespace>.<domain>; set spec.exposure.host, or the domain",
            ))
        else:
            errors.append(FieldError(
                "spec.exposure.host",
                f"is required: the default host {owner.name}.{owner.namespace}.{settings.domain} is not a valid host name "
                "(each dot-separated part at most 63 characters, 253 in all); set spec.exposure.host",
            ))
    return errors


def route_host(spec: InferenceServiceSpec, owner: Owner, settings: Settings) -> str | None:
    """The host of the Gateway's HTTPRoute: the exposure's (type HTTPRoute), else <name>.<namespace>.<domain> if any."""
    if spec.exposure is not None and spec.exposure.type == EXPOSURE_HTTPROUTE:
        return builder.exposure_host(owner, spec.exposure, settings.domain)
    return builder.default_host(owner, settings.domain)


def external_url(spec: InferenceServiceSpec, owner: Owner, settings: Settings) -> str | None:
    if spec.exposure is None:
        return None
    host = builder.exposure_host(owner, spec.exposure, settings.domain)
    return builder.external_url(spec.exposure, host, settings.url_scheme) if host else None


async def ensure_ingress(
    rt: Engine, owner: Owner, spec: InferenceServiceSpec, old_status: Mapping[str, Any]
) -> None:
    """The Ingress while spec.exposure is an Ingress; deleted once it is not (it existed if status.url did)."""
    name = builder.ingress_name(owner.name)
    if spec.exposure is not None and spec.exposure.type == EXPOSURE_INGRESS:
        host = builder.exposure_host(owner, spec.exposure, rt.settings.domain)
        assert host is not None  # exposure_errors() stopped the reconciliation otherwise
        ingress = builder.build_ingress(owner, spec.exposure, host, rt.settings.ingress_class)
        await ensure_child(rt, owner, constants.INGRESS_API_VERSION, constants.INGRESSES, ingress)
    elif old_status.get("url"):
        await delete_if_present(rt, owner, constants.INGRESS_API_VERSION, constants.INGRESSES, name)


# --- auth -----------------------------------------------------------------------------------
async def check_auth_secret(rt: Engine, namespace: str, spec: InferenceServiceSpec) -> Blocked | None:
    """None when the server pods can mount spec.auth's Secret (or there is no spec.auth).

    Only the Secret's metadata is fetched (it exists, or not): its tokens never
    reach the operator. A pod whose Secret volume is missing would wait in
    ContainerCreating with nothing in its status saying why.
    """
    if spec.auth is None:
        return None
    name = spec.auth.secret_name
    try:
        found = await credentials.fetch_secret(rt, namespace, name, metadata_only=True)
    except credentials.SecretForbidden:
        where = f"Secret {name!r} (spec.auth.secretName) in namespace {namespace!r}"
        return Blocked(Reason.AUTH_SECRET_MISSING, f"the operator may not look up {where}; {credentials.GRANT_HINT}", RETRY_SECONDS)
    if found is None:
        return Blocked(
            Reason.AUTH_SECRET_MISSING,
            f"Secret {name!r} (spec.auth.secretName) not found in namespace {namespace!r}; the server pods mount it to "
            f"check tokens (each key holds tokens, one per line). Create it: kubectl create secret generic {name} "
            f"-n {namespace} --from-literal=token=\"$(openssl rand -hex 32)\"",
            RETRY_SECONDS,
        )
    return None


# --- autoscaling ----------------------------------------------------------------------------
@dataclass
class Scaling:
    """The Autoscaling condition, the status.autoscaler record and when to look again."""

    status: str
    reason: str
    message: str
    record: dict[str, str]
    requeue_after: float | None = None


def describe_metric(autoscaling: Autoscaling) -> str:
    if autoscaling.metric == METRIC_CPU:
        return f"CPU at {autoscaling.target:g} percent of the request"
    return f"{autoscaling.target:g} in-flight requests per pod ({contract.METRIC_INFLIGHT})"


async def accelerator_capacity(rt: Engine, resource: str) -> int | None:
    """The devices of `resource` all nodes together can allocate (a node's total, whoever uses them);
    None when the operator may not list nodes (RBAC made by hand): then there is no capacity check."""

    async def load() -> int | None:
        try:
            nodes = await rt.client.list("v1", "nodes", None)
        except ApiError as exc:
            if exc.status != 403:
                raise
            return None
        total = 0
        for node in nodes:
            value = str(((node.get("status") or {}).get("allocatable") or {}).get(resource) or "0")
            total += int(value) if value.isdigit() else 0
        return total

    return await rt.fact(f"allocatable {resource}", load)


async def use_keda(rt: Engine, autoscaling: Autoscaling) -> tuple[bool, str]:
    """(ScaledObject rather than HPA, a note for the condition message)."""
    if autoscaling.metric != METRIC_CONCURRENCY:
        return False, ""  # CPU needs no Prometheus: a plain HPA on the resource metrics API
    if not await rt.served(constants.KEDA_API_VERSION, constants.SCALEDOBJECTS):
        return False, ""
    if not rt.settings.prometheus_address:
        return False, (
            f"; KEDA is installed, but the operator knows no Prometheus ({ENV_PROMETHEUS_ADDRESS}, chart value "
            "autoscaling.prometheusAddress), so the HorizontalPodAutoscaler reads the custom metrics API instead"
        )
    return True, ""


def _condition(conditions: Any, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def autoscaler_state(kind: str, name: str, autoscaling: Autoscaling, live: Mapping[str, Any]) -> tuple[str, str, str]:
    """(status, reason, message) from what the HPA controller or KEDA reported on the object."""
    what = f"{kind} {name} scales {autoscaling.min_replicas}-{autoscaling.max_replicas} replicas on {describe_metric(autoscaling)}"
    conditions = (live.get("status") or {}).get("conditions")
    if kind == constants.KIND_HPA:
        blocking = [c for c in (_condition(conditions, t) for t in ("AbleToScale", "ScalingActive")) if c and c.get("status") == STATUS_FALSE]
        known = _condition(conditions, "ScalingActive")
    else:
        ready = _condition(conditions, "Ready")
        blocking = [ready] if ready and ready.get("status") == STATUS_FALSE else []
        known = ready if ready and ready.get("status") == STATUS_TRUE else None
    if blocking:
        problem = "; ".join(f"{c.get('reason')}: {c.get('message')}".strip(": ") for c in blocking)
        hint = ""
        if autoscaling.metric == METRIC_CONCURRENCY and kind == constants.KIND_HPA:
            hint = (
                f" (metric concurrency needs {contract.METRIC_INFLIGHT} in the custom metrics API: the Prometheus "
                "Adapter rule in docs/serving.md; or use metric: cpu)"
            )
        return STATUS_FALSE, Reason.AUTOSCALER_NOT_READY, f"{what}, but cannot: {problem}{hint}"
    if known is None:
        return STATUS_UNKNOWN, Reason.AUTOSCALER_PENDING, f"{what}; waiting for its controller's first report"
    return STATUS_TRUE, Reason.AUTOSCALER_READY, what


async def ensure_autoscaler(
    rt: Engine, owner: Owner, spec: InferenceServiceSpec, old_status: Mapping[str, Any]
) -> Scaling | None:
    """The HPA or ScaledObject while spec.autoscaling is set; the other kind (or both, without it) deleted."""
    previous = old_status.get("autoscaler") if isinstance(old_status.get("autoscaler"), Mapping) else None
    autoscaling = spec.autoscaling
    if autoscaling is None:
        if previous is not None:
            await _delete_autoscaler(rt, owner, previous)
        return None
    keda, note = await use_keda(rt, autoscaling)
    name = builder.autoscaler_name(owner.name)
    if keda:
        kind, desired = constants.KIND_SCALEDOBJECT, builder.build_scaled_object(owner, autoscaling, rt.settings.prometheus_address)
        live = await ensure_child(rt, owner, constants.KEDA_API_VERSION, constants.SCALEDOBJECTS, desired)
    else:
        kind, desired = constants.KIND_HPA, builder.build_hpa(owner, autoscaling)
        live = await ensure_child(rt, owner, constants.HPA_API_VERSION, constants.HPAS, desired)
    if previous is not None and (previous.get("kind") != kind or previous.get("name") != name):
        await _delete_autoscaler(rt, owner, previous)
    status, reason, message = autoscaler_state(kind, name, autoscaling, live)
    message += note
    if spec.accelerator is not None:
        needed = autoscaling.max_replicas * spec.accelerator.count
        capacity = await accelerator_capacity(rt, spec.accelerator.resource)
        if capacity is None:
            message += "; maxReplicas is not compared with the nodes' devices: the operator may not list nodes"
        elif needed > capacity:
            fits = capacity // spec.accelerator.count
            message += (
                f"; maxReplicas {autoscaling.max_replicas} needs {needed} {spec.accelerator.resource} but the nodes can "
                f"allocate {capacity} in all (shared with every other workload), so at most {fits} replica(s) can run and "
                "the rest would stay Pending: lower maxReplicas or add Ascend nodes"
            )
            if reason != Reason.AUTOSCALER_NOT_READY:
                reason = Reason.MAX_REPLICAS_ABOVE_CAPACITY
    requeue = AUTOSCALER_RECHECK_SECONDS if status != STATUS_TRUE else None
    return Scaling(status, reason, message, {"kind": kind, "name": name}, requeue)


async def _delete_autoscaler(rt: Engine, owner: Owner, record: Mapping[str, Any]) -> None:
    name = str(record.get("name") or builder.autoscaler_name(owner.name))
    if record.get("kind") == constants.KIND_SCALEDOBJECT:
        await delete_if_present(rt, owner, constants.KEDA_API_VERSION, constants.SCALEDOBJECTS, name)
    else:
        await delete_if_present(rt, owner, constants.HPA_API_VERSION, constants.HPAS, name)


def live_replicas(deployment: Mapping[str, Any] | None, default: int) -> int:
    replicas = ((deployment or {}).get("spec") or {}).get("replicas")
    return int(replicas) if isinstance(replicas, int) else default

