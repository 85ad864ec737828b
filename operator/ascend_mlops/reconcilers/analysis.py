"""Canary analysis: read each ready server pod's Prometheus `/metrics` (on its `metrics` port) and turn two
readings into the figures a decision needs (requests, 5xx share, p99 latency).

A reading is small and JSON-shaped (it is kept in `status.canary.baseline`),
so that a restarted operator compares against the same starting point as the
one that took it: the analysis resumes from the cluster's state, not memory.
Counters that went down belong to a restarted server: its whole count is new.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ascend_mlops.api import constants, contract

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT: Final = 3.0
Reading = dict[str, Any]  # {"requests": n, "errors": n, "buckets": {"0.005": n, ..., "+Inf": n}}


@dataclass(frozen=True)
class Window:
    """What one revision's pods did between two readings."""

    requests: int
    errors: int
    p99_ms: float | None
    pods: int  # pods read

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "errors": self.errors, "errorRate": round(self.error_rate, 4), "pods": self.pods}
        if self.p99_ms is not None:
            out["latencyP99Ms"] = round(self.p99_ms, 1)
        return out

    def describe(self) -> str:
        p99 = f", p99 {self.p99_ms:.0f} ms" if self.p99_ms is not None else ""
        return f"{self.requests} requests, {self.error_rate:.1%} 5xx{p99}"


def parse(text: str) -> Reading:
    """The inference requests, their 5xx and their latency histogram from one exposition."""
    requests = errors = 0
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == contract.METRIC_REQUESTS:
            for sample in family.samples:
                labels = sample.labels
                if not sample.name.endswith("_total") or labels.get("route") not in contract.INFERENCE_ROUTES:
                    continue
                if labels.get("method") != "POST":
                    continue
                requests += int(sample.value)
                if labels.get("code", "").startswith("5"):
                    errors += int(sample.value)
        elif family.name == contract.METRIC_REQUEST_SECONDS:
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("route") in contract.INFERENCE_ROUTES:
                    le = sample.labels["le"]
                    buckets[le] = buckets.get(le, 0) + sample.value
    return {"requests": requests, "errors": errors, "buckets": {k: int(v) for k, v in buckets.items()}}


def pod_address(pod: Mapping[str, Any]) -> str | None:
    """`http://<podIP>:<port>` where the server container serves /metrics (the sandbox's kubelet remaps ports).

    That is its `metrics` port; pods made before the server got one serve /metrics on `http`.
    """
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        return None
    ports: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") in ("metrics", "http") and p.get("containerPort") is not None:
                ports.setdefault(str(p["name"]), int(p["containerPort"]))
    port = ports.get("metrics", ports.get("http"))
    if port is None:
        return None
    remapped = ((pod.get("metadata") or {}).get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_PORTS)
    if remapped:
        try:
            port = int(json.loads(remapped)[str(port)])
        except (ValueError, KeyError, TypeError):
            pass
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


async def read_pods(pods: Iterable[Mapping[str, Any]]) -> dict[str, Reading]:
    """A reading of every (ready) pod given that answers; pods that don't are left out (and logged)."""
    targets = [(p["metadata"]["name"], pod_address(p)) for p in pods]
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(name: str, address: str | None) -> tuple[str, Reading | None]:
            if address is None:
                return name, None
            try:
                async with session.get(address + contract.METRICS_PATH) as response:
                    if response.status != 200:
                        logger.info("metrics of pod %s: HTTP %d", name, response.status)
                        return name, None
                    return name, parse(await response.text())
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                logger.info("metrics of pod %s unreadable: %s", name, exc)
                return name, None

        results = await asyncio.gather(*(one(n, a) for n, a in targets))
    return {name: reading for name, reading in results if reading is not None}


def window(current: Mapping[str, Reading], baseline: Mapping[str, Reading]) -> Window:
    """The difference between two readings of a revision's pods, summed over pods."""
    requests = errors = 0
    buckets: dict[str, int] = {}
    for pod, now in current.items():
        before = baseline.get(pod)
        if before is None or now["requests"] < before.get("requests", 0):
            before = {"requests": 0, "errors": 0, "buckets": {}}
        requests += now["requests"] - before["requests"]
        errors += max(0, now["errors"] - before.get("errors", 0))
        for le, count in now["buckets"].items():
            buckets[le] = buckets.get(le, 0) + max(0, count - (before.get("buckets") or {}).get(le, 0))
    return Window(requests, errors, quantile(0.99, buckets), len(current))


def quantile(q: float, buckets: Mapping[str, int]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets, in milliseconds."""
    ordered = sorted(((math.inf if le == "+Inf" else float(le)), n) for le, n in buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound * 1000  # above the largest finite bucket: its bound, as Prometheus does
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside else 1.0
            return (lower_bound + (bound - lower_bound) * fraction) * 1000
        lower_bound, lower_count = bound, count
    return None
