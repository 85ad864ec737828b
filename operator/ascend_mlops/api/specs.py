"""Typed parsing of the resources' specs.

The CRD schemas (crds/, read through api/crds.py) are the one place where the
fields' defaults, bounds, enums, patterns and lengths are written: the API server
applies them at `kubectl apply`, and this module's reader takes them from the same
schema (tests/unit/test_schema_source.py checks that it enforces every one). What is
written here is what a schema cannot express (exactly one of two fields, supported
URI schemes, cross-field rules, defaults that depend on another field or on the
operator's settings), and the dataclasses the builders can trust. Every error names
the field, the bad value and the fix, e.g.::

    spec.dataset.uri: unsupported scheme 'http'; use pvc://<claim>/<path>, file:///<path>, s3://<bucket>/<prefix> or obs://<bucket>/<prefix>

All errors of a spec are collected, so a user fixes them in one round.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from ascend_mlops.api import catalog, crds
from ascend_mlops.api.constants import (
    BATCH_PREDICTION,
    INFERENCE_SERVICE,
    MODEL_CONVERSION,
    TRAINING_JOB,
)

T = TypeVar("T")

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class FieldError(ValueError):
    """One bad field: `<path>: <what is wrong>; <how to fix it>`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class SpecError(ValueError):
    """All the problems found in one spec."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


# ---------------------------------------------------------------------------
# Storage URIs
# ---------------------------------------------------------------------------
SCHEME_PVC: Final = "pvc"
SCHEME_FILE: Final = "file"
SCHEME_S3: Final = "s3"
SCHEME_OBS: Final = "obs"  # Huawei OBS, spoken through its S3-compatible API
OBJECT_SCHEMES: Final = (SCHEME_S3, SCHEME_OBS)
SUPPORTED_SCHEMES: Final = (SCHEME_PVC, SCHEME_FILE, *OBJECT_SCHEMES)
URI_HINT: Final = "use pvc://<claim>/<path>, file:///<path>, s3://<bucket>/<prefix> or obs://<bucket>/<prefix>"
# S3 bucket naming rules (3-63 characters, lowercase, digits, '.', '-'); OBS follows the same rules.
_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_DNS_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class StorageURI:
    """A parsed storage location.

    `pvc://<claim>/<path>`: `claim` is the PersistentVolumeClaim, `path` is relative
    to the claim's root ("" for the root). `file:///<path>`: `claim` is None and
    `path` is absolute on the node. `s3://<bucket>/<prefix>` and
    `obs://<bucket>/<prefix>`: `claim` is the bucket and `path` the key prefix
    without a leading slash ("" for the whole bucket).
    """

    scheme: str
    claim: str | None
    path: str

    def __str__(self) -> str:
        if self.scheme != SCHEME_FILE:
            return f"{self.scheme}://{self.claim}/{self.path}" if self.path else f"{self.scheme}://{self.claim}"
        return f"file://{self.path}"

    @property
    def is_object_storage(self) -> bool:
        """s3:// or obs://: spoken by the workloads themselves, never mounted."""
        return self.scheme in OBJECT_SCHEMES

    @property
    def bucket(self) -> str | None:
        return self.claim if self.is_object_storage else None

    def join(self, *parts: str) -> StorageURI:
        """A location below this one; parts are relative paths ("V001/frozen_graph")."""
        cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
        for part in cleaned:
            if ".." in part.split("/"):
                raise ValueError(f"refusing to join {part!r}: '..' would leave {self}")
        if self.scheme != SCHEME_FILE:
            path = posixpath.join(self.path, *cleaned) if self.path else posixpath.join(*cleaned) if cleaned else ""
        else:
            path = posixpath.join(self.path, *cleaned)
        return StorageURI(self.scheme, self.claim, path)

    def parent(self) -> StorageURI:
        if self.scheme != SCHEME_FILE:
            return StorageURI(self.scheme, self.claim, posixpath.dirname(self.path))
        return StorageURI(self.scheme, None, posixpath.dirname(self.path) or "/")

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


def parse_storage_uri(value: object, path: str) -> StorageURI:
    """Parse a `pvc://`, `file://`, `s3://` or `obs://` URI, or raise FieldError naming `path`."""
    if not isinstance(value, str) or not value.strip():
        raise FieldError(path, f"expected a storage URI, got {value!r}; {URI_HINT}")
    text = value.strip()
    match = _SCHEME_RE.match(text)
    if not match:
        raise FieldError(path, f"{text!r} is not a URI; {URI_HINT}")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in SUPPORTED_SCHEMES:
        raise FieldError(path, f"unsupported scheme {scheme!r}; {URI_HINT}")
    if scheme == SCHEME_FILE:
        if not rest.startswith("/"):
            raise FieldError(
                path, f"{text!r} names a host or a relative path; use file:///<absolute path> (three slashes)"
            )
        normalised = posixpath.normpath(rest)
        if ".." in rest.split("/"):
            raise FieldError(path, f"{text!r} contains '..'; use a normalised absolute path")
        return StorageURI(SCHEME_FILE, None, "/" + normalised.lstrip("/"))
    if scheme in OBJECT_SCHEMES:
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise FieldError(
                path,
                f"{bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.', '-'); "
                f"use {scheme}://<bucket>/<prefix>",
            )
        keys = [p for p in key.split("/") if p and p != "."]
        if ".." in keys:
            raise FieldError(path, f"{text!r} contains '..'; use a plain key prefix")
        return StorageURI(scheme, bucket, "/".join(keys))
    claim, _, sub = rest.partition("/")
    if not claim or not _DNS_SUBDOMAIN.match(claim) or len(claim) > 253:
        raise FieldError(
            path,
            f"{claim!r} is not a PersistentVolumeClaim name (lowercase letters, digits, '-', '.'); "
            "use pvc://<claim>/<path>",
        )
    parts = [p for p in sub.split("/") if p and p != "."]
    if ".." in parts:
        raise FieldError(path, f"{text!r} contains '..'; paths must stay inside the claim")
    return StorageURI(SCHEME_PVC, claim, "/".join(parts))


