"""Keeping a long-lived child (Deployment, Service, HTTPRoute, Ingress, autoscaler) as the builders say.

A child is replaced only when its spec hash annotation differs from the
desired one: what controllers and users add to it (status, defaults, a
Service's cluster IP) is no drift. A replica count that belongs to an
autoscaler is kept as it is found (`replicas_within`), so the operator never
undoes the autoscaler's decision.
"""

from __future__ import annotations

from typing import Any

from ascend_mlops.builders.common import ANNOTATION_SPEC_HASH, Owner
from ascend_mlops.reconcilers.engine import ChildConflict, Engine, owned_by


async def update_if_drifted(
    rt: Engine, owner: Owner, api_version: str, plural: str, existing: dict[str, Any], desired: dict[str, Any],
    *, force: bool = False,
) -> dict[str, Any]:
    meta = existing.get("metadata") or {}
    want = desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    if (meta.get("annotations") or {}).get(ANNOTATION_SPEC_HASH) == want and not force:
        return existing
    if not any(ref.get("kind") == owner.kind and ref.get("name") == owner.name for ref in meta.get("ownerReferences") or []):
        raise ChildConflict(
            f"{desired['kind']} {owner.namespace}/{meta.get('name')} exists and does not belong to "
            f"{owner.kind} {owner.name}; delete or rename it"
        )
    body = {
        **desired,
        "metadata": {
            **meta,
            "labels": {**(meta.get("labels") or {}), **desired["metadata"]["labels"]},
            "annotations": {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]},
            "ownerReferences": desired["metadata"]["ownerReferences"],
        },
    }
    body.pop("status", None)
    # metadata.resourceVersion is the one read: a concurrent change (an autoscaler
    # scaling) makes this a 409 and the next reconciliation starts from the new state.
    return await rt.replace_child(owner, api_version, plural, str(meta["name"]), body)


async def delete_if_present(rt: Engine, owner: Owner, api_version: str, plural: str, name: str) -> None:
    """Delete the child `name` if it exists and is ours (a namesake someone else owns is left alone)."""
    existing = await rt.read(api_version, plural, owner.namespace, name)
    if existing is not None and owned_by(existing, owner):
        await rt.delete_child(owner, api_version, plural, name)


async def ensure_child(
    rt: Engine, owner: Owner, api_version: str, plural: str, desired: dict[str, Any],
    *, replicas_within: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Create the child, or replace it when it drifted from `desired`; the object as it now is.

    `replicas_within` (min, max): spec.replicas belongs to an autoscaler. A new
    child starts with desired's count; an existing one keeps its live count
    (clamped into the bounds, which the autoscaler would do too), also when the
    rest of it is replaced.
    """
    existing = await rt.read(api_version, plural, owner.namespace, desired["metadata"]["name"])
    if existing is None:
        await rt.create_child(owner, api_version, plural, desired)
        return desired
    force = False
    if replicas_within is not None:
        low, high = replicas_within
        live = (existing.get("spec") or {}).get("replicas")
        kept = min(max(live if isinstance(live, int) else low, low), high)
        desired["spec"]["replicas"] = kept
        force = kept != live
    return await update_if_drifted(rt, owner, api_version, plural, existing, desired, force=force)
