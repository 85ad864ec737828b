"""`ascend-mlops sandbox run EXAMPLE`: apply an example, follow it, classify an image.

The example folder holds the manifests and `sandbox.toml` (the dataset step,
the sample image, the order of resources, the quick/full profiles and, for an
example on object storage, the `[objectStorage]` table: see objectstorage.py). The run
prints each resource's phase and conditions as they change, the training
epochs, and the elapsed time; then it POSTs the sample image to the service and
prints the prediction and the service URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ascend_mlops.api import constants, contract
from ascend_mlops.kube import ApiError, KubeClient
from ascend_mlops.sandbox import datasets, objectstorage
from ascend_mlops.sandbox.cluster import ENV_SANDBOX
from ascend_mlops.sandbox.objects import merge_patch
from ascend_mlops.sandbox.proxy import ANNOTATION_URL

EXAMPLE_FILE = "sandbox.toml"
PLURALS = {kind: plural for kind, plural in constants.PLURALS.items()}
SUMMARY_CONDITION = {
    constants.TRAINING_JOB: constants.ConditionType.SUCCEEDED,
    constants.MODEL_CONVERSION: constants.ConditionType.SUCCEEDED,
    constants.INFERENCE_SERVICE: constants.ConditionType.READY,
    constants.BATCH_PREDICTION: constants.ConditionType.SUCCEEDED,
}
# Kinds whose summary condition False means "failed for good" (bounded work).
BOUNDED_KINDS = (constants.TRAINING_JOB, constants.MODEL_CONVERSION, constants.BATCH_PREDICTION)
EPOCH_LINE = re.compile(r"\bepoch\b", re.IGNORECASE)


class FlowError(RuntimeError):
    pass


@dataclass
class Example:
    folder: Path
    config: dict[str, Any]
    manifests: list[dict[str, Any]]

    @classmethod
    def load(cls, folder: Path, *, batch: bool = False) -> Example:
        """The example's manifests that `resources` lists (and, with `batch`, its `[batch]` resource)."""
        folder = folder.resolve()
        config_path = folder / EXAMPLE_FILE
        if not config_path.is_file():
            raise FlowError(f"{folder} is not a sandbox example: it has no {EXAMPLE_FILE} (see examples/flowers/{EXAMPLE_FILE})")
        try:
            config = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise FlowError(f"{config_path}: {e}") from None
        manifests: list[dict[str, Any]] = []
        files = config.get("files")
        paths = [folder / str(f) for f in files] if files else sorted(folder.glob("*.y*ml"))
        seen: dict[str, Path] = {}
        for path in paths:
            if not path.is_file():
                raise FlowError(f"{config_path}: files lists {path.name}, which is not in {folder}")
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") and doc.get("metadata", {}).get("name"):
                    key = f"{doc['kind']}/{doc['metadata']['name']}"
                    if key in seen:
                        raise FlowError(
                            f"{key} is in both {seen[key].name} and {path.name}; list the files this run applies "
                            f"in {EXAMPLE_FILE} (files = [...])"
                        )
                    seen[key] = path
                    manifests.append(doc)
        order = [str(r) for r in config.get("resources") or []]
        batch_key = str((config.get("batch") or {}).get("resource") or "")
        if batch:
            if not batch_key:
                raise FlowError(f"{config_path} has no [batch] resource: this example has no batch step")
            order.append(batch_key)
        if order:
            # A manifest the file does not list (the batch one without --batch) is for a cluster, not this run.
            manifests = [d for d in manifests if f"{d['kind']}/{d['metadata']['name']}" in order]

        def position(doc: Mapping[str, Any]) -> int:
            key = f"{doc['kind']}/{doc['metadata']['name']}"
            return order.index(key) if key in order else len(order)

        manifests.sort(key=position)
        return cls(folder, config, manifests)

    def storage(self) -> objectstorage.StorageConfig | None:
        """The `[objectStorage]` table (an embedded S3 server for the run), or None."""
        table = self.config.get("objectStorage")
        if not table:
            return None
        try:
            config = objectstorage.StorageConfig.from_table(table, str(self.folder / EXAMPLE_FILE))
        except objectstorage.ObjectStorageError as e:
            raise FlowError(str(e)) from None
        uri = str((self.config.get("dataset") or {}).get("uri") or "")
        if objectstorage.is_object_uri(uri):
            config.buckets.append(objectstorage.split_uri(uri)[0])
        return config

    def profile(self, name: str) -> dict[str, Any]:
        profiles = self.config.get("profiles") or {}
        if name not in profiles:
            raise FlowError(f"profile {name!r} is not in {self.folder / EXAMPLE_FILE}; it has: {', '.join(profiles) or 'none'}")
        return dict(profiles[name] or {})