# ---------------------------------------------------------------------------
# Shared pieces of the three specs
# ---------------------------------------------------------------------------
_QUANTITY: Final = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_K8S_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TOLERATION_KEYS: Final = ("key", "operator", "value", "effect", "tolerationSeconds")
INPUT_FORMATS: Final = ("NHWC", "NCHW", "ND", "NCDHW", "NDHWC")
OUTPUT_TYPES: Final = ("FP32", "FP16", "UINT8")
PREFERRED_DATA_FORMATS: Final = ("5D", "4D")
PRECISION_MODES: Final = (
    "force_fp16",
    "allow_fp32_to_fp16",
    "must_keep_origin_dtype",
    "allow_mix_precision",
    "force_fp32",
)

# The seed's serving flavour (ascend-reference.md §1: ARM CPU 3 cores 6 GiB + 1 x Ascend 310).
DEFAULT_SERVER_RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "3", "memory": "6Gi"},
    "limits": {"cpu": "3", "memory": "6Gi"},
}



@dataclass(frozen=True)
class PodOptions:
    """Pod-level settings every kind accepts."""

    image: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class StorageOptions:
    """`spec.storage`: how the pods reach object storage (s3://, obs://). None: the operator's default."""

    secret_name: str | None = None  # a Secret in the resource's namespace with the AWS_* keys
    scratch_size: str | None = None  # sizeLimit of the pod's scratch emptyDir, e.g. "20Gi"


def is_quantity(text: str) -> bool:
    """A Kubernetes resource quantity such as '500m', '6Gi' or '3'."""
    return bool(_QUANTITY.match(text))


def is_object_name(text: str) -> bool:
    """A DNS-subdomain object name (Secrets, ConfigMaps, PVCs): lowercase, digits, '-', '.', <= 253."""
    return len(text) <= 253 and bool(_K8S_NAME.match(text))


# The specs as parsed: defaults are the CRD schema's, applied by the parser (no second copy here).
@dataclass(frozen=True, kw_only=True)
class TrainingJobSpec:
    algorithm: str
    hyperparameters: Mapping[str, int | float | str]
    dataset: StorageURI
    train_ratio: float
    output: StorageURI
    workers: int
    weights: StorageURI | None = None
    seed: int | None = None
    backoff_limit: int
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    clean_pod_policy: str
    pod: PodOptions = field(default_factory=PodOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)


@dataclass(frozen=True, kw_only=True)
class ModelConversionSpec:
    training_job_ref: str | None
    source: StorageURI | None
    template: str
    soc_version: str
    options: Mapping[str, Any]
    output: StorageURI | None
    backoff_limit: int
    active_deadline_seconds: int | None = None
    pod: PodOptions = field(default_factory=PodOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)


@dataclass(frozen=True)
class Accelerator:
    resource: str
    count: int


EXPOSURE_INGRESS: Final = "Ingress"
EXPOSURE_HTTPROUTE: Final = "HTTPRoute"
METRIC_CONCURRENCY: Final = "concurrency"
METRIC_CPU: Final = "cpu"
# Per metric: the default target (in-flight requests per pod; percent of the CPU request).
DEFAULT_TARGETS: Final[dict[str, float]] = {METRIC_CONCURRENCY: 4.0, METRIC_CPU: 80.0}
# A host name: DNS labels of at most 63 characters, lowercase (what Ingress and HTTPRoute accept, no wildcard).
_HOST: Final = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")


def is_host_name(text: str) -> bool:
    """A DNS host name such as 'flowers.example.com' (labels of 1-63 characters, lowercase)."""
    return bool(_HOST.match(text))


@dataclass(frozen=True)
class Exposure:
    """`spec.exposure`: an address outside the cluster, through an Ingress or an HTTPRoute on the operator's Gateway."""

    type: str  # EXPOSURE_INGRESS | EXPOSURE_HTTPROUTE
    host: str | None = None  # None: <name>.<namespace>.<the operator's domain>
    ingress_class_name: str | None = None  # None: the operator's setting ("" there: the cluster's default class)
    tls_secret_name: str | None = None  # Ingress only: TLS terminated with this Secret, status.url https://


@dataclass(frozen=True)
class Auth:
    """`spec.auth`: the server accepts only the tokens in this Secret (mounted, never read by the operator)."""

    secret_name: str


@dataclass(frozen=True)
class Autoscaling:
    """`spec.autoscaling`: an HPA (or a KEDA ScaledObject) moves the stable revision between min and max replicas."""

    max_replicas: int
    min_replicas: int = field(default_factory=lambda: crds.default(INFERENCE_SERVICE, "spec.autoscaling.minReplicas"))
    metric: str = field(default_factory=lambda: crds.default(INFERENCE_SERVICE, "spec.autoscaling.metric"))
    target: float = DEFAULT_TARGETS[METRIC_CONCURRENCY]


