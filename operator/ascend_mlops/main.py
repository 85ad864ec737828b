"""Kopf registration only: thin handlers that hand every event to the reconcilers.

Run with `ascend-mlops operator` (settings from ASCEND_MLOPS_*, liveness and
metrics endpoints) or `kopf run -m ascend_mlops.main [-n NS | -A]`.

The handlers are level-triggered: any event about a custom resource, one of
its pods or Deployments, or a resource it references, makes the owner's
reconciler look at the whole current state and converge. Nothing is kept in
Kopf's annotations or finalizers: status and the children are the state, so a
restarted operator picks up exactly where the cluster is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import kopf

from ascend_mlops import metrics, shutdown
from ascend_mlops.api import constants
from ascend_mlops.builders.common import ANNOTATION_OWNER_NAME
from ascend_mlops.kube import KubeClient, close_quietly
from ascend_mlops.reconcilers import batch, conversion, inference, training
from ascend_mlops.reconcilers.cache import index_entries
from ascend_mlops.reconcilers.engine import Engine, Key
from ascend_mlops.settings import Settings, SettingsError

MANAGED: dict[str, str] = {constants.LABEL_MANAGED_BY: constants.PRODUCT}
WORKER_IDLE_SECONDS = 0.5
MANAGED_SELECTOR = f"{constants.LABEL_MANAGED_BY}={constants.PRODUCT}"
RECONCILERS = {
    constants.TRAINING_JOB: training.reconcile,
    constants.MODEL_CONVERSION: conversion.reconcile,
    constants.INFERENCE_SERVICE: inference.reconcile,
    constants.BATCH_PREDICTION: batch.reconcile,
}
KINDS_BY_PLURAL = {plural: kind for kind, plural in constants.PLURALS.items()}


def _engine(memo: Any) -> Engine:
    return cast(Engine, memo.ascend_mlops_engine)


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    try:
        config = Settings.from_env()
    except SettingsError as exc:
        raise kopf.PermanentError(f"invalid settings: {exc}") from None
    # One operator instance per cluster is enough for this workload; no peering objects needed.
    settings.peering.standalone = True
    # Kopf keeps one worker task per object for a while after its last event; with
    # thousands of objects changing at once those idle workers are most of the
    # memory. Reconciles are cheap to start again, so let them go sooner.
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    # Only our own children matter: let the API server filter the pod and Deployment streams.
    settings.watching.label_selectors["v1", "pods"] = MANAGED_SELECTOR
    settings.watching.label_selectors["apps", "deployments"] = MANAGED_SELECTOR
    settings.watching.label_selectors["v1", "services"] = MANAGED_SELECTOR
    engine = Engine(config, KubeClient(""))
    engine.reconcilers.update(RECONCILERS)
    memo.ascend_mlops_engine = engine
    if metrics.serve(config.metrics_port):
        logger.info("metrics on :%d/metrics", config.metrics_port)
    if config.simulator:
        logger.warning("ASCEND_MLOPS_SIMULATOR is on: conversions and servers run on the Ascend simulator")


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> Any:
    """Kubeconfig or in-cluster credentials, shared by Kopf and the reconcilers' client."""
    import kubernetes.config.kube_config

    # The client library reads $KUBECONFIG once, at import; read it now, so that a
    # kubeconfig written after start-up (the sandbox's, a test's) is the one used.
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubeconfig
    info = kopf.login_via_client(**kwargs)
    engine = getattr(memo, "ascend_mlops_engine", None)
    if info is not None and engine is not None:
        engine.client.configure(info)
    return info


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    # Bound the rest of the shutdown (Kopf alone waits for tasks retrying an absent API).
    shutdown.arm()
    engine = getattr(memo, "ascend_mlops_engine", None)
    if engine is not None:
        await engine.close()
        await close_quietly(engine.client)


