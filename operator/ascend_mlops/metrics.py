"""Prometheus metrics of the operator: reconciles, errors and durations per kind; resources per phase."""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

# A registry of our own: the default one carries process metrics of whoever
# imports us (tests, the sandbox) and would collide when started twice.
REGISTRY: Final = CollectorRegistry(auto_describe=True)

RECONCILES: Final = Counter(
    "ascend_mlops_reconciles_total",
    "Reconciliations of a custom resource, by kind and result (ok, error).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS: Final = Counter(
    "ascend_mlops_reconcile_errors_total",
    "Reconciliations that raised (API errors, bugs); they are retried with backoff.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_DURATION: Final = Histogram(
    "ascend_mlops_reconcile_duration_seconds",
    "Time spent in one reconciliation, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
RESOURCES: Final = Gauge(
    "ascend_mlops_resources",
    "Custom resources known to the operator, by kind and status.phase.",
    ["kind", "phase"],
    registry=REGISTRY,
)
CHILDREN_CREATED: Final = Counter(
    "ascend_mlops_children_created_total",
    "Pods, Services and Deployments created, by owner kind and child kind.",
    ["kind", "child"],
    registry=REGISTRY,
)


class PhaseTracker:
    """Keeps the per-phase gauge equal to the phases of the objects we have seen."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str, str], str] = {}

    def observe(self, kind: str, namespace: str, name: str, phase: str | None) -> None:
        key = (kind, namespace, name)
        old = self._phases.get(key)
        if old == phase:
            return
        if old is not None:
            RESOURCES.labels(kind=kind, phase=old).dec()
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
            RESOURCES.labels(kind=kind, phase=phase).inc()

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.observe(kind, namespace, name, None)

    def clear(self) -> None:
        for kind, namespace, name in list(self._phases):
            self.forget(kind, namespace, name)


def serve(port: int, address: str = "0.0.0.0") -> bool:
    """Expose /metrics on `port` (0: disabled). False when the port is taken (logged, not fatal)."""
    if not port:
        return False
    try:
        start_http_server(port, addr=address, registry=REGISTRY)
    except OSError as exc:
        logger.warning("metrics endpoint on port %d not started: %s", port, exc)
        return False
    return True