@dataclass(frozen=True)
class InferenceServiceSpec:
    conversion_ref: str | None
    model: StorageURI | None
    labels: StorageURI | None
    model_name: str | None
    runtime: str
    replicas: int  # with autoscaling: minReplicas (what a new Deployment starts with)
    # None: the runtime's default (acl: one device of the configured resource; tensorflow: none).
    accelerator: Accelerator | None
    accelerator_explicit: bool
    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    max_body_bytes: int | None = None
    pod: PodOptions = field(default_factory=PodOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)
    canary: CanarySpec | None = None
    exposure: Exposure | None = None
    auth: Auth | None = None
    autoscaling: Autoscaling | None = None


@dataclass(frozen=True)
class CanaryAnalysis:
    """Walk `steps` (percent of traffic), checking the canary's metrics every `interval_seconds`."""

    interval_seconds: int
    steps: tuple[int, ...]
    max_error_rate: float  # share of the canary's inference requests answered 5xx
    max_latency_p99_ms: float | None
    min_requests: int  # fewer canary requests in an interval: no verdict yet, the interval grows


# With analysis and no steps (the schema has no default for a list the user would have to repeat).
DEFAULT_STEPS: Final = (10, 50, 100)


@dataclass(frozen=True)
class CanarySpec:
    """A second model revision that gets `traffic_percent` of the requests (or walks `analysis.steps`)."""

    conversion_ref: str | None
    model: StorageURI | None
    labels: StorageURI | None
    traffic_percent: int
    replicas: int = 1
    progress_deadline_seconds: int = 600  # a canary not ready by then is rolled back
    analysis: CanaryAnalysis | None = None


@dataclass(frozen=True, kw_only=True)
class BatchPredictionSpec:
    """A model over every image of `input` (a folder, or a .manifest of JSON lines), results into `output`."""

    conversion_ref: str | None
    model: StorageURI | None
    labels: StorageURI | None
    runtime: str
    accelerator: Accelerator | None  # per pod
    input: StorageURI
    output: StorageURI
    parallelism: int
    batch_size: int | None = None
    top_k: int | None = None
    backoff_limit: int
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    pod: PodOptions = field(default_factory=PodOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)


# ---------------------------------------------------------------------------
# A small reader that collects errors instead of stopping at the first one
# ---------------------------------------------------------------------------
_MISSING: Final = object()


