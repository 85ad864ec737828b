"""The sandbox's node agent: scheduler, kubelet, deployment controller and service proxy in one.

It talks to the API like the real components do (list+watch, binding, status
patches, events) and runs each scheduled Pod's container as a local process
group (`podrun.py` maps its paths, ports and env):

* scheduling: pods are filtered against the simulated nodes (`scheduling.py`);
  a pod that fits nowhere stays Pending with `PodScheduled=False`,
  reason `Unschedulable` and the scheduler's message, and is retried when
  anything changes;
* images: only the project's workload images run (the operator's settings
  name them); any other image waits in `ErrImagePull`/`ImagePullBackOff`
  with a message that says why;
* containers: phases, `containerStatuses` (running, terminated with exit code
  and the termination message, waiting `CrashLoopBackOff` with the kubelet's
  back-off for restartPolicy Always/OnFailure), startup/readiness/liveness
  probes (httpGet, tcpSocket) against the remapped port, podIP 127.0.0.1;
* env from Secrets/ConfigMaps (`secretKeyRef`, `envFrom`, ...) is read from the API;
  a missing one or a missing required key leaves the pod waiting in
  `CreateContainerConfigError` with the real kubelet's message, retried until it is there;
* `secret` and `configMap` volumes are written into the pod's folder in the real
  kubelet's layout (`podrun.write_atomically`) before the containers start (a
  missing object keeps the pod in `ContainerCreating` with a `FailedMount` event),
  and rewritten, by one swap of `..data`, as soon as the watch reports a change
  (the real kubelet takes up to about a minute): a process that re-reads its
  mounted token file sees a rotation without a restart;
* ports: each containerPort gets a free loopback port, written on the pod as the
  annotation `ascend.mlops.dev/sandbox-ports` ({"<containerPort>": <local port>})
  as soon as it is allocated (before the pod is Ready), for whoever scrapes it;
* deletion: the pod leaves the ready endpoints of every Service and HTTPRoute at
  once (as EndpointSlices mark a terminating endpoint not ready), then, after
  `endpoint_settle` seconds for connections already dialled to it, its process
  group gets SIGTERM, then SIGKILL after the grace period. Pods are stopped in
  the background: a slow drain never holds up the rest of the node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import datetime
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ascend_mlops.api import constants
from ascend_mlops.kube import ApiError, KubeClient
from ascend_mlops.sandbox import podrun, scheduling
from ascend_mlops.sandbox.apiserver import free_port
from ascend_mlops.sandbox.objects import now_rfc3339

logger = logging.getLogger(__name__)

SCHEDULER = "default-scheduler"
MAX_BACKOFF = 300.0
INITIAL_BACKOFF = 10.0
BACKOFF_RESET_AFTER = 600.0  # a container that ran this long starts its back-off over
CONFIG_RETRY = 2.0  # seconds between attempts to start a pod whose Secret/ConfigMap/volume is not there yet
MAX_GRACE = 10.0  # the sandbox does not wait the full 30 s default for a process to stop
# Between a deleted pod leaving the endpoints and its SIGTERM: a connection the
# proxy or the gateway dialled just before reaches the server before it stops
# listening (a real cluster leaves this to a preStop sleep).
ENDPOINT_SETTLE = 0.5


@dataclass
class KubeletConfig:
    api_url: str
    root: Path  # the sandbox folder: pods/ (logs, scratch) and data/ (volumes) live here
    allowed_images: frozenset[str]
    nodes: list[scheduling.NodeConfig] = field(default_factory=scheduling.default_nodes)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # given to every process
    max_grace: float = MAX_GRACE
    endpoint_settle: float = ENDPOINT_SETTLE

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"


def _set_parent_death_signal() -> None:
    """Linux: the child is killed if the sandbox dies without cleaning up (kill -9)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _condition(kind: str, status: bool | str, reason: str = "", message: str = "", now: str | None = None) -> dict[str, Any]:
    value = status if isinstance(status, str) else ("True" if status else "False")
    condition: dict[str, Any] = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now or now_rfc3339()}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _merge_conditions(old: Iterable[Mapping[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep lastTransitionTime where a condition's status did not change."""
    previous = {c.get("type"): c for c in old}
    result = []
    for condition in new:
        before = previous.get(condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            condition = {**condition, "lastTransitionTime": before.get("lastTransitionTime", condition["lastTransitionTime"])}
        result.append(condition)
    return result


class Events:
    """Posts core/v1 Events the way the scheduler and kubelet do (for `kubectl describe`)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def post(self, obj: Mapping[str, Any], reason: str, message: str, *, kind: str = "Normal", component: str = "kubelet", host: str = "") -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"),
                "name": meta.get("name"), "namespace": namespace, "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason, "message": message, "type": kind,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": host or component,
        }
        try:
            await self.client.create("v1", "events", namespace, body)
        except (ApiError, aiohttp.ClientError) as e:
            logger.debug("event %s for %s not posted: %s", reason, meta.get("name"), e)


class PodWorker:
    """One pod on this node: runs its (single or several) containers, reports status."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        meta = pod["metadata"]
        self.dir = kubelet.config.pods_dir / meta.get("namespace", "default") / f"{meta['name']}-{self.uid[:8]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.container_states: dict[str, dict[str, Any]] = {}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.ready: dict[str, bool] = {}
        self.started: dict[str, bool] = {}
        self.restart_counts: dict[str, int] = {}
        self.last_state: dict[str, dict[str, Any]] = {}
        self.plans: dict[str, podrun.ContainerPlan] = {}
        self.local_ports: dict[int, int] = {}
        self.start_time = now_rfc3339()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self._stopping = False
        self.object_volumes = podrun.object_volumes(pod)
        self._volume_dirs: dict[str, Path] = {}  # set once the secret/configMap volumes are written
        self._volume_versions: dict[str, int] = {}  # volume -> resourceVersion of what it shows
        self._volume_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_status: dict[str, Any] | None = None
        self._status_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"].get("namespace", "default"))

    def log_path(self, container: str, previous: bool = False) -> Path:
        return self.dir / (f"{container}.previous.log" if previous else f"{container}.log")

    @property
    def terminating(self) -> bool:
        """Being stopped (deleted, or past its deadline): never an endpoint again."""
        return self._stopping

    @property
    def serving(self) -> bool:
        """Every container is running and ready: what makes the pod a ready endpoint."""
        return bool(self.plans) and not self._stopping and all(self.ready.get(name) for name in self.plans)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    def leave_endpoints(self) -> None:
        """Out of every Service's and HTTPRoute's endpoints from now on (before any signal)."""
        self._stopping = True

    async def stop(self, reason: str = "Killing") -> None:
        """Kill every process of the pod (SIGTERM, grace period, SIGKILL) and end the worker."""
        self._stopping = True
        grace = min(float(self.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)), self.kubelet.config.max_grace)
        await asyncio.gather(*(self._kill(name, grace) for name in list(self.processes)))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        async with self._volume_lock:  # not while a Secret's update is being written
            self._volume_dirs = {}
            shutil.rmtree(self.dir / "volumes", ignore_errors=True)

    async def _kill(self, name: str, grace: float) -> None:
        process = self.processes.get(name)
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        # Children that left the group's leader behind still share its group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ lifecycle
    async def _run(self) -> None:
        containers = self.pod.get("spec", {}).get("containers") or []
        try:
            for container in containers:
                image = container.get("image", "")
                if image not in self.kubelet.config.allowed_images:
                    await self._image_refused(container)
                    return
            last_error = ""
            while True:
                try:
                    volumes = podrun.volume_dirs(self.pod, self.kubelet.config.data_dir, self.dir)
                    await self._mount_object_volumes(volumes)
                    for container in containers:
                        for port in container.get("ports") or []:
                            if "containerPort" in port and port["containerPort"] not in self.local_ports:
                                self.local_ports[int(port["containerPort"])] = free_port()
                    await self._annotate_ports()
                    lookup = await self._lookup_refs(containers)
                    for container in containers:
                        self.plans[container["name"]] = podrun.plan_container(
                            self.pod, container, volumes=volumes, pod_dir=self.dir, ports=self.local_ports,
                            lookup=lookup, extra_env=self.kubelet.config.extra_env,
                        )
                    break
                except podrun.PodConfigError as e:
                    # Like the real kubelet: the pod waits with the reason, and is retried
                    # (a Secret or ConfigMap created later lets it start).
                    if e.message != last_error:
                        last_error = e.message
                        for container in containers:
                            self.container_states[container["name"]] = {"waiting": {"reason": e.reason, "message": e.message}}
                        reason = "FailedMount" if e.reason == "ContainerCreating" else "Failed"
                        await self.kubelet.events.post(self.pod, reason, e.message, kind="Warning", host=self._node)
                        await self.report()
                    await asyncio.sleep(CONFIG_RETRY)
                    if self._stopping:
                        return
            if last_error:
                self.container_states.clear()
            await asyncio.gather(*(self._run_container(c) for c in containers))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("sandbox kubelet: pod %s/%s failed unexpectedly", self.namespace, self.name)

    async def _annotate_ports(self) -> None:
        """`ascend.mlops.dev/sandbox-ports` on the pod: where each containerPort listens on this machine."""
        if not self.local_ports:
            return
        value = json.dumps({str(k): v for k, v in sorted(self.local_ports.items())}, sort_keys=True)
        if (self.pod["metadata"].get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_PORTS) == value:
            return
        try:
            updated = await self.kubelet.client.patch(
                "v1", "pods", self.namespace, self.name, {"metadata": {"annotations": {constants.ANNOTATION_SANDBOX_PORTS: value}}}
            )
        except (ApiError, aiohttp.ClientError) as e:
            logger.debug("sandbox kubelet: ports of %s/%s not annotated: %s", self.namespace, self.name, e)
            return
        if updated:
            self.pod = updated

    @property
    def _node(self) -> str:
        return str(self.pod.get("spec", {}).get("nodeName", ""))

    async def _lookup_refs(self, containers: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
        wanted: set[tuple[str, str]] = set()
        for container in containers:
            for source in container.get("envFrom") or []:
                if "configMapRef" in source:
                    wanted.add(("ConfigMap", source["configMapRef"].get("name", "")))
                if "secretRef" in source:
                    wanted.add(("Secret", source["secretRef"].get("name", "")))
            for item in container.get("env") or []:
                source = item.get("valueFrom") or {}
                if "configMapKeyRef" in source:
                    wanted.add(("ConfigMap", source["configMapKeyRef"].get("name", "")))
                if "secretKeyRef" in source:
                    wanted.add(("Secret", source["secretKeyRef"].get("name", "")))
        found: dict[tuple[str, str], dict[str, str]] = {}
        for kind, name in wanted:
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            obj = await self.kubelet.client.get("v1", plural, self.namespace, name)
            if obj is None:
                continue
            data = dict(obj.get("data") or {})
            if kind == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                data.update(obj.get("stringData") or {})
            found[(kind, name)] = data
        return found

    async def _mount_object_volumes(self, volumes: Mapping[str, Path]) -> None:
        """Write every secret/configMap volume from the API's current objects (PodConfigError if one is missing)."""
        async with self._volume_lock:
            for source in self.object_volumes:
                obj = await self.kubelet.client.get("v1", source.plural, self.namespace, source.name)
                podrun.write_atomically(volumes[source.volume], podrun.volume_payload(source, obj))
                self._volume_versions[source.volume] = _version(obj)
            self._volume_dirs = {source.volume: volumes[source.volume] for source in self.object_volumes}

    async def object_changed(self, kind: str, namespace: str, name: str, obj: Mapping[str, Any] | None) -> None:
        """A Secret or ConfigMap was written (or deleted: `obj` None): rewrite the volumes that show it."""
        if namespace != self.namespace:
            return
        async with self._volume_lock:
            if self._stopping:
                return  # its volumes are being removed
            for source in self.object_volumes:
                local = self._volume_dirs.get(source.volume)
                if local is None or source.kind != kind or source.name != name:
                    continue  # not written yet: the first write reads the current object itself
                version = _version(obj)
                if obj is not None and version < self._volume_versions.get(source.volume, 0):
                    continue  # older than what the volume shows (a lagging watch)
                try:
                    payload = podrun.volume_payload(source, obj)
                except podrun.PodConfigError as e:
                    # As the kubelet: a volume whose object went away keeps its last files.
                    logger.debug("sandbox kubelet: volume %s of %s/%s kept: %s", source.volume, self.namespace, self.name, e.message)
                    continue
                if podrun.write_atomically(local, payload):
                    logger.info("sandbox kubelet: volume %s of pod %s/%s updated from %s %s", source.volume, self.namespace, self.name, kind, name)
                self._volume_versions[source.volume] = version

    async def _image_refused(self, container: Mapping[str, Any]) -> None:
        allowed = ", ".join(sorted(self.kubelet.config.allowed_images))
        image = container.get("image", "")
        message = (
            f'Failed to pull image "{image}": the sandbox runs only the project\'s own workload images '
            f"({allowed}); set ASCEND_MLOPS_TRAINER_IMAGE / _CONVERTER_IMAGE / _SERVER_IMAGE to change them"
        )
        for reason in ("ErrImagePull", "ImagePullBackOff"):
            for c in self.pod.get("spec", {}).get("containers") or []:
                self.container_states[c["name"]] = {"waiting": {"reason": reason, "message": message}}
            await self.kubelet.events.post(self.pod, "Failed", message, kind="Warning", host=self._node)
            await self.report()
            await asyncio.sleep(1.0)
        await self.kubelet.events.post(self.pod, "BackOff", f'Back-off pulling image "{image}"', host=self._node)

    async def _run_container(self, container: Mapping[str, Any]) -> None:
        name = container["name"]
        plan = self.plans[name]
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        self.restart_counts.setdefault(name, 0)
        backoff = INITIAL_BACKOFF
        deadline = self.pod.get("spec", {}).get("activeDeadlineSeconds")
        while not self._stopping:
            log = self.log_path(name)
            if log.exists() and self.restart_counts[name] > 0:
                log.replace(self.log_path(name, previous=True))
            with contextlib.suppress(FileNotFoundError):
                plan.termination_log.unlink()
            plan.cwd.mkdir(parents=True, exist_ok=True)
            started_at = now_rfc3339()
            started_mono = asyncio.get_running_loop().time()
            try:
                with log.open("ab") as log_file:
                    process = await asyncio.create_subprocess_exec(
                        *plan.argv, env=plan.env, cwd=plan.cwd, stdin=asyncio.subprocess.DEVNULL,
                        stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True, preexec_fn=_set_parent_death_signal,
                    )
            except OSError as e:
                self.container_states[name] = {"waiting": {"reason": "RunContainerError", "message": f"failed to start {plan.argv[0]}: {e}"}}
                await self.kubelet.events.post(self.pod, "Failed", f"Error: {e}", kind="Warning", host=self._node)
                await self.report()
                return
            self.processes[name] = process
            self.kubelet.track(process.pid)
            if self.restart_counts[name] == 0:
                await self.kubelet.events.post(self.pod, "Pulled", f'Container image "{container.get("image")}" already present on machine', host=self._node)
            await self.kubelet.events.post(self.pod, "Created", f"Created container: {name}", host=self._node)
            await self.kubelet.events.post(self.pod, "Started", f"Started container {name}", host=self._node)
            self.container_states[name] = {"running": {"startedAt": started_at}}
            self.ready[name] = "readinessProbe" not in container
            self.started[name] = "startupProbe" not in container
            await self.report()

            probes = asyncio.create_task(self._probe_loop(container, process))
            try:
                if deadline:
                    remaining = float(deadline) - (datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(self.start_time.replace("Z", "+00:00"))).total_seconds()
                    try:
                        await asyncio.wait_for(process.wait(), max(remaining, 0.0))
                    except TimeoutError:
                        self.reason, self.message = "DeadlineExceeded", f"Pod was active on the node longer than the specified deadline ({deadline}s)"
                        await self._kill(name, self.kubelet.config.max_grace)
                        self._stopping = True
                else:
                    await process.wait()
            finally:
                probes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probes
            self.kubelet.untrack(process.pid)
            code = process.returncode if process.returncode is not None else -9
            exit_code = code if code >= 0 else 128 + (-code)
            message = podrun.read_termination_message(
                plan.termination_log, log, container.get("terminationMessagePolicy", "File"), exit_code
            )
            terminated: dict[str, Any] = {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": started_at, "finishedAt": now_rfc3339(),
                "containerID": f"sandbox://{process.pid}",
            }
            if code < 0:
                terminated["signal"] = -code
            if message:
                terminated["message"] = message
            self.ready[name] = False
            if self._stopping:
                self.container_states[name] = {"terminated": terminated}
                await self.report()
                return
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            if not restart:
                self.container_states[name] = {"terminated": terminated}
                await self.report()
                return
            ran_for = asyncio.get_running_loop().time() - started_mono
            if ran_for > BACKOFF_RESET_AFTER:
                backoff = INITIAL_BACKOFF
            self.last_state[name] = {"terminated": terminated}
            self.container_states[name] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {int(backoff)}s restarting failed container={name} pod={self.name}_{self.namespace}({self.uid})",
                }
            }
            await self.report()
            await self.kubelet.events.post(self.pod, "BackOff", f"Back-off restarting failed container {name} in pod {self.name}_{self.namespace}({self.uid})", kind="Warning", host=self._node)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.restart_counts[name] += 1

    async def _probe_loop(self, container: Mapping[str, Any], process: asyncio.subprocess.Process) -> None:
        name = container["name"]
        plan = self.plans[name]
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        liveness = container.get("livenessProbe")
        loop = asyncio.get_running_loop()
        began = loop.time()
        counters: dict[str, tuple[int, int]] = {}  # probe -> (successes, failures) in a row
        due: dict[str, float] = {}
        for kind, probe in (("startup", startup), ("readiness", readiness), ("liveness", liveness)):
            if probe:
                due[kind] = began + float(probe.get("initialDelaySeconds", 0))
        while process.returncode is None:
            now = loop.time()
            for kind, probe in (("startup", startup), ("readiness", readiness), ("liveness", liveness)):
                if not probe or now < due.get(kind, 0):
                    continue
                if kind != "startup" and not self.started.get(name, True):
                    continue
                if kind == "startup" and self.started.get(name):
                    continue
                due[kind] = now + float(probe.get("periodSeconds", 10))
                ok, detail = await _probe(probe, plan)
                successes, failures = counters.get(kind, (0, 0))
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                counters[kind] = (successes, failures)
                if kind == "startup":
                    if ok:
                        self.started[name] = True
                        if not readiness:
                            self.ready[name] = True
                        await self.report()
                    elif failures >= int(probe.get("failureThreshold", 3)):
                        await self.kubelet.events.post(self.pod, "Unhealthy", f"Startup probe failed: {detail}", kind="Warning", host=self._node)
                        await self.kubelet.events.post(self.pod, "Killing", f"Container {name} failed startup probe, will be restarted", host=self._node)
                        await self._kill(name, self.kubelet.config.max_grace)
                        return
                elif kind == "readiness":
                    if ok and successes >= int(probe.get("successThreshold", 1)) and not self.ready.get(name):
                        self.ready[name] = True
                        await self.report()
                    elif not ok and failures >= int(probe.get("failureThreshold", 3)) and self.ready.get(name):
                        self.ready[name] = False
                        await self.kubelet.events.post(self.pod, "Unhealthy", f"Readiness probe failed: {detail}", kind="Warning", host=self._node)
                        await self.report()
                elif not ok and failures >= int(probe.get("failureThreshold", 3)):
                    await self.kubelet.events.post(self.pod, "Unhealthy", f"Liveness probe failed: {detail}", kind="Warning", host=self._node)
                    await self.kubelet.events.post(self.pod, "Killing", f"Container {name} failed liveness probe, will be restarted", host=self._node)
                    await self._kill(name, self.kubelet.config.max_grace)
                    return
            await asyncio.sleep(0.25)

    # ------------------------------------------------------------------ status
    def build_status(self) -> dict[str, Any]:
        containers = self.pod.get("spec", {}).get("containers") or []
        statuses = []
        for container in containers:
            name = container["name"]
            state = self.container_states.get(name) or {"waiting": {"reason": "ContainerCreating"}}
            status: dict[str, Any] = {
                "name": name, "image": container.get("image", ""), "imageID": f"sandbox://{container.get('image', '')}",
                "ready": bool(self.ready.get(name)) and "running" in state,
                "started": "running" in state and bool(self.started.get(name, True)),
                "restartCount": self.restart_counts.get(name, 0),
                "state": state, "lastState": self.last_state.get(name, {}),
            }
            if "running" in state or "terminated" in state:
                process = self.processes.get(name)
                if process is not None:
                    status["containerID"] = f"sandbox://{process.pid}"
            statuses.append(status)
        terminated = [s["state"]["terminated"] for s in statuses if "terminated" in s["state"]]
        if self.reason == "DeadlineExceeded":
            phase = "Failed"
        elif containers and len(terminated) == len(containers):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in terminated) else "Failed"
        elif any("running" in s["state"] for s in statuses) or any(s["restartCount"] for s in statuses):
            phase = "Running"
        else:
            phase = "Pending"
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        now = now_rfc3339()
        not_ready = [s["name"] for s in statuses if not s["ready"]]
        unready_message = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
        conditions = [
            _condition("PodReadyToStartContainers", True, now=now),
            _condition("Initialized", True, now=now),
            _condition("Ready", all_ready, "" if all_ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"), unready_message, now),
            _condition("ContainersReady", all_ready, "" if all_ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"), unready_message, now),
            _condition("PodScheduled", True, now=now),
        ]
        old_conditions = self.pod.get("status", {}).get("conditions") or []
        status_out: dict[str, Any] = {
            "phase": phase,
            "conditions": _merge_conditions(old_conditions, conditions),
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
        }
        if self.reason:
            status_out["reason"] = self.reason
            status_out["message"] = self.message or ""
        return status_out

    async def report(self) -> None:
        async with self._status_lock:
            status = self.build_status()
            comparable = _without_times(status)
            if comparable == self._last_status:
                return
            try:
                updated = await self.kubelet.client.patch("v1", "pods", self.namespace, self.name, {"status": status}, subresource="status")
            except ApiError as e:
                if e.status != 404:
                    logger.warning("sandbox kubelet: status of %s/%s not written: %s", self.namespace, self.name, e)
                return
            except aiohttp.ClientError as e:
                logger.debug("sandbox kubelet: status of %s/%s not written: %s", self.namespace, self.name, e)
                return
            self._last_status = comparable
            if updated:
                self.pod = updated


def _version(obj: Mapping[str, Any] | None) -> int:
    """An object's resourceVersion as a number (the sandbox API counts up; 0 when absent or opaque)."""
    value = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else 0


def _without_times(status: Mapping[str, Any]) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("lastTransitionTime", "lastProbeTime")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(status)


async def _probe(probe: Mapping[str, Any], plan: podrun.ContainerPlan) -> tuple[bool, str]:
    timeout = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        http = probe["httpGet"]
        port = podrun.probe_port(http.get("port"), plan)
        if port is None:
            return False, f"port {http.get('port')!r} is not a containerPort of the container"
        url = f"http://127.0.0.1:{port}{http.get('path', '/')}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
                async with session.get(url) as response:
                    if 200 <= response.status < 400:
                        return True, ""
                    return False, f"HTTP probe failed with statuscode: {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return False, f'Get "{url}": {type(e).__name__}: {e}'
    if "tcpSocket" in probe:
        port = podrun.probe_port(probe["tcpSocket"].get("port"), plan)
        if port is None:
            return False, "unknown port"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            writer.close()
            return True, ""
        except (OSError, TimeoutError) as e:
            return False, f"dial tcp 127.0.0.1:{port}: {e}"
    if "exec" in probe:
        return True, ""  # exec probes are not run by the sandbox; they count as passing
    return True, ""


class Kubelet:
    """Scheduler + kubelet for the simulated nodes, fed by list+watch of the API."""

    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self.client = KubeClient(config.api_url)
        self.events = Events(self.client)
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> pod
        self.nodes: dict[str, dict[str, Any]] = {}
        self.workers: dict[str, PodWorker] = {}
        self.terminating: dict[str, tuple[PodWorker, asyncio.Task[None]]] = {}  # uid -> worker being stopped
        self.unschedulable: dict[str, str] = {}  # uid -> last message reported
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._pids: set[int] = set()
        self._stopped = False
        from ascend_mlops.sandbox.controllers import DeploymentController
        from ascend_mlops.sandbox.gateway import Gateway
        from ascend_mlops.sandbox.proxy import ServiceProxy

        self.deployments = DeploymentController(self)
        self.proxy = ServiceProxy(self)
        self.gateway = Gateway(self)

    # Processes, for the "nothing left running" guarantee.
    def track(self, pid: int) -> None:
        self._pids.add(pid)

    def untrack(self, pid: int) -> None:
        self._pids.discard(pid)

    def log_path(self, namespace: str, pod: str, container: str | None, previous: bool) -> Path | None:
        for worker in [*self.workers.values(), *(w for w, _ in self.terminating.values())]:
            if worker.namespace == namespace and worker.name == pod:
                name = container or next(iter(worker.plans), "")
                return worker.log_path(name, previous)
        return None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self.config.pods_dir.mkdir(parents=True, exist_ok=True)
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        now = now_rfc3339()
        for node_config in self.config.nodes:
            node = scheduling.node_object(node_config, now)
            existing = await self.client.get("v1", "nodes", None, node_config.name)
            if existing is None:
                created = await self.client.create("v1", "nodes", None, {k: v for k, v in node.items() if k != "status"})
                self.nodes[node_config.name] = created
            await self.client.patch("v1", "nodes", None, node_config.name, {"status": node["status"]}, subresource="status")
        self._tasks = [
            asyncio.create_task(self._watch("v1", "pods", self._on_pod), name="kubelet watch pods"),
            asyncio.create_task(self._watch("v1", "nodes", self._on_node), name="kubelet watch nodes"),
            asyncio.create_task(self._watch("apps/v1", "deployments", self.deployments.on_event), name="kubelet watch deployments"),
            asyncio.create_task(self._watch("v1", "services", self.proxy.on_event), name="kubelet watch services"),
            asyncio.create_task(self._watch("v1", "secrets", self._on_secret), name="kubelet watch secrets"),
            asyncio.create_task(self._watch("v1", "configmaps", self._on_config_map), name="kubelet watch configmaps"),
            asyncio.create_task(self.gateway.watch(), name="kubelet watch httproutes"),
            asyncio.create_task(self._loop(), name="kubelet loop"),
            asyncio.create_task(self._heartbeat(), name="kubelet heartbeat"),
        ]

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        terminating = list(self.terminating.values())
        for _, task in terminating:
            task.cancel()
        for _, task in terminating:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        stopping = [*self.workers.values(), *(w for w, _ in terminating)]
        await asyncio.gather(*(worker.stop() for worker in stopping), return_exceptions=True)
        self.workers.clear()
        self.terminating.clear()
        await self.proxy.stop()
        await self.gateway.stop()
        for pid in list(self._pids):  # belt and braces: anything a worker did not reap
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        await self.client.close()

    async def _watch(self, api_version: str, plural: str, handler: Any) -> None:
        async for kind, obj in self.client.watch(api_version, plural):
            try:
                await handler(kind, obj)
            except Exception:
                logger.exception("sandbox kubelet: handling %s %s failed", kind, plural)
            self.wake()

    async def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            self.pods.pop(uid, None)
            self.unschedulable.pop(uid, None)
        else:
            self.pods[uid] = pod
            worker = self.workers.get(uid)
            if worker is not None:
                worker.pod = pod

    async def _on_secret(self, kind: str, obj: dict[str, Any]) -> None:
        await self._object_changed("Secret", kind, obj)

    async def _on_config_map(self, kind: str, obj: dict[str, Any]) -> None:
        await self._object_changed("ConfigMap", kind, obj)

    async def _object_changed(self, object_kind: str, event: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
        current = None if event == "DELETED" else obj
        for worker in list(self.workers.values()):
            if worker.object_volumes:
                await worker.object_changed(object_kind, namespace, name, current)

    async def _on_node(self, kind: str, node: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.nodes.pop(node["metadata"]["name"], None)
        else:
            self.nodes[node["metadata"]["name"]] = node

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(30)
            now = now_rfc3339()
            for name in list(self.nodes):
                ready = next((c for c in self.nodes[name].get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), None)
                if ready is None:
                    continue
                patched = {**ready, "lastHeartbeatTime": now}
                with contextlib.suppress(ApiError, aiohttp.ClientError):
                    await self.client.patch("v1", "nodes", None, name, {"status": {"conditions": [patched]}}, subresource="status")

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 2.0)
            self._wake.clear()
            try:
                await self._schedule()
                await self._sync_workers()
                await self.deployments.sync()
                await self.proxy.sync()
                await self.gateway.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sandbox kubelet: sync failed")

    async def _schedule(self) -> None:
        ours = set(self.nodes)
        pending = [
            p for p in self.pods.values()
            if not p.get("spec", {}).get("nodeName")
            and p.get("spec", {}).get("schedulerName", SCHEDULER) == SCHEDULER
            and not p["metadata"].get("deletionTimestamp")
        ]
        if not pending:
            return
        pending.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
        usage = scheduling.node_usage(self.pods.values())
        nodes: list[Mapping[str, Any]] = [self.nodes[name] for name in sorted(ours)]
        for pod in pending:
            uid = pod["metadata"]["uid"]
            decision = scheduling.schedule(pod, nodes, usage)
            ns, name = pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
            if decision.node is None:
                if self.unschedulable.get(uid) == decision.message:
                    continue
                self.unschedulable[uid] = decision.message
                condition = _condition("PodScheduled", False, "Unschedulable", decision.message)
                with contextlib.suppress(ApiError):
                    await self.client.patch("v1", "pods", ns, name, {"status": {"phase": "Pending", "conditions": [condition]}}, subresource="status")
                await self.events.post(pod, "FailedScheduling", decision.message, kind="Warning", component=SCHEDULER)
                continue
            try:
                await self.client.request(
                    "POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding",
                    body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": decision.node}},
                )
            except ApiError as e:
                logger.debug("binding %s/%s failed: %s", ns, name, e)
                continue
            self.unschedulable.pop(uid, None)
            pod.setdefault("spec", {})["nodeName"] = decision.node
            for key, amount in scheduling.pod_requests(pod).items():
                usage.setdefault(decision.node, {})[key] = usage.get(decision.node, {}).get(key, 0.0) + amount
            usage.setdefault(decision.node, {})["pods"] = usage.get(decision.node, {}).get("pods", 0.0) + 1
            await self.events.post(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {decision.node}", component=SCHEDULER)

    async def _sync_workers(self) -> None:
        ours = {config.name for config in self.config.nodes}
        for uid, pod in list(self.pods.items()):
            if uid in self.workers or uid in self.terminating or pod.get("spec", {}).get("nodeName") not in ours:
                continue
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue  # finished before this kubelet started: nothing to run again
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
        for uid in [u for u in self.workers if u not in self.pods or self.pods[u]["metadata"].get("deletionTimestamp")]:
            worker = self.workers.pop(uid)
            worker.leave_endpoints()
            task = asyncio.create_task(self._terminate(uid, worker), name=f"stop pod {worker.namespace}/{worker.name}")
            self.terminating[uid] = (worker, task)

    async def _terminate(self, uid: str, worker: PodWorker) -> None:
        try:
            if worker.local_ports and any(p.returncode is None for p in worker.processes.values()):
                await asyncio.sleep(self.config.endpoint_settle)
            await worker.stop()
            if uid in self.pods:
                # A pod with finalizers waits for the kubelet to confirm its containers are gone.
                with contextlib.suppress(ApiError, aiohttp.ClientError):
                    await self.client.delete("v1", "pods", worker.namespace, worker.name)
        finally:
            if self.terminating.get(uid, (None,))[0] is worker:
                del self.terminating[uid]
            self.wake()

    def ready_endpoints(self, selector: Mapping[str, str], namespace: str) -> list[tuple[dict[str, Any], PodWorker]]:
        """Ready, not terminating pods the selector matches (what an EndpointSlice lists as ready)."""
        result = []
        for uid, worker in self.workers.items():
            pod = self.pods.get(uid)
            if pod is None or worker.namespace != namespace or pod["metadata"].get("deletionTimestamp"):
                continue
            labels = pod["metadata"].get("labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if worker.serving:
                result.append((pod, worker))
        return result


def allowed_images_from_settings(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The workload images the operator's settings name (the only ones the sandbox runs)."""
    from ascend_mlops.settings import Settings

    settings = Settings.from_env(env)
    return frozenset({settings.trainer_image, settings.converter_image, settings.server_image})
