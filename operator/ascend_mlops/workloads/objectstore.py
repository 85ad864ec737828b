"""Object storage (`s3://`, `obs://`) for every workload: download to scratch, upload, versions.

One module, shared by the trainer, the converter, the server and the batch
kind, so they agree on endpoints, errors and what "complete" means.

* **Credentials and endpoint** come only from the standard AWS environment
  (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
  `AWS_ENDPOINT_URL`, `AWS_DEFAULT_REGION`) plus `S3_ADDRESSING_STYLE`
  (`path`, `virtual`, `auto`), so the same command works in a pod and on a
  laptop. `obs://` is Huawei OBS through its S3-compatible API: without
  `AWS_ENDPOINT_URL` its endpoint is `https://obs.<region>.myhuaweicloud.com`.
* **Errors** say what happened to which bucket, key and endpoint. A refusal
  (403, 404, NoSuchBucket, no credentials) is `StorageRefused`: permanent,
  running again cannot help. Trouble reaching the endpoint (refused
  connections, DNS, timeouts, 5xx after botocore's retries with backoff) is
  `StorageUnavailable`: retryable.
* **Completeness.** S3 has no rename, so a directory published here is
  complete only once its `manifest.json` exists: every other object is
  uploaded first, the manifest (each object's size and SHA-256) last.
  Readers check the manifest of the version they read and verify what they
  downloaded against it.
* **Versions** (`<output>/V001`, `V002`, ...) are claimed with a claim object
  per run, `V00N/.claims/<run id>`: after writing its claim a run lists the
  claims of that number and keeps it only if its own is the only one. With
  the strong read-after-write consistency of S3, OBS, MinIO and Ceph, two
  runs can never both keep a number (whoever lists second sees the first's
  claim); when both see each other both move on. A number that was claimed,
  even by a run that died, is never used again, as on a filesystem.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.api.specs import OBJECT_SCHEMES, SCHEME_OBS, FieldError, parse_storage_uri

log = logging.getLogger("ascend_mlops.objectstore")

MANIFEST_FILE: Final = "manifest.json"
CLAIMS_DIR: Final = ".claims"
PART_SUFFIX: Final = ".part"
DEFAULT_WORKERS: Final = 16
PROGRESS_INTERVAL: Final = 5.0  # seconds between progress lines of a long transfer
ADDRESSING_STYLES: Final = ("path", "virtual", "auto")
OBS_ENDPOINT: Final = "https://obs.{region}.myhuaweicloud.com"
# botocore's "standard" retry mode: exponential backoff with jitter on
# throttling, 5xx and connection errors. Overridable with AWS_MAX_ATTEMPTS.
DEFAULT_MAX_ATTEMPTS: Final = 5
CONNECT_TIMEOUT: Final = 10
READ_TIMEOUT: Final = 60
_VERSION_RE: Final = re.compile(rf"^{re.escape(contract.VERSION_PREFIX)}(\d{{{contract.VERSION_DIGITS},}})$")
_CHUNK: Final = 1024 * 1024
MULTIPART_THRESHOLD: Final = 8 * 1024 * 1024  # boto3's own default
_MAX_CLAIM_ROUNDS: Final = 1000

# Error codes of the S3 API (and OBS's) that mean "not allowed".
_DENIED_CODES: Final = frozenset(
    {
        "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
        "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "403", "Forbidden",
    }
)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
class StorageError(Exception):
    """An object-storage operation failed; the message names bucket, key and endpoint."""

    permanent = True

    def __init__(self, code: str, message: str, *, bucket: str = "", key: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.bucket = bucket
        self.key = key
        self.endpoint = endpoint

    def summary(self) -> dict[str, str]:
        """The `storageError` object of a termination summary (never a credential)."""
        found = {"code": self.code, "bucket": self.bucket, "key": self.key, "endpoint": self.endpoint}
        return {k: v for k, v in found.items() if v}


class StorageRefused(StorageError):
    """403, 404, NoSuchBucket, missing credentials: permanent."""


class StorageUnavailable(StorageError):
    """The endpoint could not be reached or kept failing: retryable."""

    permanent = False


def exit_code(error: StorageError, refused_code: int) -> int:
    """The workload's exit code: `refused_code` (its input's permanent code) or the retryable 75."""
    return refused_code if error.permanent else contract.EXIT_STORAGE_UNAVAILABLE


# ---------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectURI:
    scheme: str
    bucket: str
    key: str  # no leading slash; "" for the bucket's root

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    def join(self, *parts: str) -> ObjectURI:
        cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
        return ObjectURI(self.scheme, self.bucket, posixpath.join(self.key, *cleaned) if self.key else "/".join(cleaned))

    @property
    def prefix(self) -> str:
        """The key prefix of everything below this location ("" or ending in '/')."""
        return f"{self.key}/" if self.key else ""

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    def parent(self) -> ObjectURI:
        return ObjectURI(self.scheme, self.bucket, posixpath.dirname(self.key))


def is_object_uri(value: object) -> bool:
    text = str(value)
    return any(text.lower().startswith(f"{scheme}://") for scheme in OBJECT_SCHEMES)


def parse(value: str, what: str = "location") -> ObjectURI:
    """Parse `s3://bucket/prefix` or `obs://bucket/prefix`; ValueError names `what`."""
    try:
        uri = parse_storage_uri(value, what)
    except FieldError as exc:
        raise ValueError(str(exc)) from None
    if not uri.is_object_storage or uri.claim is None:
        raise ValueError(f"{what}: {value!r} is not an s3:// or obs:// URI")
    return ObjectURI(uri.scheme, uri.claim, uri.path)


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    url: str | None  # None: AWS's own endpoint for the region
    region: str | None
    addressing: str

    def describe(self) -> str:
        return self.url or f"AWS S3 ({self.region or 'default region'})"


def endpoint_for(scheme: str, env: Mapping[str, str] | None = None) -> Endpoint:
    """Where `scheme` is spoken, from the environment; ValueError names the variable to set."""
    env = os.environ if env is None else env
    url = (env.get(contract.ENV_AWS_ENDPOINT_URL) or "").strip() or None
    region = (env.get(contract.ENV_AWS_DEFAULT_REGION) or env.get("AWS_REGION") or "").strip() or None
    if url is None and scheme == SCHEME_OBS:
        if region is None:
            raise ValueError(
                f"obs:// needs ${contract.ENV_AWS_DEFAULT_REGION} (e.g. cn-north-4, giving "
                f"{OBS_ENDPOINT.format(region='cn-north-4')}) or ${contract.ENV_AWS_ENDPOINT_URL}"
            )
        url = OBS_ENDPOINT.format(region=region)
    style = (env.get(contract.ENV_S3_ADDRESSING_STYLE) or "").strip().lower()
    if style and style not in ADDRESSING_STYLES:
        raise ValueError(
            f"${contract.ENV_S3_ADDRESSING_STYLE}={style!r}: use one of {', '.join(ADDRESSING_STYLES)}"
        )
    if not style:
        # OBS's documented style is virtual-hosted; a custom S3 endpoint (MinIO,
        # Ceph, a loopback server) most often has no wildcard DNS for buckets.
        style = "virtual" if scheme == SCHEME_OBS else ("path" if url else "auto")
    return Endpoint(url, region, style)


_clients: dict[tuple[str, Endpoint], Any] = {}
_clients_lock = threading.Lock()


def client_for(scheme: str) -> tuple[Any, Endpoint]:
    """A boto3 S3 client for `scheme` (thread-safe, cached per endpoint)."""
    try:
        endpoint = endpoint_for(scheme)
    except ValueError as exc:
        raise StorageRefused("InvalidConfiguration", str(exc)) from None
    with _clients_lock:
        cached = _clients.get((scheme, endpoint))
        if cached is not None:
            return cached, endpoint
        import boto3
        from botocore.config import Config

        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        config = Config(
            s3={"addressing_style": endpoint.addressing},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=DEFAULT_WORKERS * 2,
            signature_version="s3v4",
        )
        session = boto3.session.Session()
        client = session.client("s3", endpoint_url=endpoint.url, region_name=endpoint.region, config=config)
        _clients[(scheme, endpoint)] = client
        return client, endpoint


def _classify(exc: Exception, uri: ObjectURI, endpoint: Endpoint, doing: str) -> StorageError:
    """Turn a botocore exception into a StorageError whose message a user can act on."""
    from botocore import exceptions as bx

    where = f"{uri} (bucket {uri.bucket!r}, key {uri.key!r}) at {endpoint.describe()}"
    args = {"bucket": uri.bucket, "key": uri.key, "endpoint": endpoint.describe()}
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageRefused(
            "NoCredentials",
            f"cannot {doing} {where}: no credentials; set {contract.ENV_AWS_ACCESS_KEY_ID} and "
            f"{contract.ENV_AWS_SECRET_ACCESS_KEY} (in Kubernetes: spec.storage.secretName)",
            **args,
        )
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        text = str(error.get("Message") or "")
        detail = f" ({text})" if text and text != code else ""
        if code == "NoSuchBucket" or (status == 404 and code in ("", "404") and not uri.key):
            return StorageRefused(
                "NoSuchBucket", f"cannot {doing} {where}: bucket {uri.bucket!r} does not exist; create it or fix the URI", **args
            )
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return StorageRefused(
                "NoSuchKey", f"cannot {doing} {where}: no object {uri.key!r} in bucket {uri.bucket!r}", **args
            )
        if code in _DENIED_CODES or status == 403:
            return StorageRefused(
                "AccessDenied" if code in ("", "403", "Forbidden") else code,
                f"cannot {doing} {where}: access denied{detail}; check the credentials "
                f"({contract.ENV_AWS_ACCESS_KEY_ID}/{contract.ENV_AWS_SECRET_ACCESS_KEY}) and the bucket policy",
                **args,
            )
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
            return StorageUnavailable(
                code or str(status), f"cannot {doing} {where}: the service kept failing with {code or status}{detail}", **args
            )
        return StorageRefused(code or str(status), f"cannot {doing} {where}: {code or status}{detail}", **args)
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return StorageUnavailable(
            "EndpointUnreachable",
            f"cannot {doing} {where}: endpoint {endpoint.describe()} unreachable after retries ({exc})",
            **args,
        )
    if isinstance(exc, bx.BotoCoreError):
        return StorageUnavailable(type(exc).__name__, f"cannot {doing} {where}: {exc}", **args)
    if isinstance(exc, OSError):
        raise exc  # local disk trouble is not the store's
    return StorageUnavailable(type(exc).__name__, f"cannot {doing} {where}: {exc}", **args)


def _call(uri: ObjectURI, doing: str, fn: Callable[[Any], Any]) -> Any:
    client, endpoint = client_for(uri.scheme)
    try:
        return fn(client)
    except StorageError:
        raise
    except Exception as exc:
        raise _classify(exc, uri, endpoint, doing) from None


# ---------------------------------------------------------------------------
# Primitive operations
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def list_objects(uri: ObjectURI, *, including_self: bool = False) -> list[ObjectInfo]:
    """Every object below `uri` (recursively), and the object `uri` itself with `including_self`; by key."""
    prefix = uri.key if including_self else uri.prefix

    def run(client: Any) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=prefix):
            found += [ObjectInfo(o["Key"], int(o["Size"])) for o in page.get("Contents") or ()]
        return sorted(found, key=lambda o: o.key)

    result: list[ObjectInfo] = _call(uri, "list", run)
    return result


def list_children(uri: ObjectURI) -> list[str]:
    """Names of the 'folders' directly below `uri`."""

    def run(client: Any) -> list[str]:
        names: list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=uri.prefix, Delimiter="/")
        for page in pages:
            names += [p["Prefix"][len(uri.prefix) :].rstrip("/") for p in page.get("CommonPrefixes") or ()]
        return names

    result: list[str] = _call(uri, "list", run)
    return result


def head(uri: ObjectURI) -> ObjectInfo | None:
    """The object at `uri`, or None when there is none (other errors raise)."""
    try:
        response = _call(uri, "read", lambda c: c.head_object(Bucket=uri.bucket, Key=uri.key))
    except StorageRefused as exc:
        if exc.code == "NoSuchKey":
            return None
        raise
    return ObjectInfo(uri.key, int(response.get("ContentLength") or 0))


def read_bytes(uri: ObjectURI) -> bytes:
    data: bytes = _call(uri, "read", lambda c: c.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read())
    return data


def write_bytes(uri: ObjectURI, data: bytes, content_type: str = "application/octet-stream") -> None:
    _call(uri, "write", lambda c: c.put_object(Bucket=uri.bucket, Key=uri.key, Body=data, ContentType=content_type))


def delete(uri: ObjectURI) -> None:
    _call(uri, "delete", lambda c: c.delete_object(Bucket=uri.bucket, Key=uri.key))


def check_bucket(uri: ObjectURI, doing: str) -> None:
    """Fail early, with the bucket named, when it is missing or not ours to use."""
    _call(ObjectURI(uri.scheme, uri.bucket, ""), doing, lambda c: c.head_bucket(Bucket=uri.bucket))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------
class _Progress:
    """Counts a transfer and logs a line every PROGRESS_INTERVAL seconds, and one at the end."""

    def __init__(self, verb: str, what: str, files: int, total_bytes: int) -> None:
        self.verb, self.what, self.files, self.total = verb, what, files, total_bytes
        self.done_files = 0
        self.done_bytes = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.done_files += 1
            self.done_bytes += size
            now = time.monotonic()
            if now - self._last >= PROGRESS_INTERVAL and self.done_files < self.files:
                self._last = now
                log.info("%s", self.line())

    def line(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-6)
        return (
            f"{self.verb} {self.what}: {self.done_files}/{self.files} files, "
            f"{self.done_bytes / 1e6:.1f}/{self.total / 1e6:.1f} MB, "
            f"{self.done_bytes / 1e6 / seconds:.1f} MB/s, {self.done_files / seconds:.0f} files/s"
        )

    def finish(self) -> None:
        log.info("%s", self.line())


def _parallel(items: list[Any], work: Callable[[Any], None], workers: int) -> None:
    """Run `work` on every item; the first error cancels what has not started and is raised."""
    if not items:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _download_one(uri: ObjectURI, dest: Path, size: int) -> None:
    """Download to `<dest>.part`, then rename: a killed download never looks like a whole file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    if size < MULTIPART_THRESHOLD:
        # One GET: the transfer manager's extra HEAD per object doubles the cost of small files (photos).
        def get(client: Any) -> None:
            body = client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
            with open(part, "wb") as fh:
                for chunk in body.iter_chunks(_CHUNK):
                    fh.write(chunk)

        _call(uri, "download", get)
    else:
        _call(uri, "download", lambda c: c.download_file(uri.bucket, uri.key, str(part)))
    os.replace(part, dest)