class _Reader:
    """Reads one kind's spec: types, defaults, bounds and enums from its CRD schema (crds.node)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.errors: list[FieldError] = []

    def _schema(self, where: str) -> Mapping[str, Any]:
        return crds.node(self.kind, where)

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def mapping(self, data: Mapping[str, Any], key: str, path: str, required: bool = False) -> Mapping[str, Any]:
        value = data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", f"expected an object, got {type(value).__name__}")
            return {}
        return value

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        default: str | None = None,
        choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str | None:
        where = f"{path}.{key}"
        schema = self._schema(where)
        default = schema.get("default") if default is None else default
        choices = schema.get("enum") if choices is None else choices
        if pattern is None and schema.get("pattern"):
            pattern = _compiled(schema["pattern"])
        longest: int | None = schema.get("maxLength")
        value = data.get(key, _MISSING)
        if value is _MISSING or value is None or value == "":
            if required:
                self.fail(where, f"is required{'; ' + hint if hint else ''}")
            return default
        if not isinstance(value, str):
            self.fail(where, f"expected a string, got {value!r}")
            return default
        if choices is not None and value not in choices:
            self.fail(where, f"unknown value {value!r}; use one of: {', '.join(choices)}")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(where, f"{value!r} is not valid{'; ' + hint if hint else ''}")
            return default
        if longest is not None and len(value) > longest:
            self.fail(where, f"{value!r} is longer than {longest} characters")
            return default
        return value

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        where = f"{path}.{key}"
        schema = self._schema(where)
        default = schema.get("default") if default is None else default
        if minimum is None and schema.get("minimum") is not None:
            minimum = schema["minimum"] + (1 if schema.get("exclusiveMinimum") else 0)
        if maximum is None and schema.get("maximum") is not None:
            maximum = schema["maximum"] - (1 if schema.get("exclusiveMaximum") else 0)
        choices: Sequence[int] | None = schema.get("enum")
        value = data.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {value!r}")
            return default
        if choices is not None and value not in choices:
            self.fail(where, f"{value} is not one of: {', '.join(str(c) for c in choices)}")
            return default
        if minimum is not None and value < minimum:
            self.fail(where, f"{value} is below the minimum {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.fail(where, f"{value} is above the maximum {maximum}")
            return default
        return value

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: float | None = None,
        exclusive_min: float | None = None,
        exclusive_max: float | None = None,
        minimum: float | None = None,
        maximum_hint: str = "",
    ) -> float | None:
        where = f"{path}.{key}"
        schema = self._schema(where)
        default = schema.get("default") if default is None else default
        if schema.get("exclusiveMinimum"):
            exclusive_min = schema.get("minimum") if exclusive_min is None else exclusive_min
        elif minimum is None:
            minimum = schema.get("minimum")
        maximum: float | None = None
        if schema.get("exclusiveMaximum"):
            exclusive_max = schema.get("maximum") if exclusive_max is None else exclusive_max
        else:
            maximum = schema.get("maximum")
        value = data.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"expected a number, got {value!r}")
            return default
        number = float(value)
        if exclusive_min is not None and number <= exclusive_min:
            self.fail(where, f"{value} must be greater than {exclusive_min:g}")
            return default
        if exclusive_max is not None and number >= exclusive_max:
            self.fail(where, f"{value} must be less than {exclusive_max:g}")
            return default
        if minimum is not None and number < minimum:
            self.fail(where, f"{value} is below the minimum {minimum:g}")
            return default
        if maximum is not None and number > maximum:
            self.fail(where, f"{value:g} {maximum_hint}" if maximum_hint else f"{value} is above the maximum {maximum:g}")
            return default
        return number

    def uri(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> StorageURI | None:
        value = data.get(key, _MISSING)
        if value is _MISSING or value is None or value == "":
            if required:
                self.fail(f"{path}.{key}", f"is required; {URI_HINT}")
            return None
        try:
            return parse_storage_uri(value, f"{path}.{key}")
        except FieldError as exc:
            self.errors.append(exc)
            return None

    def reference(self, data: Mapping[str, Any], key: str, path: str) -> str | None:
        value = data.get(key, _MISSING)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", f"expected an object such as {{name: my-job}}, got {value!r}")
            return None
        return self.string(
            value,
            "name",
            f"{path}.{key}",
            required=True,
            hint="use the metadata.name of an object in the same namespace",
        )

    def string_map(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = self.mapping(data, key, path)
        result: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.fail(f"{path}.{key}.{k}", f"expected a string, got {v!r}")
            else:
                result[str(k)] = v
        return result

    def pod_options(self, spec: Mapping[str, Any], path: str = "spec") -> PodOptions:
        image = self.string(spec, "image", path)
        env: list[tuple[str, str]] = []
        raw_env = spec.get("env") or []
        if not isinstance(raw_env, list):
            self.fail(f"{path}.env", "expected a list of {name, value}")
            raw_env = []
        for index, item in enumerate(raw_env):
            where = f"{path}.env[{index}]"
            if not isinstance(item, Mapping):
                self.fail(where, "expected {name, value}")
                continue
            name = self.string(item, "name", where, required=True, hint="a C identifier")
            value = item.get("value", "")
            if not isinstance(value, str):
                self.fail(f"{where}.value", f"expected a string, got {value!r}; quote numbers in YAML")
                continue
            if value and self.string(item, "value", where) is None:
                continue  # too long
            if name:
                env.append((name, value))
        resources: dict[str, dict[str, str]] = {}
        raw_resources = self.mapping(spec, "resources", path)
        for section in ("requests", "limits"):
            items = self.mapping(raw_resources, section, f"{path}.resources")
            for res_name, quantity in items.items():
                where = f"{path}.resources.{section}.{res_name}"
                text = str(quantity) if isinstance(quantity, int | float) and not isinstance(quantity, bool) else quantity
                if not isinstance(text, str) or not _QUANTITY.match(text):
                    self.fail(where, f"{quantity!r} is not a quantity such as '3', '500m' or '6Gi'")
                    continue
                resources.setdefault(section, {})[str(res_name)] = text
        for extra in set(raw_resources) - {"requests", "limits"}:
            self.fail(f"{path}.resources.{extra}", "unknown field; use requests and limits")
        node_selector = self.string_map(spec, "nodeSelector", path)
        tolerations: list[Mapping[str, Any]] = []
        raw_tolerations = spec.get("tolerations") or []
        if not isinstance(raw_tolerations, list):
            self.fail(f"{path}.tolerations", "expected a list of tolerations")
            raw_tolerations = []
        for index, item in enumerate(raw_tolerations):
            where = f"{path}.tolerations[{index}]"
            if not isinstance(item, Mapping):
                self.fail(where, "expected a toleration {key, operator, value, effect}")
                continue
            unknown = set(item) - set(TOLERATION_KEYS)
            if unknown:
                self.fail(where, f"unknown field(s) {', '.join(sorted(unknown))}; use {', '.join(TOLERATION_KEYS)}")
                continue
            for key in ("key", "operator", "value", "effect"):
                self.string(item, key, where)
            tolerations.append(dict(item))
        return PodOptions(
            image=image,
            env=tuple(env),
            resources=resources,
            node_selector=node_selector,
            tolerations=tuple(tolerations),
        )

    def storage_options(self, spec: Mapping[str, Any], path: str = "spec") -> StorageOptions:
        raw = self.mapping(spec, "storage", path)
        where = f"{path}.storage"
        for extra in sorted(set(raw) - {"secretName", "scratchSize"}):
            self.fail(f"{where}.{extra}", "unknown field; use secretName and scratchSize")
        secret = self.string(
            raw,
            "secretName",
            where,
            hint="use the metadata.name of a Secret in this namespace (lowercase letters, digits, '-', '.')",
        )
        scratch: str | None = None
        value = raw.get("scratchSize")
        if value is not None and value != "":
            text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if not isinstance(text, str) or not is_quantity(text) or text.startswith("-"):
                self.fail(f"{where}.scratchSize", f"{value!r} is not a size such as '20Gi' or '500Mi'")
            else:
                scratch = text
        return StorageOptions(secret_name=secret, scratch_size=scratch)

    def integer_list_bounds(self, where: str) -> tuple[int, int, int, int]:
        """(minItems, maxItems, items' minimum, items' maximum) of a list of integers in the schema."""
        schema = self._schema(where)
        items = schema["items"]
        return schema["minItems"], schema["maxItems"], items["minimum"], items["maximum"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self.errors)


def _integer_list(value: object, fewest: int, most: int, low: int, high: int) -> bool:
    return (
        isinstance(value, list)
        and fewest <= len(value) <= most
        and all(isinstance(x, int) and not isinstance(x, bool) and low <= x <= high for x in value)
    )


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _job_fields(r: _Reader, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What every run-to-completion kind has: retries, deadline, TTL (where its schema has one), pod and storage."""
    fields: dict[str, Any] = {
        "backoff_limit": _given(r.integer(spec, "backoffLimit", "spec")),
        "active_deadline_seconds": r.integer(spec, "activeDeadlineSeconds", "spec"),
    }
    if crds.node(r.kind, "spec.ttlSecondsAfterFinished"):
        fields["ttl_seconds_after_finished"] = r.integer(spec, "ttlSecondsAfterFinished", "spec")
    return {**fields, "pod": r.pod_options(spec), "storage": r.storage_options(spec)}


