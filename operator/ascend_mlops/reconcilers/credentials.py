"""The object-storage Secret, checked before any pod that reaches s3:// or obs:// is created.

A pod whose `secretKeyRef` names a missing Secret or key is created fine and
then sits in CreateContainerConfigError with a kubelet message about env vars;
checking first lets the resource say which Secret and which key, and how to
create it. Only the Secret's key names are looked at: its values are never
read into status, events or logs. The operator GETs the one Secret it needs
(no list, no watch: least privilege), so a Secret created later is noticed by
re-checking every RETRY_SECONDS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.api.constants import Reason
from ascend_mlops.api.specs import StorageOptions, StorageURI
from ascend_mlops.kube import ApiError
from ascend_mlops.reconcilers.engine import Engine
from ascend_mlops.settings import ENV_STORAGE_SECRET
from ascend_mlops.storage import secret_name

RETRY_SECONDS: Final = 30.0


@dataclass(frozen=True)
class Blocked:
    """Pods must not be created yet: the condition to report and when to look again."""

    reason: str
    message: str
    requeue_after: float


GRANT_HINT: Final = "grant it get on secrets there (the chart's Role/ClusterRole does, for the namespaces it watches)"


class SecretForbidden(Exception):
    """The operator's RBAC does not let it get the Secret."""


async def fetch_secret(rt: Engine, namespace: str, name: str, metadata_only: bool = False) -> dict[str, Any] | None:
    """The one Secret a resource names (None if missing); GET only, no list or watch: least privilege."""
    try:
        if metadata_only:
            return await rt.client.get_metadata("v1", "secrets", namespace, name)
        return await rt.client.get("v1", "secrets", namespace, name)
    except ApiError as exc:
        if exc.status != 403:
            raise
        raise SecretForbidden(name) from None


def _create_hint(name: str, namespace: str) -> str:
    literals = " ".join(f"--from-literal={key}=..." for key in contract.STORAGE_SECRET_REQUIRED_KEYS)
    optional = ", ".join(contract.STORAGE_SECRET_OPTIONAL_KEYS)
    return f"kubectl create secret generic {name} -n {namespace} {literals} (optional keys: {optional})"


async def check_storage_secret(
    rt: Engine, namespace: str, uris: Iterable[StorageURI | None], options: StorageOptions
) -> Blocked | None:
    """None when the pods may be created: no object storage, no Secret to wire, or the Secret is complete."""
    remote = [uri for uri in uris if uri is not None and uri.is_object_storage]
    if not remote:
        return None
    name = secret_name(options, rt.settings.storage_secret)
    if name is None:
        return None  # the pods use their own identity (IRSA, an instance role)
    source = (
        "spec.storage.secretName"
        if options.secret_name
        else f"the operator's default Secret ({ENV_STORAGE_SECRET}, chart value storage.secretName)"
    )
    needed_for = f"the pods need it for {remote[0]}"
    try:
        secret = await fetch_secret(rt, namespace, name)
    except SecretForbidden:
        message = f"the operator may not read Secret {name!r} in namespace {namespace!r} ({source}; {needed_for}); {GRANT_HINT}"
        return Blocked(Reason.STORAGE_SECRET_MISSING, message, RETRY_SECONDS)
    if secret is None:
        return Blocked(
            Reason.STORAGE_SECRET_MISSING,
            f"Secret {name!r} ({source}) not found in namespace {namespace!r}; {needed_for}. "
            f"Create it: {_create_hint(name, namespace)}",
            RETRY_SECONDS,
        )
    # Key names only: the values stay in the Secret.
    keys = {*(secret.get("data") or {}), *(secret.get("stringData") or {})}
    del secret
    missing = [key for key in contract.STORAGE_SECRET_REQUIRED_KEYS if key not in keys]
    if not missing:
        return None
    patch = ",".join(f'"{key}":"..."' for key in missing)
    return Blocked(
        Reason.STORAGE_SECRET_MISSING,
        f"Secret {name!r} in namespace {namespace!r} ({source}) has no key {', '.join(missing)}; {needed_for}. "
        f"Add it: kubectl patch secret {name} -n {namespace} --type merge -p '{{\"stringData\":{{{patch}}}}}'",
        RETRY_SECONDS,
    )
