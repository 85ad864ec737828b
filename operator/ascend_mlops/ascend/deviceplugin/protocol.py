"""The kubelet device plugin API `v1beta1` over gRPC: constants and service glue.

The messages are generated from `api.proto` (`api_pb2`); the two services are
wired here by hand with grpcio's generic handlers instead of generated
`*_pb2_grpc` code: it is a dozen lines, typed, and bakes no grpcio version
check into the package. Method paths come from the descriptor, so they are
the API's (`/v1beta1.DevicePlugin/Allocate`, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol

import grpc
import grpc.aio

from ascend_mlops.ascend.deviceplugin import api_pb2 as api

VERSION: Final = "v1beta1"
HEALTHY: Final = "Healthy"
UNHEALTHY: Final = "Unhealthy"
DEFAULT_DIRECTORY: Final = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET: Final = "kubelet.sock"

REGISTRATION: Final[str] = api.DESCRIPTOR.services_by_name["Registration"].full_name
DEVICE_PLUGIN: Final[str] = api.DESCRIPTOR.services_by_name["DevicePlugin"].full_name


def method_path(service: str, method: str) -> str:
    return f"/{service}/{method}"


def unix_target(path: str) -> str:
    """gRPC's address of a unix socket (absolute path)."""
    return f"unix://{path}"


class DevicePluginServicer(Protocol):
    """What a device plugin serves (the kubelet calls it)."""

    async def get_device_plugin_options(self, request: api.Empty, context: grpc.aio.ServicerContext) -> api.DevicePluginOptions: ...

    def list_and_watch(self, request: api.Empty, context: grpc.aio.ServicerContext) -> AsyncIterator[api.ListAndWatchResponse]: ...

    async def get_preferred_allocation(
        self, request: api.PreferredAllocationRequest, context: grpc.aio.ServicerContext
    ) -> api.PreferredAllocationResponse: ...

    async def allocate(self, request: api.AllocateRequest, context: grpc.aio.ServicerContext) -> api.AllocateResponse: ...

    async def pre_start_container(
        self, request: api.PreStartContainerRequest, context: grpc.aio.ServicerContext
    ) -> api.PreStartContainerResponse: ...


class RegistrationServicer(Protocol):
    """What the kubelet serves on kubelet.sock (a test kubelet implements it)."""

    async def register(self, request: api.RegisterRequest, context: grpc.aio.ServicerContext) -> api.Empty: ...


def _unary(behaviour: Callable[..., Any], request: type[Any], response: type[Any]) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


def device_plugin_handler(servicer: DevicePluginServicer) -> Any:
    """The `DevicePlugin` service for `grpc.aio.Server.add_generic_rpc_handlers`."""
    return grpc.method_handlers_generic_handler(
        DEVICE_PLUGIN,
        {
            "GetDevicePluginOptions": _unary(servicer.get_device_plugin_options, api.Empty, api.DevicePluginOptions),
            "ListAndWatch": grpc.unary_stream_rpc_method_handler(
                servicer.list_and_watch,
                request_deserializer=api.Empty.FromString,
                response_serializer=api.ListAndWatchResponse.SerializeToString,
            ),
            "GetPreferredAllocation": _unary(
                servicer.get_preferred_allocation, api.PreferredAllocationRequest, api.PreferredAllocationResponse
            ),
            "Allocate": _unary(servicer.allocate, api.AllocateRequest, api.AllocateResponse),
            "PreStartContainer": _unary(servicer.pre_start_container, api.PreStartContainerRequest, api.PreStartContainerResponse),
        },
    )


def registration_handler(servicer: RegistrationServicer) -> Any:
    """The kubelet's `Registration` service, for a test kubelet."""
    return grpc.method_handlers_generic_handler(
        REGISTRATION, {"Register": _unary(servicer.register, api.RegisterRequest, api.Empty)}
    )


class RegistrationStub:
    """Client of the kubelet's `Registration` service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._register = channel.unary_unary(
            method_path(REGISTRATION, "Register"),
            request_serializer=api.RegisterRequest.SerializeToString,
            response_deserializer=api.Empty.FromString,
        )

    async def register(self, request: api.RegisterRequest, timeout: float) -> api.Empty:
        response: api.Empty = await self._register(request, timeout=timeout)
        return response