def _given(value: T | None) -> T:
    """A field with a schema default, read after raise_if_errors: never None."""
    assert value is not None
    return value


def _spec(body_spec: object) -> Mapping[str, Any]:
    if not isinstance(body_spec, Mapping):
        raise SpecError([FieldError("spec", "is required")])
    return body_spec


# ---------------------------------------------------------------------------
# TrainingJob
# ---------------------------------------------------------------------------
def parse_training_job(raw: object) -> TrainingJobSpec:
    spec = _spec(raw)
    r = _Reader(TRAINING_JOB)
    algorithm = r.mapping(spec, "algorithm", "spec", required=True)
    name = r.string(
        algorithm,
        "name",
        "spec.algorithm",
        required=True,
        hint=f"use one of: {', '.join(crds.enum(TRAINING_JOB, 'spec.algorithm.name'))}",
    )
    hyperparameters: dict[str, int | float | str] = {}
    raw_hp = r.mapping(algorithm, "hyperparameters", "spec.algorithm")
    for key, value in raw_hp.items():
        where = f"spec.algorithm.hyperparameters.{key}"
        if key in catalog.HYPERPARAMETER_CHOICES:  # a name, such as the recipe
            choices = catalog.HYPERPARAMETER_CHOICES[key]
            if value not in choices:
                r.fail(where, f"{value!r} is not one of: {', '.join(choices)}")
            else:
                hyperparameters[key] = value
            continue
        schema = crds.node(TRAINING_JOB, where)
        if not schema:
            r.fail(where, f"unknown hyperparameter; use one of: {', '.join(catalog.HYPERPARAMETERS)}")
            continue
        whole, low, high, open_low = schema["type"] == "integer", schema["minimum"], schema["maximum"], schema.get("exclusiveMinimum")
        if isinstance(value, bool) or not isinstance(value, int | float):
            r.fail(where, f"expected a number, got {value!r}")
            continue
        if whole and not isinstance(value, int):
            r.fail(where, f"expected an integer, got {value!r}")
            continue
        if value < low or (open_low and value == low) or value > high:
            r.fail(where, f"{value} is outside {'(' if open_low else '['}{low:g}, {high:g}]")
            continue
        hyperparameters[key] = value if whole else float(value)
    weights = r.uri(algorithm, "weights", "spec.algorithm")
    dataset = r.mapping(spec, "dataset", "spec", required=True)
    dataset_uri = r.uri(dataset, "uri", "spec.dataset", required=True)
    train_ratio = r.number(dataset, "trainRatio", "spec.dataset")
    output = r.mapping(spec, "output", "spec", required=True)
    output_uri = r.uri(output, "uri", "spec.output", required=True)
    workers = r.integer(spec, "workers", "spec")
    seed = r.integer(spec, "seed", "spec")
    clean = r.string(spec, "cleanPodPolicy", "spec")
    job = _job_fields(r, spec)
    if dataset_uri is not None and output_uri is not None and dataset_uri == output_uri:
        r.fail("spec.output.uri", "is the same location as spec.dataset.uri; write outputs to their own directory")
    r.raise_if_errors()
    assert name is not None and dataset_uri is not None and output_uri is not None
    return TrainingJobSpec(
        algorithm=name,
        hyperparameters=hyperparameters,
        dataset=dataset_uri,
        train_ratio=_given(train_ratio),
        output=output_uri,
        workers=_given(workers),
        weights=weights,
        seed=seed,
        clean_pod_policy=_given(clean),
        **job,
    )


# ---------------------------------------------------------------------------
# ModelConversion
# ---------------------------------------------------------------------------
def _conversion_options(r: _Reader, raw: Mapping[str, Any]) -> dict[str, Any]:
    path = "spec.options"
    options: dict[str, Any] = {}
    for key in raw:
        if key not in catalog.CONVERSION_OPTIONS:
            r.fail(f"{path}.{key}", f"unknown option; use one of: {', '.join(catalog.CONVERSION_OPTIONS)}")
    shape = r.string(raw, "inputShape", path, hint="use NAME:D1,D2,... such as 'images:1,224,224,3'")
    fields: list[tuple[str, Any]] = [
        ("inputShape", shape),
        *((key, r.string(raw, key, path)) for key in ("inputFormat", "outNodes", "outputType", "preferredDataFormat")),
        ("highPrecision", r.integer(raw, "highPrecision", path)),
        *((key, r.string(raw, key, path)) for key in ("precisionMode", "log")),
    ]
    l2 = raw.get("l2Optimize")
    if l2 is not None and not isinstance(l2, bool):
        r.fail(f"{path}.l2Optimize", f"expected true or false, got {l2!r}")
    else:
        fields.append(("l2Optimize", l2))
    sizes = raw.get("dynamicBatchSizes")
    if sizes is not None:
        bounds = r.integer_list_bounds(f"{path}.dynamicBatchSizes")
        if not _integer_list(sizes, *bounds):
            fewest, most, low, high = bounds
            r.fail(
                f"{path}.dynamicBatchSizes",
                f"{sizes!r} must be {fewest} to {most} integers in [{low}, {high}], e.g. [1, 2, 4, 8]",
            )
        else:
            fields.append(("dynamicBatchSizes", list(sizes)))
            if shape and not any(dims.split(":", 1)[1].split(",")[0] == "-1" for dims in shape.split(";")):
                r.fail(
                    f"{path}.inputShape",
                    f"{shape!r} has a fixed batch size but dynamicBatchSizes is set; use -1 as the batch "
                    "dimension, e.g. 'images:-1,224,224,3'",
                )
    for key, value in fields:
        if value is not None:
            options[key] = value
    return options