# --- what the watches have seen (reconcilers/cache.py) ----------------------------------
# Kopf fills every index from its initial listing before it calls any handler,
# and keeps it current from the same watch streams. Coroutines, so that Kopf calls
# them in its loop rather than handing each event to a thread.
def _entries(namespace: str | None, name: str | None, body: kopf.Body, labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[Any, Any]:
    owner_name = annotations.get(ANNOTATION_OWNER_NAME) or labels.get(constants.LABEL_OWNER_NAME)
    return index_entries(namespace, name, body, labels.get(constants.LABEL_OWNER_KIND), owner_name)


@kopf.index("v1", "pods", labels=MANAGED)
async def pod_index(namespace: str | None, name: str | None, body: kopf.Body, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any) -> dict[Any, Any]:
    return _entries(namespace, name, body, labels, annotations)


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_index(namespace: str | None, name: str | None, body: kopf.Body, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any) -> dict[Any, Any]:
    return _entries(namespace, name, body, labels, annotations)


@kopf.index("v1", "services", labels=MANAGED)
async def service_index(namespace: str | None, name: str | None, body: kopf.Body, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any) -> dict[Any, Any]:
    return _entries(namespace, name, body, labels, annotations)


def _resource_entries(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return index_entries(namespace, name, body, None, None)


# One index per kind (names repeat across kinds: a TrainingJob and an InferenceService "flowers").
@kopf.index(constants.GROUP, constants.VERSION, constants.PLURALS[constants.TRAINING_JOB])
async def trainingjob_index(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _resource_entries(namespace, name, body)


@kopf.index(constants.GROUP, constants.VERSION, constants.PLURALS[constants.MODEL_CONVERSION])
async def modelconversion_index(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _resource_entries(namespace, name, body)


@kopf.index(constants.GROUP, constants.VERSION, constants.PLURALS[constants.INFERENCE_SERVICE])
async def inferenceservice_index(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _resource_entries(namespace, name, body)


@kopf.index(constants.GROUP, constants.VERSION, constants.PLURALS[constants.BATCH_PREDICTION])
async def batchprediction_index(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _resource_entries(namespace, name, body)


def _attach(memo: Any, handler_kwargs: Mapping[str, Any]) -> None:
    """Hand Kopf's indices to the engine: every handler gets them, the first call is enough."""
    engine = _engine(memo)
    if engine.cache.covers("v1", "pods"):
        return
    engine.cache.attach({
        ("v1", "pods"): handler_kwargs["pod_index"],
        ("apps/v1", "deployments"): handler_kwargs["deployment_index"],
        ("v1", "services"): handler_kwargs["service_index"],
        **{(constants.API_VERSION, plural): handler_kwargs[f"{plural[:-1]}_index"] for plural in constants.PLURALS.values()},
    })


async def _object_event(
    memo: Any, kind: str, namespace: str | None, name: str | None, event_type: str | None, handler_kwargs: Mapping[str, Any]
) -> None:
    _attach(memo, handler_kwargs)
    if not namespace or not name:
        return
    engine = _engine(memo)
    key = Key(kind, namespace, name)
    if event_type == "DELETED":
        engine.forget(key)
    elif not engine.cache.is_echo(constants.API_VERSION, key.plural, handler_kwargs.get("body") or {}):
        await engine.reconcile(key)
    # Whatever changed here may unblock or break what references it.
    engine.poke_dependents(key)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURALS[constants.TRAINING_JOB])
async def training_job_event(memo: kopf.Memo, namespace: str | None, name: str | None, type: str | None, **kwargs: Any) -> None:
    await _object_event(memo, constants.TRAINING_JOB, namespace, name, type, kwargs)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURALS[constants.MODEL_CONVERSION])
async def model_conversion_event(memo: kopf.Memo, namespace: str | None, name: str | None, type: str | None, **kwargs: Any) -> None:
    await _object_event(memo, constants.MODEL_CONVERSION, namespace, name, type, kwargs)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURALS[constants.INFERENCE_SERVICE])
async def inference_service_event(memo: kopf.Memo, namespace: str | None, name: str | None, type: str | None, **kwargs: Any) -> None:
    await _object_event(memo, constants.INFERENCE_SERVICE, namespace, name, type, kwargs)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURALS[constants.BATCH_PREDICTION])
async def batch_prediction_event(memo: kopf.Memo, namespace: str | None, name: str | None, type: str | None, **kwargs: Any) -> None:
    await _object_event(memo, constants.BATCH_PREDICTION, namespace, name, type, kwargs)


def owner_key(body: Mapping[str, Any]) -> Key | None:
    """The custom resource a child belongs to: its controller owner reference, or for
    pods created by a Deployment's ReplicaSet, the owner labels and annotation."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    for ref in meta.get("ownerReferences") or []:
        api_version = str(ref.get("apiVersion") or "")
        if ref.get("controller") and api_version.split("/")[0] == constants.GROUP and ref.get("kind") in RECONCILERS:
            return Key(str(ref["kind"]), namespace, str(ref.get("name") or ""))
    labels = meta.get("labels") or {}
    kind = labels.get(constants.LABEL_OWNER_KIND)
    name = (meta.get("annotations") or {}).get(ANNOTATION_OWNER_NAME) or labels.get(constants.LABEL_OWNER_NAME)
    if kind in RECONCILERS and name:
        return Key(str(kind), namespace, str(name))
    return None


@kopf.on.event("v1", "pods", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def child_event(memo: kopf.Memo, body: kopf.Body, resource: kopf.Resource, **kwargs: Any) -> None:
    _attach(memo, kwargs)
    engine = _engine(memo)
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    if engine.cache.is_echo(api_version, resource.plural, body):
        return  # the object as our own create or replace left it
    key = owner_key(body)
    if key is not None and key.namespace and key.name:
        await engine.reconcile(key)
