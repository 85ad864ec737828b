"""Prometheus series of the server, in a registry of its own (one per server instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ascend_mlops.api import contract

PREFIX = contract.METRIC_PREFIX
METRIC_AUTH = f"{PREFIX}_auth_requests"  # counter {outcome}; exists only with --auth-tokens
STAGES = ("read", "decode", "preprocess", "queue", "infer", "postprocess", "total")
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            contract.METRIC_REQUESTS, "HTTP requests by route, method and status code", ["route", "method", "code"], registry=r
        )
        self.request_seconds = Histogram(
            contract.METRIC_REQUEST_SECONDS, "HTTP request latency by route", ["route"],
            buckets=_SECONDS_BUCKETS, registry=r,
        )
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Time per image in each stage: read, decode, preprocess, queue, infer, postprocess, total",
            ["stage"], buckets=_SECONDS_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size", "Images per backend call (dynamic batching)", buckets=_BATCH_BUCKETS, registry=r
        )
        self.in_flight = Gauge(contract.METRIC_INFLIGHT, "Inference requests being handled", registry=r)
        self.auth = Counter(
            METRIC_AUTH, "Requests to token-protected routes by outcome: ok, missing (no token) or invalid (a wrong one)",
            ["outcome"], registry=r,
        )
        self.connections = Gauge(
            f"{PREFIX}_open_connections", "Client connections open on the serving port, counted from their accept", registry=r
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Images waiting for a batch", registry=r)
        self.model_ready = Gauge(f"{PREFIX}_model_ready", "1 when the model is loaded and serving", ["model"], registry=r)
        self.model_info = Gauge(
            f"{PREFIX}_model_info", "The served model (value 1); simulated=\"true\" means the pyACL simulator runs it",
            ["model", "backend", "platform", "simulated"], registry=r,
        )
        self.simulated = Gauge(
            f"{PREFIX}_simulated", "1 when the model runs on the pyACL SIMULATOR (CPU), not on an Ascend NPU", registry=r
        )

    def observe_stages(self, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage_seconds.labels(stage).observe(value)