def parse_model_conversion(raw: object) -> ModelConversionSpec:
    spec = _spec(raw)
    r = _Reader(MODEL_CONVERSION)
    source = r.mapping(spec, "source", "spec", required=True)
    ref = r.reference(source, "trainingJobRef", "spec.source")
    source_uri = r.uri(source, "uri", "spec.source")
    if isinstance(spec.get("source"), Mapping) and ("trainingJobRef" in source) == ("uri" in source):
        r.fail(
            "spec.source",
            "set exactly one of trainingJobRef (a TrainingJob in this namespace) or uri (a frozen graph)",
        )
    template = r.string(spec, "template", "spec")
    soc = r.string(spec, "socVersion", "spec")
    options = _conversion_options(r, r.mapping(spec, "options", "spec"))
    output = r.mapping(spec, "output", "spec")
    output_uri = r.uri(output, "uri", "spec.output")
    job = _job_fields(r, spec)
    r.raise_if_errors()
    return ModelConversionSpec(
        training_job_ref=ref,
        source=source_uri,
        template=_given(template),
        soc_version=_given(soc),
        options=options,
        output=output_uri,
        **job,
    )


# ---------------------------------------------------------------------------
# InferenceService
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _ModelSection:
    conversion_ref: str | None
    model: StorageURI | None
    labels: StorageURI | None
    model_name: str | None
    runtime: str
    accelerator: Accelerator | None
    accelerator_explicit: bool


def _model_fields(
    r: _Reader, model: Mapping[str, Any], path: str, *, present: bool = True
) -> tuple[str | None, StorageURI | None, StorageURI | None]:
    """(conversionRef name, uri, labels) of a model: spec.model, or spec.canary, which has the same fields."""
    ref = r.reference(model, "conversionRef", path)
    model_uri = r.uri(model, "uri", path)
    if present and ("conversionRef" in model) == ("uri" in model):
        r.fail(path, "set exactly one of conversionRef (a ModelConversion in this namespace) or uri (a model location)")
    return ref, model_uri, r.uri(model, "labels", path)


def _check_runtime_model(r: _Reader, model_uri: StorageURI | None, runtime: str, path: str) -> None:
    if model_uri is not None and runtime == "acl" and model_uri.name.endswith(".pb"):
        r.fail(f"{path}.uri", f"{model_uri} is a TensorFlow graph; convert it with a ModelConversion or use runtime: tensorflow")


def _model_section(r: _Reader, spec: Mapping[str, Any], default_accelerator_resource: str) -> _ModelSection:
    """`spec.model`, `spec.runtime` and `spec.accelerator`: the same for InferenceService and BatchPrediction."""
    model = r.mapping(spec, "model", "spec", required=True)
    ref, model_uri, labels = _model_fields(r, model, "spec.model", present=isinstance(spec.get("model"), Mapping))
    model_name = r.string(
        model, "name", "spec.model", hint="letters, digits, '_', '.', '-', at most 63"
    )
    runtime = _given(r.string(spec, "runtime", "spec"))
    raw_acc = spec.get("accelerator")
    explicit = raw_acc is not None
    accelerator: Accelerator | None = None
    if explicit:
        acc = r.mapping(spec, "accelerator", "spec")
        resource = r.string(acc, "resource", "spec.accelerator", default=default_accelerator_resource)
        if resource is not None and "/" not in resource:
            r.fail("spec.accelerator.resource", f"{resource!r} is not an extended resource such as 'huawei.com/Ascend310'")
        # No schema default: an accelerator section without count means one device, none means the runtime's.
        count = r.integer(acc, "count", "spec.accelerator", default=1)
        if resource and count:
            accelerator = Accelerator(resource, count)
    elif runtime == "acl":
        accelerator = Accelerator(default_accelerator_resource, 1)
    if runtime == "acl" and accelerator is None:
        r.fail(
            "spec.accelerator.count",
            "the acl runtime needs an Ascend device; set count >= 1 or use runtime: tensorflow for CPU",
        )
    _check_runtime_model(r, model_uri, runtime, "spec.model")
    return _ModelSection(ref, model_uri, labels, model_name, runtime, accelerator, explicit)


