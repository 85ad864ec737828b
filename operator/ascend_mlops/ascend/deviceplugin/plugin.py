"""The SIMULATED Ascend device plugin: `v1beta1` DevicePlugin server + kubelet registration.

Lifecycle, as the kubelet expects of any device plugin:

1. serve `DevicePlugin` on `<dir>/<endpoint>` (a unix socket);
2. call `Registration.Register` on `<dir>/kubelet.sock` with version
   `v1beta1`, the socket's file name and the resource name;
3. the kubelet then connects back: `GetDevicePluginOptions`, a long-lived
   `ListAndWatch` stream (the devices now, and again on every change), and
   `GetPreferredAllocation` / `Allocate` when it places a container;
4. when the kubelet restarts it wipes the directory and creates a new
   `kubelet.sock`: the plugin notices (it watches the socket's identity and
   its own socket), serves on a fresh socket and registers again;
5. on stop: ListAndWatch streams end, the server stops, the socket is removed.

Devices are `<name>-<n>` (`Ascend310-0`, ...), as Huawei's plugin names the
physical devices of resource `huawei.com/<name>`; all start Healthy.
`Allocate` answers with Huawei's environment (`ASCEND_VISIBLE_DEVICES`, the
physical ids, and an empty `ASCEND_RUNTIME_OPTIONS`) and nothing else: there
are no device nodes or driver files to hand over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import grpc.aio

from ascend_mlops.ascend.deviceplugin import api_pb2 as api
from ascend_mlops.ascend.deviceplugin import protocol, visible

log = logging.getLogger(__name__)

DEFAULT_RESOURCE: Final = "huawei.com/Ascend310"
MAX_DEVICES: Final = 64
# <dns subdomain>/<name>, as the kubelet accepts extended resource names.
_RESOURCE_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.[a-z0-9]+/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SOCKET_PATH_MAX: Final = 107  # sun_path holds 108 bytes with the terminating NUL


class RegistrationRejected(RuntimeError):
    """The kubelet answered Register with an error: the API says the plugin should exit."""


@dataclass(frozen=True)
class PluginConfig:
    resource: str = DEFAULT_RESOURCE
    devices: int = 4
    directory: Path = Path(protocol.DEFAULT_DIRECTORY)
    # Socket file name in `directory`; default `<name>-simulated.sock`.
    endpoint: str = ""
    # How often the kubelet socket and the plugin's own socket are checked.
    watch_interval: float = 1.0
    rpc_timeout: float = 10.0

    def validate(self) -> None:
        if not _RESOURCE_RE.match(self.resource):
            raise ValueError(f"--resource {self.resource!r} is not an extended resource name like {DEFAULT_RESOURCE}")
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ValueError(f"--devices {self.devices}: give 1 to {MAX_DEVICES} simulated devices")
        if "/" in self.socket_name or self.socket_name in ("", protocol.KUBELET_SOCKET):
            raise ValueError(f"--endpoint {self.socket_name!r} must be a file name other than {protocol.KUBELET_SOCKET}")
        if self.watch_interval <= 0:
            raise ValueError(f"--watch-interval {self.watch_interval} must be positive")
        if len(str(self.socket_path)) > _SOCKET_PATH_MAX:
            raise ValueError(f"{self.socket_path} is longer than a unix socket path may be ({_SOCKET_PATH_MAX} bytes)")

    @property
    def device_prefix(self) -> str:
        return self.resource.rsplit("/", 1)[-1]

    @property
    def socket_name(self) -> str:
        return self.endpoint or f"{self.device_prefix}-simulated.sock"

    @property
    def socket_path(self) -> Path:
        return self.directory / self.socket_name

    @property
    def kubelet_socket(self) -> Path:
        return self.directory / protocol.KUBELET_SOCKET


def _socket_identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, change time) of a unix socket, None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class SimulatedAscendPlugin:
    """`async with SimulatedAscendPlugin(config) as plugin: await plugin.wait_stopped()`, or `await plugin.run()`."""

    def __init__(self, config: PluginConfig) -> None:
        config.validate()
        self.config = config
        self.health: dict[str, str] = {
            f"{config.device_prefix}-{i}": protocol.HEALTHY for i in range(config.devices)
        }
        self.registrations = 0
        self._generation = 0
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._served: tuple[int, int, int] | None = None  # identity of the socket we serve on
        self._registered_with: tuple[int, int, int] | None = None  # identity of the kubelet.sock we registered with
        self._watch: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    # -- devices ------------------------------------------------------------
    def physical_id(self, device_id: str) -> int:
        return int(device_id.rsplit("-", 1)[1])

    async def set_health(self, device_id: str, healthy: bool) -> None:
        """Mark a simulated device (Un)healthy; every ListAndWatch stream gets the new list."""
        if device_id not in self.health:
            raise KeyError(device_id)
        state = protocol.HEALTHY if healthy else protocol.UNHEALTHY
        if self.health[device_id] != state:
            self.health[device_id] = state
            log.info("simulated device %s is now %s", device_id, state)
            await self._notify()

    def _device_list(self) -> api.ListAndWatchResponse:
        return api.ListAndWatchResponse(
            devices=[api.Device(ID=device, health=health) for device, health in self.health.items()]
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()

    # -- DevicePlugin service ---------------------------------------------------
    async def get_device_plugin_options(self, request: api.Empty, context: grpc.aio.ServicerContext) -> api.DevicePluginOptions:
        return self._options()

    def _options(self) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    async def list_and_watch(self, request: api.Empty, context: grpc.aio.ServicerContext) -> AsyncIterator[api.ListAndWatchResponse]:
        sent = -1
        log.info("kubelet opened ListAndWatch")
        while True:
            async with self._changed:
                while self._generation == sent and not self._stopping.is_set():
                    await self._changed.wait()
                if self._stopping.is_set():
                    log.info("ListAndWatch ends: the plugin stops")
                    return
                sent = self._generation
                response = self._device_list()
            log.info(
                "ListAndWatch: %s",
                ", ".join(f"{d.ID} {d.health}" for d in response.devices),
            )
            yield response

    async def get_preferred_allocation(
        self, request: api.PreferredAllocationRequest, context: grpc.aio.ServicerContext
    ) -> api.PreferredAllocationResponse:
        responses = []
        for wanted in request.container_requests:
            chosen = list(wanted.must_include_deviceIDs)
            for device in sorted(wanted.available_deviceIDs, key=self._sort_key):
                if len(chosen) >= wanted.allocation_size:
                    break
                if device not in chosen and self.health.get(device) == protocol.HEALTHY:
                    chosen.append(device)
            responses.append(api.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api.PreferredAllocationResponse(container_responses=responses)

    def _sort_key(self, device_id: str) -> tuple[int, str]:
        try:
            return (self.physical_id(device_id), device_id)
        except (IndexError, ValueError):
            return (MAX_DEVICES, device_id)

    async def allocate(self, request: api.AllocateRequest, context: grpc.aio.ServicerContext) -> api.AllocateResponse:
        responses = []
        for wanted in request.container_requests:
            unknown = [d for d in wanted.devices_ids if d not in self.health]
            if unknown:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown device(s) {', '.join(unknown)}: this simulated plugin has {', '.join(self.health)}",
                )
            ids = [self.physical_id(d) for d in wanted.devices_ids]
            envs = {visible.ENV_VISIBLE_DEVICES: visible.format_ids(ids), visible.ENV_RUNTIME_OPTIONS: ""}
            log.info("Allocate %s: %s", ", ".join(wanted.devices_ids), envs)
            responses.append(api.ContainerAllocateResponse(envs=envs))
        return api.AllocateResponse(container_responses=responses)

    async def pre_start_container(
        self, request: api.PreStartContainerRequest, context: grpc.aio.ServicerContext
    ) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> SimulatedAscendPlugin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serve, register if the kubelet is there, and watch for kubelet restarts."""
        self.config.directory.mkdir(parents=True, exist_ok=True)
        log.warning(
            "SIMULATED Ascend device plugin: %d simulated %s devices (%s), no NPU behind them",
            self.config.devices, self.config.resource, ", ".join(self.health),
        )
        await self._serve()
        try:
            await self._tick()
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._watch_loop(), name="device-plugin-watch")

    async def run(self) -> None:
        """Until `stop()` (or a rejected registration, raised)."""
        async with self:
            await self.wait_stopped()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()
        if self._failure is not None:
            raise self._failure

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        async with self._changed:
            self._changed.notify_all()  # ListAndWatch streams return
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._stop_server()
        log.info("device plugin stopped")

    async def _serve(self) -> None:
        await self._stop_server()
        path = self.config.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of an earlier run
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((protocol.device_plugin_handler(self),))
        if server.add_insecure_port(protocol.unix_target(str(path))) == 0:
            raise OSError(f"cannot listen on {path}")
        await server.start()
        self._server = server
        self._served = _socket_identity(path)
        self._registered_with = None
        log.info("serving the v1beta1 DevicePlugin API on %s", path)

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(grace=1.0)
        # Remove the socket only if it is still ours (a restarted kubelet may have wiped it already).
        if self._served is not None and _socket_identity(self.config.socket_path) == self._served:
            with contextlib.suppress(FileNotFoundError):
                self.config.socket_path.unlink()
        self._served = None

    async def _watch_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.config.watch_interval)
                if not self._stopping.is_set():
                    await self._tick()
        except RegistrationRejected as exc:
            self._failure = exc
            self._stopping.set()

    async def _tick(self) -> None:
        """One look at the directory: re-serve when our socket went, register when kubelet.sock is new."""
        kubelet = _socket_identity(self.config.kubelet_socket)
        if kubelet is None:
            if self._registered_with is not None:
                log.warning("%s is gone: the kubelet stopped; waiting for it to come back", self.config.kubelet_socket)
                self._registered_with = None
            return
        if _socket_identity(self.config.socket_path) != self._served:
            log.warning("%s was removed (kubelet restart): serving on a new socket", self.config.socket_path)
            await self._serve()
        if kubelet != self._registered_with:
            if await self._register():
                self._registered_with = kubelet

    async def _register(self) -> bool:
        request = api.RegisterRequest(
            version=protocol.VERSION,
            endpoint=self.config.socket_name,
            resource_name=self.config.resource,
            options=self._options(),
        )
        target = protocol.unix_target(str(self.config.kubelet_socket))
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await protocol.RegistrationStub(channel).register(request, timeout=self.config.rpc_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.info("kubelet at %s not answering yet (%s); retrying", target, exc.code().name)
                return False
            raise RegistrationRejected(
                f"the kubelet refused to register {self.config.resource} from {self.config.socket_name}: "
                f"{exc.code().name}: {exc.details()}"
            ) from None
        self.registrations += 1
        log.info(
            "registered %s (%d simulated devices, endpoint %s) with the kubelet at %s",
            self.config.resource, self.config.devices, self.config.socket_name, self.config.kubelet_socket,
        )
        return True


def socket_exists(path: Path) -> bool:
    return _socket_identity(path) is not None
