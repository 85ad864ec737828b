"""Pieces every child object shares: names, labels, owner references, pod hardening."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import PodOptions, StorageOptions, StorageURI
from ascend_mlops.settings import Settings
from ascend_mlops.storage import Access, object_storage_access

ANNOTATION_SPEC_HASH: Final = f"{constants.GROUP}/spec-hash"
# The owner's full name (labels are clipped to 63 characters) on pods that a
# ReplicaSet, not the custom resource, owns.
ANNOTATION_OWNER_NAME: Final = constants.LABEL_OWNER_NAME
TMP_VOLUME: Final = "tmp"
# Workloads run as this user: the images create it, and it is non-root so that
# runAsNonRoot can be verified even when the image names its user by name.
WORKLOAD_UID: Final = 1000
DNS_LABEL_MAX: Final = 63


@dataclass(frozen=True)
class Owner:
    """The custom resource a child belongs to."""

    kind: str
    name: str
    namespace: str
    uid: str | None = None
    api_version: str = constants.API_VERSION

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body.get("metadata") or {}
        return cls(
            kind=str(body.get("kind") or ""),
            name=str(meta.get("name") or ""),
            namespace=str(meta.get("namespace") or "default"),
            uid=meta.get("uid"),
            api_version=str(body.get("apiVersion") or constants.API_VERSION),
        )


def clip_name(name: str, limit: int = DNS_LABEL_MAX) -> str:
    """Shorten a generated name to `limit` characters, keeping it unique with a hash suffix."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def selector_labels(owner: Owner, component: str) -> dict[str, str]:
    """The labels that identify an owner's children of one component (stable: used in selectors)."""
    return {
        constants.LABEL_MANAGED_BY: constants.PRODUCT,
        constants.LABEL_OWNER_KIND: owner.kind,
        constants.LABEL_OWNER_NAME: clip_name(owner.name),
        constants.LABEL_COMPONENT: component,
    }


def child_labels(owner: Owner, component: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    labels = {
        constants.LABEL_PART_OF: constants.PRODUCT,
        constants.LABEL_INSTANCE: clip_name(owner.name),
        **selector_labels(owner, component),
    }
    labels.update(extra or {})
    return labels


def owner_reference(owner: Owner) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if owner.uid:
        ref["uid"] = owner.uid
    return ref


def object_meta(
    name: str,
    owner: Owner,
    component: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": child_labels(owner, component, labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKLOAD_UID,
        "runAsGroup": WORKLOAD_UID,
        "fsGroup": WORKLOAD_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """/tmp as an emptyDir: the root filesystem is read-only, TensorFlow and ATC need scratch space."""
    return {"name": TMP_VOLUME, "emptyDir": {}}, {"name": TMP_VOLUME, "mountPath": "/tmp"}


def env_list(*groups: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """Env entries in order; a later group overrides an earlier one (user env wins)."""
    merged: dict[str, str] = {}
    for group in groups:
        for name, value in group:
            merged[name] = value
    return [{"name": k, "value": v} for k, v in merged.items()]


BASE_ENV: Final = (("HOME", "/tmp"), ("TF_CPP_MIN_LOG_LEVEL", "2"))


def object_storage(uris: Iterable[StorageURI | None], options: StorageOptions, settings: Settings) -> Access:
    """Scratch volume and Secret wiring for a pod whose locations include s3:// or obs:// (else empty)."""
    return object_storage_access(
        uris, options, default_secret=settings.storage_secret, default_scratch_size=settings.scratch_size
    )


def container_env(
    base: Iterable[tuple[str, str]], user: Iterable[tuple[str, str]], access: Access
) -> list[dict[str, Any]]:
    """Literal env (user env wins), then the storage Secret's keys the user did not set literally.

    A user may set e.g. AWS_ENDPOINT_URL in spec.env; a second entry of the same
    name from the Secret would silently override or shadow it.
    """
    user = list(user)
    literal: list[dict[str, Any]] = list(env_list(base, access.env, user))
    named = {entry["name"] for entry in literal}
    return literal + [entry for entry in access.secret_env if entry["name"] not in named]


def workload_container(
    *,
    name: str,
    image: str,
    pull_policy: str,
    args: list[str],
    env: list[dict[str, Any]],
    volume_mounts: list[dict[str, Any]],
    resources: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": [contract.ENTRYPOINT],
        "args": list(args),
        "env": env,
        "volumeMounts": volume_mounts,
        "terminationMessagePath": contract.DEFAULT_TERMINATION_LOG,
        # The workloads write a JSON summary there; if they die before writing
        # it, the tail of the log is the next best explanation.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }
    if resources:
        container["resources"] = {k: dict(v) for k, v in resources.items() if v}
    return container


def pod_scheduling(pod: PodOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        spec["tolerations"] = [dict(t) for t in pod.tolerations]
    return spec


def spec_hash(obj: Mapping[str, Any]) -> str:
    """A stable digest of a manifest, stored on the object to detect drift from the desired spec."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