def parse_inference_service(raw: object, default_accelerator_resource: str) -> InferenceServiceSpec:
    spec = _spec(raw)
    r = _Reader(INFERENCE_SERVICE)
    section = _model_section(r, spec, default_accelerator_resource)
    # No schema default: spec.replicas and spec.autoscaling exclude each other, and a default would always set it.
    replicas = r.integer(spec, "replicas", "spec", default=1)
    autoscaling = _autoscaling(r, spec)
    if spec.get("autoscaling") is not None and spec.get("replicas") is not None:
        r.fail(
            "spec.replicas",
            "and spec.autoscaling exclude each other (the autoscaler sets the replica count); remove spec.replicas "
            "and bound the count with autoscaling.minReplicas and maxReplicas",
        )
    if autoscaling is not None:
        replicas = autoscaling.min_replicas
    exposure = _exposure(r, spec)
    auth = _auth(r, spec)
    batching = r.mapping(spec, "batching", "spec")
    max_batch = r.integer(batching, "maxBatchSize", "spec.batching")
    max_delay = r.number(batching, "maxDelayMs", "spec.batching")
    max_body = r.integer(spec, "maxBodyBytes", "spec")
    pod = r.pod_options(spec)
    storage = r.storage_options(spec)
    canary = _canary(r, spec, section)
    r.raise_if_errors()
    return InferenceServiceSpec(
        conversion_ref=section.conversion_ref,
        model=section.model,
        labels=section.labels,
        model_name=section.model_name,
        runtime=section.runtime,
        replicas=replicas or 1,
        accelerator=section.accelerator,
        accelerator_explicit=section.accelerator_explicit,
        max_batch_size=max_batch,
        max_batch_delay_ms=max_delay,
        max_body_bytes=max_body,
        pod=pod,
        storage=storage,
        canary=canary,
        exposure=exposure,
        auth=auth,
        autoscaling=autoscaling,
    )


def _known_fields(r: _Reader, raw: Mapping[str, Any], path: str, known: Sequence[str]) -> None:
    for extra in sorted(set(raw) - set(known)):
        r.fail(f"{path}.{extra}", f"unknown field; use {', '.join(known)}")


def _exposure(r: _Reader, spec: Mapping[str, Any]) -> Exposure | None:
    """`spec.exposure`: Ingress (class, host, TLS) or HTTPRoute (host) in front of the client Service."""
    if spec.get("exposure") is None:
        return None
    path = "spec.exposure"
    raw = r.mapping(spec, "exposure", "spec")
    if not isinstance(spec.get("exposure"), Mapping):
        return None
    _known_fields(r, raw, path, ("type", "host", "ingressClassName", "tlsSecretName"))
    kind = r.string(
        raw, "type", path, required=True,
        hint="Ingress (networking.k8s.io/v1) or HTTPRoute (on the operator's Gateway)",
    )
    host = r.string(
        raw, "host", path,
        hint="a DNS name such as flowers.example.com (lowercase, no wildcard); leave it out for <name>.<namespace>.<domain>",
    )
    class_name = r.string(
        raw, "ingressClassName", path, hint="the metadata.name of an IngressClass, e.g. nginx",
    )
    tls = r.string(
        raw, "tlsSecretName", path,
        hint="the metadata.name of a kubernetes.io/tls Secret in this namespace",
    )
    if kind == EXPOSURE_HTTPROUTE:
        for key, value in (("ingressClassName", class_name), ("tlsSecretName", tls)):
            if value is not None:
                r.fail(
                    f"{path}.{key}",
                    "applies to type Ingress only; remove it (an HTTPRoute attaches to the operator's Gateway, "
                    "whose listeners terminate TLS)",
                )
    if kind is None:
        return None
    return Exposure(kind, host, class_name, tls)


def _auth(r: _Reader, spec: Mapping[str, Any]) -> Auth | None:
    if spec.get("auth") is None:
        return None
    raw = r.mapping(spec, "auth", "spec")
    if not isinstance(spec.get("auth"), Mapping):
        return None
    _known_fields(r, raw, "spec.auth", ("secretName",))
    name = r.string(
        raw, "secretName", "spec.auth", required=True,
        hint="the metadata.name of a Secret in this namespace whose keys each hold one or more tokens, one per line",
    )
    return Auth(name) if name else None


def _autoscaling(r: _Reader, spec: Mapping[str, Any]) -> Autoscaling | None:
    if spec.get("autoscaling") is None:
        return None
    path = "spec.autoscaling"
    raw = r.mapping(spec, "autoscaling", "spec")
    if not isinstance(spec.get("autoscaling"), Mapping):
        return None
    _known_fields(r, raw, path, ("minReplicas", "maxReplicas", "metric", "target"))
    errors = len(r.errors)
    low = r.integer(raw, "minReplicas", path)
    high = r.integer(raw, "maxReplicas", path)
    if high is None and raw.get("maxReplicas") is None:
        r.fail(f"{path}.maxReplicas", "is required: the most server pods (each with its own Ascend device) to scale to")
    metric = _given(r.string(raw, "metric", path))
    target: float | None
    if metric == METRIC_CPU:
        # Percent of the CPU request, e.g. 80: the bounds of this metric only (the schema's are for both).
        cpu = r.integer(raw, "target", path, minimum=1, maximum=1000)
        target = float(cpu) if cpu is not None else None
    else:
        target = r.number(raw, "target", path)
    if low is not None and high is not None and low > high:
        r.fail(
            f"{path}.minReplicas",
            f"{low} is above maxReplicas {high}; lower minReplicas or raise maxReplicas",
        )
    if len(r.errors) > errors or high is None:
        return None
    return Autoscaling(
        max_replicas=high,
        min_replicas=_given(low),
        metric=metric,
        target=DEFAULT_TARGETS[metric] if target is None else target,
    )


