"""The server's settings, parsed once from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ascend_mlops.api import contract

DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_BATCH_DELAY_MS = 5.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_QUEUE = 256
DEFAULT_SHUTDOWN_TIMEOUT = 25.0  # inside Kubernetes' default 30 s grace period, before SIGKILL
DEFAULT_NAME = "model"


@dataclass(frozen=True)
class ServerConfig:
    model: Path
    backend: str
    name: str = DEFAULT_NAME
    labels: Path | None = None
    host: str = "0.0.0.0"
    port: int = contract.DEFAULT_SERVER_PORT
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queue: int = DEFAULT_MAX_QUEUE
    device_id: int = 0
    termination_log: str | None = contract.DEFAULT_TERMINATION_LOG
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    preprocess_threads: int = 2
    # s3:// / obs:// sources of `model` and `labels`, downloaded into them at load.
    model_uri: str | None = None
    labels_uri: str | None = None
    # A token file or a mounted Secret's directory: the inference routes need one of its tokens.
    auth_tokens: Path | None = None
    # Serve /metrics on this port only (and not on `port`); None: /metrics on `port`.
    metrics_port: int | None = None

    def validate(self) -> None:
        """Raise ValueError naming the option and the fix."""
        checks = [
            (self.max_batch_size >= 1, f"{contract.FLAG_MAX_BATCH_SIZE} must be >= 1, got {self.max_batch_size}"),
            (self.max_batch_delay_ms >= 0, f"{contract.FLAG_MAX_BATCH_DELAY_MS} must be >= 0, got {self.max_batch_delay_ms}"),
            (self.max_body_bytes >= 1024, f"{contract.FLAG_MAX_BODY_BYTES} must be >= 1024, got {self.max_body_bytes}"),
            (self.max_queue >= 1, f"--max-queue must be >= 1, got {self.max_queue}"),
            (0 <= self.port <= 65535, f"{contract.FLAG_PORT} must be 0..65535, got {self.port}"),
            (
                self.metrics_port is None or 0 <= self.metrics_port <= 65535,
                f"{contract.FLAG_METRICS_PORT} must be 0..65535, got {self.metrics_port}",
            ),
            (
                self.metrics_port is None or self.metrics_port == 0 or self.metrics_port != self.port,
                f"{contract.FLAG_METRICS_PORT} must differ from {contract.FLAG_PORT} ({self.port}): "
                "leave it out to serve /metrics on the main port",
            ),
            (bool(self.name) and "/" not in self.name, f"{contract.FLAG_NAME} must be non-empty without '/', got {self.name!r}"),
            (self.preprocess_threads >= 1, f"--preprocess-threads must be >= 1, got {self.preprocess_threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