def download(
    uri: ObjectURI,
    dest: Path,
    *,
    what: str = "",
    workers: int = DEFAULT_WORKERS,
    skip: Callable[[str], bool] | None = None,
) -> Path:
    """Copy the object or the tree at `uri` into `dest`; return the local path of what `uri` names.

    An object is written to `dest/<its name>`; a prefix to `dest/` with the
    relative key paths kept. `skip(relative path)` leaves objects out.
    """
    what = what or str(uri)
    objects = list_objects(uri, including_self=True)
    exact = [o for o in objects if o.key == uri.key] if uri.key else []
    below = [o for o in objects if o.key.startswith(uri.prefix) and not o.key.endswith("/")]
    if exact and not below:
        target = dest / uri.name
        progress = _Progress("downloaded", what, 1, exact[0].size)
        _download_one(uri, target, exact[0].size)
        progress.add(exact[0].size)
        progress.finish()
        return target
    if not below:
        check_bucket(uri, "read")
        raise StorageRefused(
            "NoSuchKey",
            f"{what}: nothing at {uri} (bucket {uri.bucket!r}, key prefix {uri.prefix!r}); check the URI",
            bucket=uri.bucket, key=uri.key,
        )
    jobs = [(o, o.key[len(uri.prefix) :]) for o in below]
    if skip is not None:
        jobs = [(o, rel) for o, rel in jobs if not skip(rel)]
    progress = _Progress("downloaded", what, len(jobs), sum(o.size for o, _ in jobs))
    log.info("downloading %s: %d files, %.1f MB into %s", what, progress.files, progress.total / 1e6, dest)

    def fetch(job: tuple[ObjectInfo, str]) -> None:
        info, rel = job
        _download_one(ObjectURI(uri.scheme, uri.bucket, info.key), dest / rel, info.size)
        progress.add(info.size)

    _parallel(jobs, fetch, workers)
    progress.finish()
    return dest