def _canary(r: _Reader, spec: Mapping[str, Any], stable: _ModelSection) -> CanarySpec | None:
    """`spec.canary`: the model fields of spec.model, plus how much traffic it gets and how that is decided."""
    if spec.get("canary") is None:
        return None
    path = "spec.canary"
    canary = r.mapping(spec, "canary", "spec")
    if not isinstance(spec.get("canary"), Mapping):
        return None
    ref, model_uri, labels = _model_fields(r, canary, path)
    _check_runtime_model(r, model_uri, stable.runtime, path)
    if (ref is not None and ref == stable.conversion_ref) or (model_uri is not None and model_uri == stable.model):
        r.fail(path, "names the same model as spec.model; a canary is a different model (promote by moving it to spec.model)")
    replicas = _given(r.integer(canary, "replicas", path))
    deadline = _given(r.integer(canary, "progressDeadlineSeconds", path))
    percent = r.integer(canary, "trafficPercent", path)
    analysis: CanaryAnalysis | None = None
    if canary.get("analysis") is not None:
        analysis = _analysis(r, r.mapping(canary, "analysis", path), f"{path}.analysis")
        if analysis is not None and percent is not None and percent != analysis.steps[0]:
            r.fail(
                f"{path}.trafficPercent",
                f"is {percent} but analysis.steps starts at {analysis.steps[0]}; with analysis the canary starts at "
                "the first step: drop trafficPercent or make it the first step",
            )
    elif percent is None and "trafficPercent" not in canary:
        r.fail(f"{path}.trafficPercent", "is required without analysis (0-100: the canary's share of the requests)")
    start = analysis.steps[0] if analysis is not None else (percent or 0)
    return CanarySpec(ref, model_uri, labels, start, replicas, deadline, analysis)


def _analysis(r: _Reader, raw: Mapping[str, Any], path: str) -> CanaryAnalysis | None:
    interval = r.integer(raw, "intervalSeconds", path)
    steps = DEFAULT_STEPS
    raw_steps = raw.get("steps")
    if raw_steps is not None:
        if not isinstance(raw_steps, list) or not raw_steps:
            r.fail(f"{path}.steps", f"expected a non-empty list of percentages such as [10, 50, 100], got {raw_steps!r}")
        elif not _integer_list(raw_steps, *(bounds := r.integer_list_bounds(f"{path}.steps"))):
            fewest, most, low, high = bounds
            r.fail(f"{path}.steps", f"every step is an integer percentage from {low} to {high} ({fewest} to {most} steps), got {raw_steps!r}")
        elif any(b <= a for a, b in zip(raw_steps, raw_steps[1:], strict=False)):
            r.fail(f"{path}.steps", f"steps must increase, got {raw_steps!r}")
        else:
            steps = tuple(raw_steps)
    max_error = r.number(raw, "maxErrorRate", path, maximum_hint="is a share of the requests: 0 to 1 (0.01 is 1 percent)")
    p99 = r.number(raw, "maxLatencyP99Ms", path)
    min_requests = r.integer(raw, "minRequests", path)
    return CanaryAnalysis(
        interval_seconds=_given(interval),
        steps=steps,
        max_error_rate=_given(max_error),
        max_latency_p99_ms=p99,
        min_requests=_given(min_requests),
    )


# ---------------------------------------------------------------------------
# BatchPrediction
# ---------------------------------------------------------------------------
def parse_batch_prediction(raw: object, default_accelerator_resource: str) -> BatchPredictionSpec:
    spec = _spec(raw)
    r = _Reader(BATCH_PREDICTION)
    section = _model_section(r, spec, default_accelerator_resource)
    source = r.mapping(spec, "input", "spec", required=True)
    input_uri = r.uri(source, "uri", "spec.input", required=True)
    output = r.mapping(spec, "output", "spec", required=True)
    output_uri = r.uri(output, "uri", "spec.output", required=True)
    parallelism = r.integer(spec, "parallelism", "spec")
    batch_size = r.integer(spec, "batchSize", "spec")
    top_k = r.integer(spec, "topK", "spec")
    job = _job_fields(r, spec)
    if input_uri is not None and output_uri is not None:
        if input_uri == output_uri:
            r.fail("spec.output.uri", "is the same location as spec.input.uri; write results to their own folder")
        elif input_uri.name.endswith(".manifest") and output_uri == input_uri.parent():
            pass  # a manifest's folder may hold the results: the inputs are listed, not scanned
        elif _inside(output_uri, input_uri):
            r.fail(
                "spec.output.uri",
                f"{output_uri} is inside spec.input.uri {input_uri}; a rerun would classify the results too, "
                "write them elsewhere",
            )
    r.raise_if_errors()
    assert input_uri is not None and output_uri is not None
    return BatchPredictionSpec(
        conversion_ref=section.conversion_ref,
        model=section.model,
        labels=section.labels,
        runtime=section.runtime,
        accelerator=section.accelerator,
        input=input_uri,
        output=output_uri,
        parallelism=_given(parallelism),
        batch_size=batch_size,
        top_k=top_k,
        **job,
    )


def _inside(inner: StorageURI, outer: StorageURI) -> bool:
    if inner.scheme != outer.scheme or inner.claim != outer.claim:
        return False
    if not outer.path or outer.path == "/":
        return True
    return inner.path.startswith(outer.path.rstrip("/") + "/")
