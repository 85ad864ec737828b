"""The Deployment controller of the sandbox: keeps replicas, rolls on template changes.

Pods are created straight from the Deployment (the sandbox has no ReplicaSet
objects; the pods carry `pod-template-hash` and an owner reference to the
Deployment). Rolling updates honour `maxSurge` / `maxUnavailable`; status
reports replicas, updated/ready/available counts and the `Available` and
`Progressing` conditions with the reasons the real controller uses.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ascend_mlops.kube import ApiError
from ascend_mlops.sandbox.objects import match_labels_selector, now_rfc3339

if TYPE_CHECKING:
    from ascend_mlops.sandbox.kubelet import Kubelet

logger = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
EXPECTATION_TIMEOUT = 30.0


def template_hash(template: Mapping[str, Any]) -> str:
    import json

    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        fraction = float(value[:-1]) / 100.0 * total
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(value or 0)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions") or []
    )


def _finished(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _condition(kind: str, status: bool, reason: str, message: str, old: list[dict[str, Any]]) -> dict[str, Any]:
    value = "True" if status else "False"
    now = now_rfc3339()
    before = next((c for c in old if c.get("type") == kind), None)
    transition = before.get("lastTransitionTime", now) if before and before.get("status") == value else now
    update = before.get("lastUpdateTime", now) if before and before.get("reason") == reason and before.get("status") == value else now
    return {"type": kind, "status": value, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update}


class DeploymentController:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.deployments: dict[str, dict[str, Any]] = {}
        self._creating: dict[str, dict[str, tuple[dict[str, Any], float]]] = {}  # dep uid -> pod name -> (pod, when)
        self._deleting: dict[str, float] = {}  # pod uid -> when
        self._last_status: dict[str, Any] = {}
        self._progress: dict[str, tuple[Any, float]] = {}  # dep uid -> (progress marker, since)

    async def on_event(self, kind: str, deployment: dict[str, Any]) -> None:
        uid = deployment["metadata"]["uid"]
        if kind == "DELETED":
            self.deployments.pop(uid, None)
            self._creating.pop(uid, None)
            self._last_status.pop(uid, None)
            self._progress.pop(uid, None)
        else:
            self.deployments[uid] = deployment

    async def sync(self) -> None:
        for uid, deployment in list(self.deployments.items()):
            if deployment["metadata"].get("deletionTimestamp"):
                continue
            try:
                await self._sync_one(uid, deployment)
            except ApiError as e:
                logger.debug("deployment %s: %s", deployment["metadata"]["name"], e)

    def _owned(self, uid: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        owned: dict[str, dict[str, Any]] = {}
        for pod in self.kubelet.pods.values():
            refs = pod["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                owned[pod["metadata"]["name"]] = pod
        creating = self._creating.setdefault(uid, {})
        for name, (pod, when) in list(creating.items()):
            if name in owned or now - when > EXPECTATION_TIMEOUT:
                del creating[name]
            else:
                owned[name] = pod
        for pod_uid, when in list(self._deleting.items()):
            if now - when > EXPECTATION_TIMEOUT or pod_uid not in self.kubelet.pods:
                del self._deleting[pod_uid]
        return [
            p for p in owned.values()
            if not p["metadata"].get("deletionTimestamp") and p["metadata"].get("uid") not in self._deleting
        ]

    async def _create_pod(self, deployment: Mapping[str, Any], pod_hash: str) -> None:
        meta = deployment["metadata"]
        template = copy.deepcopy(deployment["spec"].get("template") or {})
        template_meta = template.get("metadata") or {}
        name = f"{meta['name']}-{pod_hash}-{''.join(random.choice(_ALPHABET) for _ in range(5))}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta.get("namespace", "default"),
                "labels": {**(template_meta.get("labels") or {}), HASH_LABEL: pod_hash},
                "annotations": dict(template_meta.get("annotations") or {}),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"], "uid": meta["uid"],
                    "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": template.get("spec") or {},
        }
        created = await self.kubelet.client.create("v1", "pods", meta.get("namespace"), pod)
        self._creating.setdefault(meta["uid"], {})[name] = (created or pod, time.monotonic())

    async def _delete_pod(self, pod: Mapping[str, Any]) -> None:
        self._deleting[pod["metadata"]["uid"]] = time.monotonic()
        await self.kubelet.client.delete("v1", "pods", pod["metadata"].get("namespace"), pod["metadata"]["name"])

    async def _sync_one(self, uid: str, deployment: dict[str, Any]) -> None:
        spec = deployment.get("spec", {})
        meta = deployment["metadata"]
        replicas = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec.get("template") or {})
        rs_name = f"{meta['name']}-{pod_hash}"
        pods = self._owned(uid)
        events = self.kubelet.events

        for pod in [p for p in pods if _finished(p)]:
            await self._delete_pod(pod)  # a finished replica is replaced, as a ReplicaSet does
        pods = [p for p in pods if not _finished(p) and p["metadata"].get("uid") not in self._deleting]
        new = [p for p in pods if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == pod_hash]
        old = [p for p in pods if p not in new]

        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            if old:
                for pod in old:
                    await self._delete_pod(pod)
                old = []
            elif len(new) < replicas:
                for _ in range(replicas - len(new)):
                    await self._create_pod(deployment, pod_hash)
                await events.post(deployment, "ScalingReplicaSet", f"Scaled up replica set {rs_name} from {len(new)} to {replicas}", component="deployment-controller")
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
            unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
            if surge == 0 and unavailable == 0:
                unavailable = 1
            target_new = replicas if not old else max(len(new), min(replicas, replicas + surge - len(old)))
            if len(new) < target_new:
                for _ in range(target_new - len(new)):
                    await self._create_pod(deployment, pod_hash)
                await events.post(deployment, "ScalingReplicaSet", f"Scaled up replica set {rs_name} from {len(new)} to {target_new}", component="deployment-controller")
            elif len(new) > replicas:
                extra = sorted(new, key=lambda p: (pod_ready(p), p["metadata"].get("creationTimestamp", "")))[: len(new) - replicas]
                for pod in extra:
                    await self._delete_pod(pod)
                await events.post(deployment, "ScalingReplicaSet", f"Scaled down replica set {rs_name} from {len(new)} to {replicas}", component="deployment-controller")
            if old:
                for pod in [p for p in old if not pod_ready(p)]:
                    await self._delete_pod(pod)
                old_ready = [p for p in old if pod_ready(p)]
                available = sum(1 for p in new if pod_ready(p)) + len(old_ready)
                removable = max(available - (replicas - unavailable), 0)
                for pod in old_ready[:removable]:
                    await self._delete_pod(pod)
                if removable or len(old_ready) < len(old):
                    await events.post(deployment, "ScalingReplicaSet", f"Scaled down old replica set of {meta['name']} by {removable + len(old) - len(old_ready)}", component="deployment-controller")

        await self._report(uid, deployment, pod_hash, rs_name)

    async def _report(self, uid: str, deployment: dict[str, Any], pod_hash: str, rs_name: str) -> None:
        spec = deployment.get("spec", {})
        replicas = int(spec.get("replicas", 1))
        pods = [p for p in self._owned(uid) if not _finished(p)]
        new = [p for p in pods if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == pod_hash]
        ready = sum(1 for p in pods if pod_ready(p))
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        unavailable_allowed = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            unavailable_allowed = 0
        old_conditions = deployment.get("status", {}).get("conditions") or []
        available_ok = ready >= replicas - unavailable_allowed
        complete = len(new) == replicas and len(pods) == replicas and sum(1 for p in new if pod_ready(p)) == replicas

        marker = (pod_hash, len(new), ready, len(pods))
        now = time.monotonic()
        previous = self._progress.get(uid)
        if previous is None or previous[0] != marker:
            self._progress[uid] = (marker, now)
            previous = self._progress[uid]
        deadline = float(spec.get("progressDeadlineSeconds", 600))
        if complete:
            progressing = _condition("Progressing", True, "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.', old_conditions)
        elif now - previous[1] > deadline:
            progressing = _condition("Progressing", False, "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.', old_conditions)
        else:
            progressing = _condition("Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', old_conditions)
        available = (
            _condition("Available", True, "MinimumReplicasAvailable", "Deployment has minimum availability.", old_conditions)
            if available_ok
            else _condition("Available", False, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", old_conditions)
        )
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(replicas - ready, 0),
            "conditions": [available, progressing],
        }
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas", "replicas"):
            if not status[key]:
                status.pop(key)  # the real controller omits zero counts
        comparable = {**status, "conditions": [{k: v for k, v in c.items() if k not in ("lastTransitionTime", "lastUpdateTime")} for c in status["conditions"]]}
        if self._last_status.get(uid) == comparable:
            return
        meta = deployment["metadata"]
        # A merge patch cannot drop the omitted counts, so they are nulled explicitly.
        patch_status = {k: status.get(k) for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")}
        patch_status.update({k: v for k, v in status.items()})
        with contextlib.suppress(ApiError):
            await self.kubelet.client.patch("apps/v1", "deployments", meta.get("namespace"), meta["name"], {"status": patch_status}, subresource="status")
            self._last_status[uid] = comparable


def selector_matches(deployment: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    return match_labels_selector(deployment.get("spec", {}).get("selector"), pod.get("metadata", {}).get("labels"))
