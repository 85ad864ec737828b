"""Canary analysis readings: the server's real exposition parsed, windows over restarts, p99 as Prometheus computes it."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import generate_latest

from ascend_mlops.api import constants
from ascend_mlops.reconcilers import analysis
from ascend_mlops.workloads.server.metrics import ServerMetrics


def exposition(ok: int, failed: int, seconds: float = 0.02, page_views: int = 0) -> str:
    m = ServerMetrics()
    for _ in range(ok):
        m.requests.labels("/v2/models/{name}/infer", "POST", "200").inc()
        m.request_seconds.labels("/v2/models/{name}/infer").observe(seconds)
    for _ in range(failed):
        m.requests.labels("/", "POST", "503").inc()
        m.request_seconds.labels("/").observe(seconds)
    for _ in range(page_views):  # the upload page and health checks are not inference requests
        m.requests.labels("/", "GET", "200").inc()
        m.requests.labels("/v2/health/ready", "GET", "500").inc()
    return generate_latest(m.registry).decode()


def test_only_inference_posts_count_and_5xx_are_errors() -> None:
    reading = analysis.parse(exposition(ok=90, failed=10, page_views=7))
    assert reading["requests"] == 100 and reading["errors"] == 10
    assert reading["buckets"]["+Inf"] == 100 and reading["buckets"]["0.01"] == 0 and reading["buckets"]["0.025"] == 100


def test_window_subtracts_the_baseline_and_counts_a_restarted_server_from_zero() -> None:
    before = {"a": analysis.parse(exposition(50, 0)), "b": analysis.parse(exposition(40, 0))}
    now = {"a": analysis.parse(exposition(80, 6)), "b": analysis.parse(exposition(5, 1)), "c": analysis.parse(exposition(10, 0))}
    w = analysis.window(now, before)  # a: +30 ok +6 errors; b restarted: 5+1; c is new: 10
    assert (w.requests, w.errors, w.pods) == (30 + 6 + 6 + 10, 6 + 1, 3)
    assert abs(w.error_rate - 7 / 52) < 1e-9


def test_p99_interpolates_within_the_bucket_like_histogram_quantile() -> None:
    buckets = {"0.01": 0, "0.025": 50, "0.05": 99, "0.1": 100, "+Inf": 100}
    assert analysis.quantile(0.99, buckets) == 50.0  # rank 99 falls at the top of (0.025, 0.05]
    assert abs(analysis.quantile(0.5, buckets) - 25.0) < 1e-9
    assert analysis.quantile(0.99, {"0.1": 0, "+Inf": 0}) is None
    assert analysis.quantile(0.99, {"0.1": 10, "+Inf": 100}) == 100.0  # beyond the last bucket: its bound


def test_pod_address_uses_the_http_port_or_the_sandbox_mapping() -> None:
    pod = {"status": {"podIP": "10.1.2.3"}, "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}}
    assert analysis.pod_address(pod) == "http://10.1.2.3:8080"
    pod["metadata"] = {"annotations": {constants.ANNOTATION_SANDBOX_PORTS: json.dumps({"8080": 41234})}}
    assert analysis.pod_address(pod) == "http://10.1.2.3:41234"
    assert analysis.pod_address({"status": {}, "spec": {}}) is None


def test_pod_address_prefers_the_metrics_port() -> None:
    """Operator-made server pods serve /metrics on a port of their own (`--metrics-port`)."""
    ports = [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]
    pod: dict[str, Any] = {"status": {"podIP": "10.1.2.3"}, "spec": {"containers": [{"ports": ports}]}}
    assert analysis.pod_address(pod) == "http://10.1.2.3:9090"
    pod["metadata"] = {"annotations": {constants.ANNOTATION_SANDBOX_PORTS: json.dumps({"8080": 41234, "9090": 41235})}}
    assert analysis.pod_address(pod) == "http://10.1.2.3:41235"
