"""A pod that cannot start is never silent: the real kubelet's reason reaches the resource's conditions and Events."""

from __future__ import annotations

import datetime
from typing import Any

from ascend_mlops.api import constants
from ascend_mlops.api.constants import Reason
from tests.cluster import realcluster as rc
from tests.cluster.conftest import POD_START_TIMEOUT, Unstartable


def stuck(cluster: rc.Cluster, kind: str, name: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    obj = cluster.get(kind, name, namespace) or {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("reason") == Reason.POD_START_TIMEOUT:
            return obj, dict(cond)
    return None


def warnings(cluster: rc.Cluster, kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
    return [e for e in cluster.list("events", namespace)
            if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name and e["type"] == "Warning"]


def seconds(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_missing_image_and_an_unmountable_volume_become_conditions(cluster: rc.Cluster, unstartable: Unstartable) -> None:
    """Applied by the session's `unstartable` fixture (before the seed flow, so the wait overlaps it)."""
    ns = unstartable.namespace
    for kind, name, kubelet_reason in (
        (constants.TRAINING_JOB, unstartable.job, "ErrImageNeverPull"),
        (constants.INFERENCE_SERVICE, unstartable.service, "FailedMount"),
    ):
        obj, cond = rc.eventually(lambda k=kind, n=name: stuck(cluster, k, n, ns), timeout=POD_START_TIMEOUT + 90,  # type: ignore[misc]
                                  what=f"{kind}/{name} saying its pod cannot start")
        assert kubelet_reason in cond["message"], cond
        assert "pod " in cond["message"] and "has not started" in cond["message"]
        events = rc.eventually(lambda k=kind, n=name: [e for e in warnings(cluster, k, n, ns)  # type: ignore[misc]
                                                       if e["reason"] == Reason.POD_START_TIMEOUT],
                               timeout=60, what=f"a Warning Event on {kind}/{name}")
        # From the resource's creation to the Warning, as the API recorded them (the test may look much later).
        after = min((seconds(e["metadata"]["creationTimestamp"]) - seconds(obj["metadata"]["creationTimestamp"])).total_seconds()
                    for e in events)
        print(f"{kind}/{name}: {cond['type']}={cond['status']}, its Warning {after:.0f}s after its creation: {cond['message']}")
        # Within the timeout of the pod (scheduled a moment after the resource) and the next reconcile.
        assert POD_START_TIMEOUT <= after <= POD_START_TIMEOUT + 30, (after, cond)
    ready = cluster.condition(constants.INFERENCE_SERVICE, unstartable.service, ns, "Ready")
    assert ready is not None and ready["status"] == "False"
