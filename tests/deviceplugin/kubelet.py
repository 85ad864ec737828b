"""A test kubelet: the device manager side of the kubelet device plugin API `v1beta1`.

It serves `Registration` on `kubelet.sock` and, for every plugin that
registers, connects back to the plugin's socket as the real kubelet does:
`GetDevicePluginOptions`, then a long-lived `ListAndWatch` stream whose device
lists it records; tests call `Allocate` / `GetPreferredAllocation` through it.
A restart removes every socket in the directory, as the kubelet's device
manager does when it starts, and creates a new `kubelet.sock`.

It uses the generated messages but its own literal method paths, so a wrong
service or method name in the plugin's glue fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from ascend_mlops.ascend.deviceplugin import api_pb2 as api

REGISTER = "/v1beta1.Registration/Register"
GET_OPTIONS = "/v1beta1.DevicePlugin/GetDevicePluginOptions"
LIST_AND_WATCH = "/v1beta1.DevicePlugin/ListAndWatch"
GET_PREFERRED = "/v1beta1.DevicePlugin/GetPreferredAllocation"
ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
PRE_START = "/v1beta1.DevicePlugin/PreStartContainer"


@dataclass
class PluginConnection:
    request: api.RegisterRequest
    channel: grpc.aio.Channel
    options: api.DevicePluginOptions | None = None
    lists: list[dict[str, str]] = field(default_factory=list)  # each ListAndWatch message: ID -> health
    stream_ended: bool = False
    stream_error: str | None = None
    task: asyncio.Task[None] | None = None

    def call(self, path: str, request_type: Any, response_type: Any) -> Any:
        return self.channel.unary_unary(
            path, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString
        )


class TestKubelet:
    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "kubelet.sock"
        self.registrations: list[api.RegisterRequest] = []
        self.plugins: dict[str, PluginConnection] = {}  # resource -> latest connection
        self.rejected: list[str] = []
        self.reject_with: tuple[grpc.StatusCode, str] | None = None
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "v1beta1.Registration",
            {
                "Register": grpc.unary_unary_rpc_method_handler(
                    self._register,
                    request_deserializer=api.RegisterRequest.FromString,
                    response_serializer=api.Empty.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        assert server.add_insecure_port(f"unix://{self.socket}") != 0
        await server.start()
        self._server = server

    async def stop(self) -> None:
        for connection in self.plugins.values():
            await self._disconnect(connection)
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    async def restart(self) -> None:
        """Stop, wipe the directory's sockets (as the device manager does at start), start again."""
        await self.stop()
        for path in self.directory.iterdir():
            if path.is_socket():
                path.unlink()
        await self.start()

    async def _disconnect(self, connection: PluginConnection) -> None:
        if connection.task is not None:
            connection.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection.task
        await connection.channel.close()

    async def _register(self, request: api.RegisterRequest, context: grpc.aio.ServicerContext) -> api.Empty:
        if self.reject_with is not None:
            self.rejected.append(request.resource_name)
            await context.abort(*self.reject_with)
        if request.version != "v1beta1":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version!r}")
        endpoint = self.directory / request.endpoint
        if "/" in request.endpoint or not endpoint.is_socket():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no plugin socket {endpoint}")
        old = self.plugins.get(request.resource_name)
        if old is not None:
            await self._disconnect(old)
        channel = grpc.aio.insecure_channel(f"unix://{endpoint}")
        connection = PluginConnection(request=request, channel=channel)
        self.plugins[request.resource_name] = connection
        self.registrations.append(request)
        # The real kubelet answers Register first and connects back right after.
        connection.task = asyncio.create_task(self._follow(connection))
        await self._notify()
        return api.Empty()

    async def _follow(self, connection: PluginConnection) -> None:
        connection.options = await connection.call(GET_OPTIONS, api.Empty, api.DevicePluginOptions)(api.Empty(), timeout=10)
        await self._notify()
        stream = connection.channel.unary_stream(
            LIST_AND_WATCH,
            request_serializer=api.Empty.SerializeToString,
            response_deserializer=api.ListAndWatchResponse.FromString,
        )(api.Empty())
        try:
            async for response in stream:
                connection.lists.append({d.ID: d.health for d in response.devices})
                await self._notify()
        except grpc.aio.AioRpcError as exc:
            connection.stream_error = f"{exc.code().name}: {exc.details()}"
        connection.stream_ended = True
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Until predicate() is truthy (re-checked on every kubelet event and every 50 ms)."""
        async def until() -> Any:
            while True:
                value = predicate()
                if value:
                    return value
                async with self._changed:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.05)

        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    def plugin(self, resource: str = "huawei.com/Ascend310") -> PluginConnection:
        return self.plugins[resource]

    async def allocate(self, *containers: list[str], resource: str = "huawei.com/Ascend310") -> api.AllocateResponse:
        request = api.AllocateRequest(
            container_requests=[api.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
        )
        response: api.AllocateResponse = await self.plugin(resource).call(ALLOCATE, api.AllocateRequest, api.AllocateResponse)(
            request, timeout=10
        )
        return response

    async def preferred(
        self, available: list[str], must_include: list[str], size: int, resource: str = "huawei.com/Ascend310"
    ) -> list[str]:
        request = api.PreferredAllocationRequest(
            container_requests=[
                api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available, must_include_deviceIDs=must_include, allocation_size=size
                )
            ]
        )
        call = self.plugin(resource).call(GET_PREFERRED, api.PreferredAllocationRequest, api.PreferredAllocationResponse)
        response: api.PreferredAllocationResponse = await call(request, timeout=10)
        return list(response.container_responses[0].deviceIDs)

    async def pre_start(self, ids: list[str], resource: str = "huawei.com/Ascend310") -> api.PreStartContainerResponse:
        call = self.plugin(resource).call(PRE_START, api.PreStartContainerRequest, api.PreStartContainerResponse)
        response: api.PreStartContainerResponse = await call(api.PreStartContainerRequest(devices_ids=ids), timeout=10)
        return response