def local_path_for_uri(root: Path, uri: str) -> Path:
    """Where the sandbox kubelet puts a storage URI (pvc:// -> data/pvc/<claim>/..., file:// -> as mapped)."""
    data = root / "data"
    if uri.startswith("pvc://"):
        return data / "pvc" / uri.removeprefix("pvc://").strip("/")
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    raise FlowError(
        f"the sandbox cannot place a dataset at {uri!r}: use a pvc:// or file:// URI, or an s3:// / obs:// one "
        f"with an [objectStorage] table in {EXAMPLE_FILE}"
    )


def rewrite_file_uris(value: Any, root: Path) -> Any:
    """file:///X -> file://<sandbox>/data/hostpath/X, so an example never writes outside the sandbox."""
    if isinstance(value, str) and value.startswith("file:///") and not value.startswith(f"file://{root}"):
        return f"file://{root / 'data' / 'hostpath'}/{value.removeprefix('file:///')}"
    if isinstance(value, dict):
        return {k: rewrite_file_uris(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_file_uris(v, root) for v in value]
    return value


def object_summary(report: Report, uri: str) -> str:
    """`12 objects, 94.1 MB` under an s3:// / obs:// URI, from the listing the run took at the end."""
    bucket, prefix = objectstorage.split_uri(uri)
    wanted = f"s3://{bucket}/{prefix}".rstrip("/")
    sizes = [size for key, size in report.objects.items() if key == wanted or key.startswith(wanted + "/")]
    if not sizes:
        return "MISSING from the embedded bucket"
    return f"{len(sizes)} object{'s' if len(sizes) != 1 else ''}, {sum(sizes) / 1e6:.1f} MB"


@dataclass
class RunOptions:
    example: Path
    profile: str = "quick"
    data: Path | None = None
    max_per_class: int | None = None
    namespace: str = "default"
    timeout: float | None = None  # seconds for the whole flow; None: no limit
    download: bool = True
    epochs: int | None = None  # overrides every TrainingJob's hyperparameters.epochs
    batch: bool = False  # also run the example's [batch] resource (a BatchPrediction) and report on it


@dataclass
class Report:
    """What a run measured and produced (also written to <sandbox>/run.json)."""

    stages: dict[str, float] = field(default_factory=dict)
    prediction: Any = None
    batch: dict[str, Any] | None = None  # the BatchPrediction's counts and accuracy (--batch)
    service_url: str | None = None
    route_url: str | None = None  # the InferenceService's HTTPRoute on the sandbox gateway (operator with a Gateway)
    cluster_url: str | None = None
    sample: str | None = None
    dataset: str | None = None
    dataset_source: str | None = None
    object_storage: str | None = None  # the embedded S3 server's endpoint, while the run was up
    # Where each resource's artifacts are ("TrainingJob/x" -> status field -> URI), and what
    # the embedded bucket held at the end (URI -> size); gone from memory with the run.
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # each resource's final status
    events: list[str] = field(default_factory=list)  # the namespace's events at the end


class ExampleRun:
    def __init__(self, client: KubeClient, root: Path, options: RunOptions, out: Callable[[str], None] = print) -> None:
        self.client = client
        self.root = root
        self.options = options
        self.out = out
        self.started = time.monotonic()
        self.report = Report()
        self._last_stage = self.started
        self._seen: dict[str, Any] = {}
        self._log_lines: dict[str, int] = {}
        self.storage: objectstorage.EmbeddedS3 | None = None
        self.storage_config: objectstorage.StorageConfig | None = None

    def say(self, message: str) -> None:
        self.out(f"[{time.monotonic() - self.started:7.1f}s] {message}")

    def stage(self, name: str) -> None:
        now = time.monotonic()
        self.report.stages[name] = round(now - self._last_stage, 1)
        self._last_stage = now

    # ------------------------------------------------------------------ dataset
    def prepare_dataset(self, example: Example) -> Path:
        """Put the dataset where the TrainingJob reads it; returns its local folder."""
        config = example.config.get("dataset") or {}
        uri = str(config.get("uri") or "")
        if not uri:
            raise FlowError(f"{example.folder / EXAMPLE_FILE} names no dataset.uri")
        if objectstorage.is_object_uri(uri):
            return self._upload_dataset(config, uri)
        target = local_path_for_uri(self.root, uri)
        source: Path
        if self.options.data is not None:
            source = self.options.data.resolve()
            datasets.check_dataset(source)
            self.report.dataset_source = "given (--data)"
        elif target.is_symlink() or (target.is_dir() and datasets.class_folders(target)):
            source = target.resolve()
            datasets.check_dataset(source)
            self.report.dataset_source = "already in the sandbox"
        else:
            source = self._download_or_generate(config)
        if self.options.max_per_class:
            source = datasets.subset(source, self.root / "datasets" / f"subset-{self.options.max_per_class}", self.options.max_per_class)
        if target.is_symlink():
            target.unlink()
        elif target.exists() and target.resolve() != source:
            raise FlowError(
                f"{target} already holds a dataset that is not a link; remove it to use {source}, or run without --data"
            )
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source, target_is_directory=True)
        classes = datasets.check_dataset(target)
        count = sum(len(v) for v in classes.values())
        self.report.dataset = str(source)
        self.say(f"dataset: {source} ({len(classes)} classes: {', '.join(classes)}; {count} images) -> {uri}")
        return target

    def _upload_dataset(self, config: Mapping[str, Any], uri: str) -> Path:
        """The dataset (--data, else downloaded or generated) uploaded into the embedded bucket."""
        if self.storage is None or self.storage_config is None:
            raise FlowError(f"the dataset is at {uri}, but the example has no [objectStorage] table in {EXAMPLE_FILE}")
        source: Path
        if self.options.data is not None:
            source = self.options.data.resolve()
            datasets.check_dataset(source)
            self.report.dataset_source = "given (--data)"
        else:
            source = self._download_or_generate(config)
        if self.options.max_per_class:
            source = datasets.subset(source, self.root / "datasets" / f"subset-{self.options.max_per_class}", self.options.max_per_class)
        classes = datasets.check_dataset(source)
        count = sum(len(v) for v in classes.values())
        self.report.dataset = str(source)
        self.say(f"dataset: {source} ({len(classes)} classes: {', '.join(classes)}; {count} images) -> {uri}")
        try:
            objectstorage.upload_dataset(self.storage.endpoint, self.storage_config.region, source, uri, progress=self.say)
        except objectstorage.ObjectStorageError as e:
            raise FlowError(str(e)) from None
        return source

    # ------------------------------------------------------------------ object storage
    async def start_storage(self, example: Example) -> None:
        """The embedded S3 server, its buckets and the Secret, when the example asks for them."""
        config = example.storage()
        if config is None:
            return
        self.storage_config = config
        self.storage = objectstorage.EmbeddedS3(
            self.root / "logs", env={ENV_SANDBOX: str(self.root)}, region=config.region,
        )
        try:
            endpoint = await self.storage.astart()
            await asyncio.to_thread(self.storage.create_buckets, config.buckets)
        except objectstorage.ObjectStorageError as e:
            raise FlowError(str(e)) from None
        self.report.object_storage = endpoint
        self.say(
            f"object storage: embedded S3 server {endpoint} (in memory, for this run), "
            f"buckets {', '.join(dict.fromkeys(config.buckets)) or 'none'}; log {self.storage.log_path}"
        )
        secret = objectstorage.secret_manifest(config.secret_name, self.options.namespace, endpoint, config.region)
        if await self.client.get("v1", "secrets", self.options.namespace, config.secret_name) is not None:
            await self.client.delete("v1", "secrets", self.options.namespace, config.secret_name)
        await self.client.create("v1", "secrets", self.options.namespace, secret)
        self.say(
            f"Secret/{config.secret_name}: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (dummies), AWS_ENDPOINT_URL={endpoint}, "
            f"AWS_DEFAULT_REGION={config.region}, S3_ADDRESSING_STYLE=path"
        )

    def stop_storage(self) -> None:
        if self.storage is not None:
            self.storage.stop()

    async def record_artifacts(self, current: Mapping[str, Mapping[str, Any]]) -> None:
        """Each resource's artifact URIs from its status and, on object storage, what is there."""
        for key, obj in current.items():
            status = obj.get("status") or {}
            self.report.resources[key] = status
            found = {
                f"{section}.{name}": value
                for section in ("artifacts", "model")
                for name, value in (status.get(section) or {}).items()
                if isinstance(value, str) and "://" in value
            }
            if found:
                self.report.artifacts[key] = found
        if self.storage is not None and self.storage_config is not None:
            listing: dict[str, int] = {}
            for bucket in dict.fromkeys(self.storage_config.buckets):
                listing.update(await asyncio.to_thread(self.storage.objects, f"s3://{bucket}"))
            self.report.objects = listing
        with contextlib.suppress(ApiError):
            events = (await self.client.listing("v1", "events", self.options.namespace)).get("items", [])
            self.report.events = [
                f"{e.get('type', '')} {e.get('involvedObject', {}).get('kind', '')}/{e.get('involvedObject', {}).get('name', '')} "
                f"{e.get('reason', '')}: {e.get('message', '')}"
                for e in events
            ]

    def _download_or_generate(self, config: Mapping[str, Any]) -> Path:
        store = self.root / "datasets"
        download = config.get("download") or {}
        if download.get("url") and self.options.download:
            try:
                folder = datasets.download(
                    str(download["url"]), store / "download", download.get("folder"),
                    timeout=float(download.get("timeoutSeconds", 10)), progress=self.say,
                )
                self.report.dataset_source = f"downloaded from {download['url']}"
                return folder
            except datasets.DatasetError as e:
                self.say(f"{e}")
                self.say("no internet access for the dataset: generating a flower-like dataset instead (drawings, not photos; pass --data DIR for real ones)")
        generated = config.get("generated") or {}
        folder = datasets.generate(
            store / "generated",
            classes=list(generated.get("classes") or datasets.FLOWER_STYLES),
            per_class=int(generated.get("perClass", 60)),
            size=int(generated.get("size", 128)),
        )
        self.report.dataset_source = "generated"
        return folder

    def sample_image(self, example: Example, dataset: Path) -> Path:
        wanted = (example.config.get("sample") or {}).get("class") or []
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        classes = datasets.check_dataset(dataset)
        for name in wanted:
            if name in classes:
                return classes[name][0].resolve()
        return next(iter(classes.values()))[0].resolve()

    # ------------------------------------------------------------------ apply
    def prepared_manifests(self, example: Example) -> list[dict[str, Any]]:
        profile = example.profile(self.options.profile)
        result = []
        for manifest in example.manifests:
            doc = copy.deepcopy(manifest)
            key = f"{doc['kind']}/{doc['metadata']['name']}"
            if key in profile:
                doc = merge_patch(doc, profile[key])
            if self.options.epochs is not None and doc["kind"] == constants.TRAINING_JOB:
                doc = merge_patch(doc, {"spec": {"algorithm": {"hyperparameters": {"epochs": self.options.epochs}}}})
            doc = rewrite_file_uris(doc, self.root)
            doc["metadata"]["namespace"] = self.options.namespace
            result.append(doc)
        return result

    async def apply(self, manifests: list[dict[str, Any]]) -> None:
        for doc in manifests:
            plural = PLURALS.get(doc["kind"])
            if plural is None:
                raise FlowError(f"the sandbox example runner applies only {', '.join(PLURALS)}, not {doc['kind']}")
            name = doc["metadata"]["name"]
            api_version = str(doc["apiVersion"])
            if await self.client.get(api_version, plural, self.options.namespace, name) is not None:
                # A fresh run: the previous one's resources go first (their children with them).
                await self.client.delete(api_version, plural, self.options.namespace, name)
                while await self.client.get(api_version, plural, self.options.namespace, name) is not None:
                    await asyncio.sleep(0.2)
            try:
                await self.client.create(api_version, plural, self.options.namespace, doc)
            except ApiError as e:
                raise FlowError(f"applying {doc['kind']}/{name} failed: {e.message}") from None
        self.say("applied " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in manifests))

    # ------------------------------------------------------------------ follow
    @staticmethod
    def describe(obj: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        status = obj.get("status") or {}
        kind = obj.get("kind", "")
        summary_type = SUMMARY_CONDITION.get(kind, "Ready")
        conditions = status.get("conditions") or []
        summary = next((c for c in conditions if c.get("type") == summary_type), None)
        others = " ".join(f"{c.get('type')}={c.get('status')}" for c in conditions if c.get("type") != summary_type)
        phase = status.get("phase") or "-"
        text = phase
        progress = status.get("progress") or {}
        if phase == constants.Phase.RUNNING and progress.get("epoch") is not None:
            # Not part of the change marker: the log lines below already show every epoch.
            text += f" (epoch {progress['epoch']}/{progress.get('totalEpochs', '?')})"
        if summary:
            text += f"  {summary_type}={summary.get('status')} ({summary.get('reason', '')})"
            if summary.get("message"):
                text += f": {summary['message']}"
        if others:
            text += f"  [{others}]"
        key = (phase, tuple((c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conditions))
        return text, key

    async def _print_changes(self, manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        current: dict[str, dict[str, Any]] = {}
        for doc in manifests:
            key = f"{doc['kind']}/{doc['metadata']['name']}"
            obj = await self.client.get(str(doc["apiVersion"]), PLURALS[doc["kind"]], self.options.namespace, doc["metadata"]["name"])
            if obj is None:
                continue
            current[key] = obj
            if not obj.get("status"):
                continue  # not reconciled yet: nothing to say
            text, marker = self.describe(obj)
            if self._seen.get(key) != marker:
                self._seen[key] = marker
                self.say(f"{key}: {text}")
        return current

    async def _print_epochs(self) -> None:
        """Training epoch lines from the TrainingJob pods' logs, as they come."""
        selector = f"{constants.LABEL_OWNER_KIND}={constants.TRAINING_JOB}"
        try:
            pods = (await self.client.listing("v1", "pods", self.options.namespace, label_selector=selector)).get("items", [])
        except ApiError:
            return
        for pod in pods:
            name = pod["metadata"]["name"]
            try:
                text = await self.client.read_pod_log(self.options.namespace, name)
            except ApiError:
                continue
            lines = str(text or "").replace("\r", "\n").splitlines()
            start = self._log_lines.get(name, 0)
            for line in lines[start:]:
                if EPOCH_LINE.search(line) and line.strip():
                    self.say(f"  {name}: {line.strip()[:160]}")
            self._log_lines[name] = len(lines)

    def _failure(self, key: str, obj: Mapping[str, Any]) -> str | None:
        conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
        summary = conditions.get(SUMMARY_CONDITION.get(obj.get("kind", ""), "Ready")) or {}
        stalled = conditions.get(constants.ConditionType.STALLED) or {}
        if obj.get("kind") in BOUNDED_KINDS and summary.get("status") == "False":
            return f"{key} failed: {summary.get('reason')}: {summary.get('message', '')}"
        if stalled.get("status") == "True":
            return f"{key} is stalled: {stalled.get('reason')}: {stalled.get('message', '')}"
        return None

    async def follow(self, manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Until every resource's summary condition is True; raises FlowError on a failure."""
        deadline = self.started + self.options.timeout if self.options.timeout else None
        done: set[str] = set()
        stage_names = {
            constants.TRAINING_JOB: "training", constants.MODEL_CONVERSION: "conversion", constants.INFERENCE_SERVICE: "inference service ready",
            constants.BATCH_PREDICTION: "batch prediction",
        }
        while True:
            current = await self._print_changes(manifests)
            await self._print_epochs()
            for doc in manifests:
                key = f"{doc['kind']}/{doc['metadata']['name']}"
                obj = current.get(key)
                if obj is None:
                    continue
                failure = self._failure(key, obj)
                if failure:
                    raise FlowError(failure)
                summary = SUMMARY_CONDITION.get(doc["kind"], "Ready")
                ok = any(c.get("type") == summary and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions") or [])
                if ok and key not in done:
                    done.add(key)
                    self.stage(stage_names.get(doc["kind"], key))
            if len(done) == len(manifests):
                return current
            if deadline and time.monotonic() > deadline:
                waiting = [f"{d['kind']}/{d['metadata']['name']}" for d in manifests if f"{d['kind']}/{d['metadata']['name']}" not in done]
                raise FlowError(f"timed out after {self.options.timeout:.0f}s waiting for {', '.join(waiting)}")
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ predict
    async def service_url(self, isvc: Mapping[str, Any]) -> str:
        name = isvc["metadata"]["name"]
        selector = f"{constants.LABEL_OWNER_KIND}={constants.INFERENCE_SERVICE},{constants.LABEL_OWNER_NAME}={name}"
        for _ in range(100):
            services = (await self.client.listing("v1", "services", self.options.namespace, label_selector=selector)).get("items", [])
            for service in services:
                url = (service["metadata"].get("annotations") or {}).get(ANNOTATION_URL)
                if url:
                    return str(url)
            await asyncio.sleep(0.2)
        raise FlowError(f"InferenceService/{name} is Ready but no Service of it is exposed on a local port")

    async def route_url(self, isvc: Mapping[str, Any]) -> str | None:
        """The local URL of the InferenceService's HTTPRoute, when the operator made one (a Gateway is set)."""
        name = isvc["metadata"]["name"]
        selector = f"{constants.LABEL_OWNER_KIND}={constants.INFERENCE_SERVICE},{constants.LABEL_OWNER_NAME}={name}"
        for _ in range(50):  # the gateway writes the URL within a moment of the route's creation
            try:
                routes = (await self.client.listing(
                    constants.GATEWAY_API_VERSION, constants.HTTPROUTES, self.options.namespace, label_selector=selector,
                )).get("items", [])
            except ApiError:
                return None
            if not routes:
                return None
            for route in routes:
                url = (route["metadata"].get("annotations") or {}).get(ANNOTATION_URL)
                if url:
                    return str(url)
            await asyncio.sleep(0.2)
        return None

    async def predict(self, url: str, image: Path) -> Any:
        form = aiohttp.FormData()
        form.add_field("images", image.read_bytes(), filename=image.name, content_type="image/jpeg")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            async with session.post(url.rstrip("/") + "/", data=form) as response:
                text = await response.text()
                if response.status != 200:
                    raise FlowError(f"POST {url}/ answered {response.status}: {text[:500]}")
                try:
                    return json.loads(text)
                except ValueError:
                    raise FlowError(f"POST {url}/ did not answer JSON: {text[:300]}") from None

    def batch_summary(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Counts from the batch's manifest and, where the input folders are class names, the accuracy."""
        name = batch["metadata"]["name"]
        uri = str(((batch.get("status") or {}).get("artifacts") or {}).get("manifest") or "")
        if not uri.startswith(("pvc://", "file://")):
            raise FlowError(f"BatchPrediction/{name} succeeded but its manifest {uri!r} is not on a pvc:// or file:// location")
        manifest = local_path_for_uri(self.root, uri)
        lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        results = manifest.parent / contract.batch_results_dir(name)
        correct = total = 0
        for path in results.rglob(f"*{contract.BATCH_RESULT_SUFFIX}"):
            rel = path.relative_to(results)
            if len(rel.parts) < 2:
                continue  # not under a class folder: no truth to compare with
            answer = json.loads(path.read_text())
            total += 1
            correct += answer.get("predicted_label") == rel.parts[0]
        summary: dict[str, Any] = {
            "manifest": uri,
            "inputs": len(lines),
            "succeeded": sum(1 for line in lines if line.get("result") == "SUCCESSFUL"),
            "failed": sum(1 for line in lines if line.get("result") == "FAILED"),
        }
        if total:
            summary["accuracy"] = round(correct / total, 4)
            summary["compared"] = total
        return summary

    async def run(self) -> Report:
        example = Example.load(self.options.example, batch=self.options.batch)
        await self.start_storage(example)
        dataset = await asyncio.to_thread(self.prepare_dataset, example)
        sample = self.sample_image(example, dataset)
        self.stage("dataset")
        manifests = self.prepared_manifests(example)
        await self.apply(manifests)
        current = await self.follow(manifests)
        batch = next((o for o in current.values() if o.get("kind") == constants.BATCH_PREDICTION), None)
        if batch is not None:
            self.report.batch = self.batch_summary(batch)
            found = self.report.batch
            accuracy = f", accuracy {found['accuracy']:.4f} against the folder names ({found['compared']} images)" if "accuracy" in found else ""
            self.say(
                f"batch: {found['inputs']} inputs, {found['succeeded']} SUCCESSFUL, {found['failed']} FAILED{accuracy}; "
                f"manifest {found['manifest']}"
            )
        isvc = next((o for o in current.values() if o.get("kind") == constants.INFERENCE_SERVICE), None)
        if isvc is None:
            self.say("no InferenceService in the example: nothing to classify")
            return self.report
        url = await self.service_url(isvc)
        self.report.service_url = url
        self.report.route_url = await self.route_url(isvc)
        status = isvc.get("status") or {}
        self.report.cluster_url = (status.get("address") or {}).get("url") or status.get("url")  # KServe's in-cluster address
        self.report.sample = str(sample)
        prediction = await self.predict(url, sample)
        self.stage("prediction")
        self.report.prediction = prediction
        self.say(f"prediction for {sample.parent.name}/{sample.name}: {json.dumps(prediction)}")
        await self.record_artifacts(await self._print_changes(manifests))
        return self.report