def _local_files(root: Path) -> list[tuple[Path, str]]:
    return sorted((p, p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file())


def upload_directory(
    local_dir: Path | str,
    uri: ObjectURI | str,
    *,
    what: str = "",
    workers: int = DEFAULT_WORKERS,
    manifest: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Upload every file of `local_dir` below `uri`; then, last, its manifest. Returns the manifest."""
    root = Path(local_dir)
    target = parse(uri) if isinstance(uri, str) else uri
    files = _local_files(root)
    progress = _Progress("uploaded", what or str(target), len(files), sum(p.stat().st_size for p, _ in files))
    entries: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def put(item: tuple[Path, str]) -> None:
        path, rel = item
        digest = sha256_file(path)
        size = path.stat().st_size
        key = target.join(rel)
        _call(key, "upload", lambda c: c.upload_file(str(path), key.bucket, key.key))
        with lock:
            entries[rel] = {"path": rel, "size": size, "sha256": digest}
        progress.add(size)

    _parallel(files, put, workers)
    progress.finish()
    document = {
        "files": [entries[rel] for _, rel in files],
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **dict(extra or {}),
    }
    if manifest:
        # Written last: its presence is what makes the directory complete.
        write_bytes(target.join(MANIFEST_FILE), json.dumps(document, indent=2).encode(), "application/json")
    return document


def read_manifest(uri: ObjectURI) -> dict[str, Any] | None:
    """The manifest of the directory `uri`, or None when it has none (it is incomplete)."""
    key = uri.join(MANIFEST_FILE)
    try:
        data = read_bytes(key)
    except StorageRefused as exc:
        if exc.code == "NoSuchKey":
            return None
        raise
    try:
        document = json.loads(data)
    except ValueError:
        return None
    return document if isinstance(document, dict) and isinstance(document.get("files"), list) else None


def verify(local_root: Path, manifest: Mapping[str, Any], below: str = "") -> None:
    """Check the files downloaded from (a part of) a manifested directory: sizes and SHA-256s."""
    prefix = f"{below.strip('/')}/" if below.strip("/") else ""
    for entry in manifest.get("files") or ():
        rel = str(entry.get("path") or "")
        if prefix and not rel.startswith(prefix):
            continue
        local = local_root / rel[len(prefix) :]
        if not local.is_file():
            raise StorageRefused("Incomplete", f"{rel}: listed in the manifest but missing from the download")
        if local.stat().st_size != entry.get("size") or sha256_file(local) != entry.get("sha256"):
            raise StorageRefused(
                "ChecksumMismatch", f"{rel}: size or SHA-256 differs from the manifest; the object was changed or damaged"
            )


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------
def version_number(name: str) -> int | None:
    match = _VERSION_RE.match(name)
    return int(match.group(1)) if match else None


def versions(root: ObjectURI) -> list[str]:
    """Every version name under `root` that has any object (complete or not), oldest first."""
    found = [(n, name) for name in list_children(root) if (n := version_number(name)) is not None]
    return [name for _, name in sorted(found)]


def complete_versions(root: ObjectURI) -> list[str]:
    """The versions under `root` whose manifest exists: the only ones a reader may use."""
    return [name for name in versions(root) if head(root.join(name, MANIFEST_FILE)) is not None]


def version_of(uri: ObjectURI) -> tuple[ObjectURI, str, str] | None:
    """(version directory, version name, path below it) when `uri` lies inside a `V###` directory."""
    parts = uri.key.split("/") if uri.key else []
    for index in range(len(parts) - 1, -1, -1):
        if version_number(parts[index]) is not None:
            directory = ObjectURI(uri.scheme, uri.bucket, "/".join(parts[: index + 1]))
            return directory, parts[index], "/".join(parts[index + 1 :])
    return None


def fetch_input(uri: ObjectURI, dest: Path, *, what: str) -> Path:
    """Download something a workload reads; inside a `V###` version, only a complete one, verified.

    A trained version's artifacts (frozen graph, labels) are complete once the
    version's manifest exists. A conversion's output (`V###/om/model`) is
    published with a manifest of its own, checked when it is present.
    """
    owner = version_of(uri)
    version_manifest = read_manifest(owner[0]) if owner is not None else None
    if owner is not None and version_manifest is None:
        raise StorageRefused(
            "IncompleteVersion",
            f"{what} {uri}: version {owner[1]} has no {MANIFEST_FILE}, so it is incomplete (its training was "
            "stopped or is still uploading); use a complete version",
            bucket=uri.bucket, key=owner[0].join(MANIFEST_FILE).key,
        )
    local = download(uri, dest, what=what, skip=lambda rel: rel == MANIFEST_FILE)
    own = read_manifest(uri) if local.is_dir() else None
    if own is not None:
        verify(local, own)
    elif owner is not None and version_manifest is not None:
        below = owner[2]
        if local.is_file():
            _verify_file(local, version_manifest, below)
        else:
            verify(local, version_manifest, below)
    return local


def _verify_file(local: Path, manifest: Mapping[str, Any], rel: str) -> None:
    for entry in manifest.get("files") or ():
        if entry.get("path") == rel:
            if local.stat().st_size != entry.get("size") or sha256_file(local) != entry.get("sha256"):
                raise StorageRefused("ChecksumMismatch", f"{rel}: size or SHA-256 differs from the manifest")
            return


class VersionClaim:
    """This run's hold on the next version number under an object-storage output root."""

    def __init__(self, root: ObjectURI) -> None:
        self.root = root
        self.run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"
        self.version: str | None = None
        self._claim: ObjectURI | None = None

    def _claim_uri(self, name: str) -> ObjectURI:
        return self.root.join(name, CLAIMS_DIR, self.run_id)

    def claim(self) -> str:
        """Claim the next free number; return its name (V001, ...)."""
        tried = 0
        for _ in range(_MAX_CLAIM_ROUNDS):
            existing = [version_number(v) or 0 for v in versions(self.root)]
            number = max([*existing, tried]) + 1
            name = contract.version_name(number)
            mine = self._claim_uri(name)
            write_bytes(mine, json.dumps({"run": self.run_id, "host": os.uname().nodename}).encode(), "application/json")
            claims = list_objects(self.root.join(name, CLAIMS_DIR))
            others = [o for o in claims if o.key != mine.key]
            complete = head(self.root.join(name, MANIFEST_FILE)) is not None
            if not others and not complete:
                self.version, self._claim = name, mine
                log.info("claimed %s under %s", name, self.root)
                return name
            # Someone else holds (or also tried) this number: leave it and take a later one.
            with contextlib.suppress(StorageError):
                delete(mine)
            tried = number
            time.sleep(random.uniform(0.0, 0.2))
        raise StorageUnavailable("ClaimFailed", f"could not claim a version number under {self.root}")

    def publish(self, local_dir: Path, extra: Mapping[str, Any] | None = None) -> str:
        """Upload the staged version and its manifest (last); return the version's name."""
        name = self.version or self.claim()
        target = self.root.join(name)
        upload_directory(local_dir, target, what=f"version {name} to {target}", extra={"version": name, **dict(extra or {})})
        if self._claim is not None:
            with contextlib.suppress(StorageError):
                delete(self._claim)
        return name


_scratch_dirs: list[Path] = []


def scratch_dir(purpose: str) -> Path:
    """A fresh directory for `purpose` under $ASCEND_MLOPS_SCRATCH (a pod's emptyDir) or the temp dir."""
    import tempfile

    base = os.environ.get(contract.ENV_SCRATCH) or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{purpose}-", dir=base))
    _scratch_dirs.append(path)
    return path


def remove_scratch() -> None:
    """Delete the scratch directories this process made (a run outside a pod must not leave a dataset copy behind)."""
    import shutil

    while _scratch_dirs:
        shutil.rmtree(_scratch_dirs.pop(), ignore_errors=True)

