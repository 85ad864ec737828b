"""The simulated Ascend device plugin against a test kubelet speaking `v1beta1` over unix sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ascend_mlops.ascend.deviceplugin import protocol
from ascend_mlops.ascend.deviceplugin.plugin import (
    PluginConfig,
    RegistrationRejected,
    SimulatedAscendPlugin,
    socket_exists,
)
from tests.deviceplugin.kubelet import TestKubelet

ALL_HEALTHY = {f"Ascend310-{i}": "Healthy" for i in range(4)}


def config(directory: Path, **overrides: object) -> PluginConfig:
    return PluginConfig(directory=directory, watch_interval=0.05, rpc_timeout=2.0, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def plugin(plugin_dir: Path, kubelet: TestKubelet) -> AsyncIterator[SimulatedAscendPlugin]:
    async with SimulatedAscendPlugin(config(plugin_dir)) as running:
        yield running


async def test_registers_with_the_kubelet_and_streams_its_devices(plugin: SimulatedAscendPlugin, kubelet: TestKubelet) -> None:
    (request,) = await kubelet.wait(lambda: kubelet.registrations, what="a registration")
    assert request.version == "v1beta1"
    assert request.resource_name == "huawei.com/Ascend310"
    assert request.endpoint == "Ascend310-simulated.sock"
    assert (kubelet.directory / request.endpoint).is_socket()
    assert request.options.get_preferred_allocation_available and not request.options.pre_start_required

    connection = kubelet.plugin()
    await kubelet.wait(lambda: connection.lists, what="the first ListAndWatch message")
    assert connection.options is not None and connection.options.get_preferred_allocation_available
    assert connection.lists[0] == ALL_HEALTHY


async def test_list_and_watch_sends_the_list_again_when_a_device_changes(plugin: SimulatedAscendPlugin, kubelet: TestKubelet) -> None:
    connection = await kubelet.wait(lambda: kubelet.plugins.get("huawei.com/Ascend310"), what="registration")
    await kubelet.wait(lambda: connection.lists, what="the first list")
    await plugin.set_health("Ascend310-2", healthy=False)
    await kubelet.wait(lambda: len(connection.lists) >= 2, what="a second list")
    assert connection.lists[-1] == {**ALL_HEALTHY, "Ascend310-2": "Unhealthy"}
    await plugin.set_health("Ascend310-2", healthy=False)  # no change, no message
    await plugin.set_health("Ascend310-2", healthy=True)
    await kubelet.wait(lambda: len(connection.lists) >= 3, what="a third list")
    assert connection.lists == [ALL_HEALTHY, {**ALL_HEALTHY, "Ascend310-2": "Unhealthy"}, ALL_HEALTHY]
    # The preferred allocation skips the unhealthy device.
    await plugin.set_health("Ascend310-0", healthy=False)
    assert await kubelet.preferred(list(ALL_HEALTHY), [], 2) == ["Ascend310-1", "Ascend310-2"]


async def test_allocate_sets_ascend_visible_devices_as_huaweis_plugin_does(plugin: SimulatedAscendPlugin, kubelet: TestKubelet) -> None:
    await kubelet.wait(lambda: kubelet.plugins, what="registration")
    response = await kubelet.allocate(["Ascend310-2"], ["Ascend310-3", "Ascend310-1"])
    first, second = response.container_responses
    assert dict(first.envs) == {"ASCEND_VISIBLE_DEVICES": "2", "ASCEND_RUNTIME_OPTIONS": ""}
    assert dict(second.envs) == {"ASCEND_VISIBLE_DEVICES": "1,3", "ASCEND_RUNTIME_OPTIONS": ""}
    # Simulated devices: no device nodes, mounts or annotations to hand over.
    assert not first.devices and not first.mounts and not first.annotations and not first.cdi_devices

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await kubelet.allocate(["Ascend310-9"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Ascend310-9" in (caught.value.details() or "")

    assert await kubelet.preferred(["Ascend310-3", "Ascend310-1", "Ascend310-0"], ["Ascend310-3"], 2) == [
        "Ascend310-3", "Ascend310-0",
    ]
    await kubelet.pre_start(["Ascend310-1"])  # answered, nothing to do


async def test_registers_again_when_the_kubelet_restarts(plugin: SimulatedAscendPlugin, kubelet: TestKubelet) -> None:
    first = await kubelet.wait(lambda: kubelet.plugins.get("huawei.com/Ascend310"), what="registration")
    await kubelet.wait(lambda: first.lists, what="the first list")

    # The restart wipes the plugin's socket too; the plugin serves on a new one and registers again.
    await kubelet.restart()
    assert not socket_exists(plugin.config.socket_path)
    await kubelet.wait(lambda: len(kubelet.registrations) == 2, what="a second registration")
    second = kubelet.plugin()
    assert second is not first
    await kubelet.wait(lambda: second.lists, what="ListAndWatch on the new connection")
    assert second.lists[0] == ALL_HEALTHY
    assert socket_exists(plugin.config.socket_path)
    response = await kubelet.allocate(["Ascend310-0"])
    assert response.container_responses[0].envs["ASCEND_VISIBLE_DEVICES"] == "0"
    assert plugin.registrations == 2


async def test_waits_for_a_kubelet_that_is_not_there_yet(plugin_dir: Path) -> None:
    async with SimulatedAscendPlugin(config(plugin_dir)) as plugin:
        assert socket_exists(plugin.config.socket_path)
        assert plugin.registrations == 0
        kubelet = TestKubelet(plugin_dir)
        await kubelet.start()
        try:
            await kubelet.wait(lambda: kubelet.registrations, what="registration once the kubelet is up")
        finally:
            await kubelet.stop()


async def test_stops_cleanly_ending_the_stream_and_removing_its_socket(plugin_dir: Path, kubelet: TestKubelet) -> None:
    plugin = SimulatedAscendPlugin(config(plugin_dir))
    runner = asyncio.create_task(plugin.run())
    connection = await kubelet.wait(lambda: kubelet.plugins.get("huawei.com/Ascend310"), what="registration")
    await kubelet.wait(lambda: connection.lists, what="the first list")
    plugin.request_stop()
    await asyncio.wait_for(runner, 10)
    await kubelet.wait(lambda: connection.stream_ended, what="the end of ListAndWatch")
    assert connection.stream_error is None  # ended by the plugin, not broken
    assert not socket_exists(plugin.config.socket_path)
    assert kubelet.socket.is_socket()  # the kubelet's socket is left alone


async def test_a_refused_registration_stops_the_plugin(plugin_dir: Path, kubelet: TestKubelet) -> None:
    kubelet.reject_with = (grpc.StatusCode.INVALID_ARGUMENT, "resource huawei.com/Ascend310 is already registered")
    with pytest.raises(RegistrationRejected, match="already registered"):
        await asyncio.wait_for(SimulatedAscendPlugin(config(plugin_dir)).run(), 10)
    assert kubelet.rejected == ["huawei.com/Ascend310"]


async def test_resource_name_and_device_count_are_configurable(plugin_dir: Path, kubelet: TestKubelet) -> None:
    async with SimulatedAscendPlugin(config(plugin_dir, resource="huawei.com/Ascend310P", devices=2)):
        connection = await kubelet.wait(lambda: kubelet.plugins.get("huawei.com/Ascend310P"), what="registration")
        await kubelet.wait(lambda: connection.lists, what="the first list")
        assert connection.request.endpoint == "Ascend310P-simulated.sock"
        assert connection.lists[0] == {"Ascend310P-0": "Healthy", "Ascend310P-1": "Healthy"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resource": "Ascend310"}, "--resource"),
        ({"devices": 0}, "--devices"),
        ({"endpoint": "kubelet.sock"}, "--endpoint"),
        ({"directory": Path("/tmp/" + "x" * 120)}, "unix socket path"),
    ],
)
def test_bad_settings_are_refused_naming_the_flag(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PluginConfig(**overrides).validate()  # type: ignore[arg-type]


def test_service_names_and_method_paths_are_the_apis() -> None:
    assert protocol.REGISTRATION == "v1beta1.Registration"
    assert protocol.DEVICE_PLUGIN == "v1beta1.DevicePlugin"
    assert protocol.method_path(protocol.REGISTRATION, "Register") == "/v1beta1.Registration/Register"
