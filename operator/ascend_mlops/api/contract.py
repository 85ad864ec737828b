"""The contract between the operator and the workloads that run in its pods.

The operator builds workload command lines with the helpers below, and the
workloads' argument parsers use the same flag constants, so neither side can
drift. Summaries travel back through the container termination message
(Kubernetes keeps at most 4 KiB of it) as one compact JSON object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Final

# ---------------------------------------------------------------------------
# Command line: `ascend-mlops <subcommand> ...`
# ---------------------------------------------------------------------------
ENTRYPOINT: Final = "ascend-mlops"

CMD_OPERATOR: Final = "operator"
CMD_TRAIN: Final = "train"
CMD_CONVERT: Final = "convert"
CMD_SERVE: Final = "serve"
CMD_SANDBOX: Final = "sandbox"
CMD_PREDICT: Final = "predict"

# train
FLAG_ALGORITHM: Final = "--algorithm"
FLAG_DATA: Final = "--data"
FLAG_OUTPUT: Final = "--output"
FLAG_TRAIN_RATIO: Final = "--train-ratio"
FLAG_SET: Final = "--set"  # NAME=VALUE, repeated (train: hyperparameters; convert: options)
FLAG_TERMINATION_LOG: Final = "--termination-log"
FLAG_SEED: Final = "--seed"
FLAG_WEIGHTS: Final = "--weights"  # optional warm start from a local weights file

# convert
FLAG_TEMPLATE: Final = "--template"
FLAG_INPUT: Final = "--input"
FLAG_PRINT_COMMAND: Final = "--print-command"

# serve
FLAG_MODEL: Final = "--model"
FLAG_BACKEND: Final = "--backend"
FLAG_LABELS: Final = "--labels"
FLAG_NAME: Final = "--name"
FLAG_HOST: Final = "--host"
FLAG_PORT: Final = "--port"
FLAG_MAX_BATCH_SIZE: Final = "--max-batch-size"
FLAG_MAX_BATCH_DELAY_MS: Final = "--max-batch-delay-ms"
FLAG_MAX_BODY_BYTES: Final = "--max-body-bytes"
# A file, or a directory of files (a mounted Secret: one file per key), whose
# non-empty lines are the bearer tokens the inference routes accept; re-read
# when it changes, so rotating the Secret needs no restart.
FLAG_AUTH_TOKENS: Final = "--auth-tokens"
# Serve /metrics on this port only (not on --port), so that a NetworkPolicy can
# admit Prometheus to it alone.
FLAG_METRICS_PORT: Final = "--metrics-port"

# predict (BatchPrediction pods; --model/--backend/--labels/--input/--output as above)
FLAG_SHARD: Final = "--shard"  # "i/N": this pod's deterministic share of the sorted inputs (0 <= i < N)
FLAG_BATCH_SIZE: Final = "--batch-size"
FLAG_TOP_K: Final = "--top-k"
FLAG_TASK_ID: Final = "--task-id"  # names the result files (infer-result-<id>...)

DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT: Final = 4096  # bytes Kubernetes keeps

# ---------------------------------------------------------------------------
# Environment shared by workloads.
# ---------------------------------------------------------------------------
ENV_SIMULATOR: Final = "ASCEND_MLOPS_SIMULATOR"  # "1" enables the Ascend simulators
ENV_TF_CONFIG: Final = "TF_CONFIG"
ENV_ASCEND_TOOLKIT_HOME: Final = "ASCEND_TOOLKIT_HOME"  # where CANN puts atc (bin/atc)
ENV_DEVICE_ID: Final = "ASCEND_DEVICE_ID"
# Local scratch space for object-storage downloads and staging (an emptyDir in pods).
ENV_SCRATCH: Final = "ASCEND_MLOPS_SCRATCH"
MOUNT_SCRATCH: Final = "/scratch"

# Object storage (s3://, obs://): the standard AWS environment, so the same
# commands work outside Kubernetes. The operator wires these from a Secret of
# the same key names (secretKeyRef); the two credential keys are required there.
ENV_AWS_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENV_AWS_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"
ENV_AWS_ENDPOINT_URL: Final = "AWS_ENDPOINT_URL"  # MinIO, Ceph RGW, OBS; unset: AWS (s3://) or OBS by region (obs://)
ENV_AWS_DEFAULT_REGION: Final = "AWS_DEFAULT_REGION"
ENV_S3_ADDRESSING_STYLE: Final = "S3_ADDRESSING_STYLE"  # path | virtual | auto
STORAGE_SECRET_REQUIRED_KEYS: Final = (ENV_AWS_ACCESS_KEY_ID, ENV_AWS_SECRET_ACCESS_KEY)
STORAGE_SECRET_OPTIONAL_KEYS: Final = (
    ENV_AWS_SESSION_TOKEN,
    ENV_AWS_ENDPOINT_URL,
    ENV_AWS_DEFAULT_REGION,
    ENV_S3_ADDRESSING_STYLE,
)


def simulator_enabled(env: Mapping[str, str] | None = None) -> bool:
    """True only when the user opted in to the Ascend simulator."""
    value = (env if env is not None else os.environ).get(ENV_SIMULATOR, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------------
# Exit codes. 0 is success. The codes below are PERMANENT: the input is wrong
# and running again cannot help, so the operator does not retry them. Every
# other non-zero code (1 for an unexpected crash, 128+N for a signal such as
# 137 for SIGKILL/OOM or 143 for SIGTERM) is RETRYABLE, up to the TrainingJob's backoffLimit.
# ---------------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2  # bad command line (argparse's own code)
EXIT_INVALID_DATASET: Final = 3  # missing/empty dataset, empty class, < 2 classes
EXIT_INVALID_PARAMETERS: Final = 4  # unknown/invalid hyperparameter or conversion option
EXIT_INVALID_MODEL: Final = 5  # input model unusable (bad graph, missing node, ATC rejected it)
EXIT_TOOLKIT_MISSING: Final = 6  # no CANN (atc/acl) and the simulator is off
# Object storage could not be reached (connection refused, DNS, timeouts, 5xx
# after retries): RETRYABLE, sysexits' EX_TEMPFAIL. Refusals (403, 404,
# NoSuchBucket) are permanent and use the code of the input they concern.
EXIT_STORAGE_UNAVAILABLE: Final = 75

PERMANENT_EXIT_CODES: Final = frozenset(
    {EXIT_USAGE, EXIT_INVALID_DATASET, EXIT_INVALID_PARAMETERS, EXIT_INVALID_MODEL, EXIT_TOOLKIT_MISSING}
)


def is_retryable_exit(code: int) -> bool:
    return code != EXIT_OK and code not in PERMANENT_EXIT_CODES


# ---------------------------------------------------------------------------
# Artifact layout under a TrainingJob's output root.
#   <output>/V001/frozen_graph/frozen_graph.pb
#   <output>/V001/saved_model/
#   <output>/V001/labels.txt
#   <output>/V001/metrics.json
#   <output>/V001/model/config.json       (ModelArts model-package shape)
#   <output>/V001/om/model/model.om       (written by the conversion)
#   <output>/V001/om/model/config.json
# ---------------------------------------------------------------------------
VERSION_PREFIX: Final = "V"
VERSION_DIGITS: Final = 3
FROZEN_GRAPH_DIR: Final = "frozen_graph"
FROZEN_GRAPH_FILE: Final = "frozen_graph.pb"
SAVED_MODEL_DIR: Final = "saved_model"
LABELS_FILE: Final = "labels.txt"
METRICS_FILE: Final = "metrics.json"
MODEL_PACKAGE_DIR: Final = "model"
MODEL_CONFIG_FILE: Final = "config.json"
OM_OUTPUT_SUBDIR: Final = "om/model"  # default conversion output, relative to a version dir
OM_FILE: Final = "model.om"

# Graph interface the trainer exports and the seed's ATC options expect.
INPUT_NODE: Final = "images"
OUTPUT_NODE: Final = "logits"


# BatchPrediction output (ModelArts' batch-service layout), under --output:
#   infer-result-<id>.manifest            one JSON line per input, assembled once every shard succeeded
#   infer-result-<id>/<image>_result.txt  the same JSON as the online POST /
#   infer-result-<id>/.shards/<i>-of-<N>.jsonl   a finished shard's manifest lines (internal)
# Manifest line: {"source": ..., "result": "SUCCESSFUL"|"FAILED", "inference-loc": ...} or
#                {"source": ..., "result": "FAILED", "error_message": ...}
BATCH_RESULT_PREFIX: Final = "infer-result-"
BATCH_MANIFEST_SUFFIX: Final = ".manifest"
BATCH_RESULT_SUFFIX: Final = "_result.txt"
BATCH_IMAGE_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".bmp")
BATCH_MAX_IMAGE_BYTES: Final = 12 * 1024 * 1024  # ModelArts' limit per image


def batch_manifest_name(task_id: str) -> str:
    return f"{BATCH_RESULT_PREFIX}{task_id}{BATCH_MANIFEST_SUFFIX}"


def batch_results_dir(task_id: str) -> str:
    return f"{BATCH_RESULT_PREFIX}{task_id}"


def version_name(number: int) -> str:
    return f"{VERSION_PREFIX}{number:0{VERSION_DIGITS}d}"


# Where the operator mounts storage inside workload containers.
MOUNT_DATASET: Final = "/mnt/dataset"
MOUNT_OUTPUT: Final = "/mnt/output"
MOUNT_SOURCE: Final = "/mnt/source"
MOUNT_MODEL: Final = "/mnt/model"
MOUNT_WEIGHTS: Final = "/mnt/weights"
MOUNT_AUTH_TOKENS: Final = "/var/run/secrets/ascend-mlops/auth"  # spec.auth.secretName, read-only

# Server
DEFAULT_SERVER_PORT: Final = 8080
DEFAULT_METRICS_PORT: Final = 9090  # the "metrics" container port of operator-made server pods
HEALTH_LIVE_PATH: Final = "/v2/health/live"
HEALTH_READY_PATH: Final = "/v2/health/ready"
METRICS_PATH: Final = "/metrics"
# The server's Prometheus series the operator's canary analysis reads (per pod).
METRIC_PREFIX: Final = "ascend_mlops_server"
METRIC_REQUESTS: Final = f"{METRIC_PREFIX}_requests"  # counter {route, method, code}
METRIC_REQUEST_SECONDS: Final = f"{METRIC_PREFIX}_request_duration_seconds"  # histogram {route}
# Gauge: inference requests being handled by this pod (the autoscaling "concurrency" metric).
METRIC_INFLIGHT: Final = f"{METRIC_PREFIX}_inflight_requests"
# aiohttp's canonical route names of the inference routes (POST); everything else is health, metadata or the page.
INFERENCE_ROUTES: Final = frozenset({"/", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"})

# ---------------------------------------------------------------------------
# Termination-message summaries. Keys are camelCase, like the status fields
# the operator copies them into.
#
# train:   {"outputVersion": "V001",
#           "artifacts": {"frozenGraph": "V001/frozen_graph", "savedModel": "V001/saved_model",
#                         "labels": "V001/labels.txt", "metrics": "V001/metrics.json",
#                         "modelPackage": "V001/model"},      # relative to the output root
#           "metrics": {"accuracy": 0.91, "loss": 0.3, "epochs": 12},
#           "dataset": {"classes": 5, "train": 1554, "validation": 387, "skipped": 0},
#           "error": "...", "exitCode": 3}                    # only on failure
# predict: {"total": 250, "succeeded": 248, "failed": 2, "skipped": 0,   # this shard's inputs
#           "imagesPerSecond": 41.3, "shard": "0/2",
#           "manifest": "infer-result-<id>.manifest"}   # only from the shard that assembled it
# convert: {"model": "model.om",                              # relative to --output
#           "atcCommand": "atc --model=... ...", "simulated": false,
#           "error": "...", "errorCodes": ["E10054"], "logTail": "..."}   # on failure
# ---------------------------------------------------------------------------
SUMMARY_VERSION: Final = "outputVersion"
SUMMARY_ARTIFACTS: Final = "artifacts"
SUMMARY_METRICS: Final = "metrics"
SUMMARY_ERROR: Final = "error"
SUMMARY_EXIT_CODE: Final = "exitCode"
SUMMARY_MODEL: Final = "model"
SUMMARY_ATC_COMMAND: Final = "atcCommand"
SUMMARY_SIMULATED: Final = "simulated"
SUMMARY_ERROR_CODES: Final = "errorCodes"
SUMMARY_LOG_TAIL: Final = "logTail"
# On an object-storage failure: {"code": "AccessDenied"|"NoSuchBucket"|"NoSuchKey"|
# "EndpointUnreachable"|..., "bucket": ..., "key": ..., "endpoint": ...}
SUMMARY_STORAGE_ERROR: Final = "storageError"

ARTIFACT_FROZEN_GRAPH: Final = "frozenGraph"
ARTIFACT_SAVED_MODEL: Final = "savedModel"
ARTIFACT_LABELS: Final = "labels"
ARTIFACT_METRICS: Final = "metrics"
ARTIFACT_MODEL_PACKAGE: Final = "modelPackage"


def encode_summary(summary: Mapping[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Compact JSON that fits the termination-message limit.

    Long string values (a log tail, an error) are shortened from the front,
    keeping their end, until the whole object fits.
    """
    data = dict(summary)
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    while len(text.encode()) > limit:
        longest = max(
            (k for k, v in data.items() if isinstance(v, str)),
            key=lambda k: len(data[k]),
            default=None,
        )
        if longest is None or len(data[longest]) <= 16:
            # Nothing left to shorten: drop everything but the essentials.
            keep = {k: data[k] for k in (SUMMARY_ERROR, SUMMARY_EXIT_CODE) if k in data}
            return json.dumps(keep, separators=(",", ":"))[:limit]
        excess = len(text.encode()) - limit
        value: str = data[longest]
        data[longest] = "…" + value[max(len(value) // 2, excess + 8) :]
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return text


def write_summary(path: str | None, summary: Mapping[str, Any]) -> None:
    """Write the summary to the termination-message path (best effort)."""
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(encode_summary(summary))
    except OSError:
        # /dev/termination-log is absent outside Kubernetes; never fail the job for it.
        pass


def decode_summary(message: str | None) -> dict[str, Any]:
    """Parse a termination message; anything that is not a JSON object gives {}."""
    if not message:
        return {}
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------
# Command builders used by the operator (and by users' docs).
# ---------------------------------------------------------------------------
def _set_args(values: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        args += [FLAG_SET, f"{key}={text}"]
    return args


def train_args(
    *,
    algorithm: str,
    data: str,
    output: str,
    train_ratio: float,
    hyperparameters: Mapping[str, Any],
    termination_log: str = DEFAULT_TERMINATION_LOG,
    weights: str | None = None,
    seed: int | None = None,
) -> list[str]:
    args = [
        CMD_TRAIN,
        FLAG_ALGORITHM, algorithm,
        FLAG_DATA, data,
        FLAG_OUTPUT, output,
        FLAG_TRAIN_RATIO, repr(float(train_ratio)),
    ]
    args += _set_args(hyperparameters)
    if weights:
        args += [FLAG_WEIGHTS, weights]
    if seed is not None:
        args += [FLAG_SEED, str(seed)]
    args += [FLAG_TERMINATION_LOG, termination_log]
    return args


def convert_args(
    *,
    template: str,
    input_path: str,
    output: str,
    options: Mapping[str, Any],
    termination_log: str = DEFAULT_TERMINATION_LOG,
) -> list[str]:
    args = [CMD_CONVERT, FLAG_TEMPLATE, template, FLAG_INPUT, input_path, FLAG_OUTPUT, output]
    args += _set_args(options)
    args += [FLAG_TERMINATION_LOG, termination_log]
    return args


def predict_args(
    *,
    model: str,
    backend: str,
    input_path: str,
    output: str,
    shard: int,
    shards: int,
    task_id: str,
    labels: str | None = None,
    batch_size: int | None = None,
    top_k: int | None = None,
    termination_log: str = DEFAULT_TERMINATION_LOG,
) -> list[str]:
    args = [
        CMD_PREDICT, FLAG_MODEL, model, FLAG_BACKEND, backend, FLAG_INPUT, input_path, FLAG_OUTPUT, output,
        FLAG_SHARD, f"{shard}/{shards}", FLAG_TASK_ID, task_id,
    ]
    if labels:
        args += [FLAG_LABELS, labels]
    if batch_size is not None:
        args += [FLAG_BATCH_SIZE, str(batch_size)]
    if top_k is not None:
        args += [FLAG_TOP_K, str(top_k)]
    args += [FLAG_TERMINATION_LOG, termination_log]
    return args


def serve_args(
    *,
    model: str,
    backend: str,
    name: str,
    labels: str | None = None,
    port: int = DEFAULT_SERVER_PORT,
    max_batch_size: int | None = None,
    max_batch_delay_ms: float | None = None,
    max_body_bytes: int | None = None,
    auth_tokens: str | None = None,
    metrics_port: int | None = None,
    termination_log: str = DEFAULT_TERMINATION_LOG,
) -> list[str]:
    args = [CMD_SERVE, FLAG_MODEL, model, FLAG_BACKEND, backend, FLAG_NAME, name]
    if labels:
        args += [FLAG_LABELS, labels]
    args += [FLAG_HOST, "0.0.0.0", FLAG_PORT, str(port)]
    if max_batch_size is not None:
        args += [FLAG_MAX_BATCH_SIZE, str(max_batch_size)]
    if max_batch_delay_ms is not None:
        args += [FLAG_MAX_BATCH_DELAY_MS, f"{max_batch_delay_ms:g}"]
    if max_body_bytes is not None:
        args += [FLAG_MAX_BODY_BYTES, str(max_body_bytes)]
    if auth_tokens:
        args += [FLAG_AUTH_TOKENS, auth_tokens]
    if metrics_port is not None:
        args += [FLAG_METRICS_PORT, str(metrics_port)]
    args += [FLAG_TERMINATION_LOG, termination_log]
    return args
