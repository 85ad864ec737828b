"""ASCEND_VISIBLE_DEVICES picks the pyACL simulator's device, as the device plugin's Allocate sets it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ascend_mlops.ascend import acl_constants as c
from ascend_mlops.ascend import acl_sim
from ascend_mlops.ascend.deviceplugin import visible
from ascend_mlops.ascend.deviceplugin.plugin import PluginConfig, SimulatedAscendPlugin
from tests.deviceplugin.kubelet import TestKubelet


@pytest.fixture
def sim() -> Iterator[None]:
    acl_sim.sim_reset()
    yield
    acl_sim.sim_reset()


def open_device(device_id: int = 0) -> int:
    assert acl_sim.init() == c.ACL_SUCCESS
    return acl_sim.rt.set_device(device_id)


@pytest.mark.usefixtures("sim")
async def test_the_allocated_device_is_the_one_the_simulator_opens(
    plugin_dir: Path, kubelet: TestKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SimulatedAscendPlugin(PluginConfig(directory=plugin_dir, watch_interval=0.05)):
        await kubelet.wait(lambda: kubelet.plugins, what="registration")
        (container,) = (await kubelet.allocate(["Ascend310-2"])).container_responses
    # The container runtime sets the env the plugin returned; the server opens device 0.
    for name, value in container.envs.items():
        monkeypatch.setenv(name, value)
    assert open_device(0) == c.ACL_SUCCESS
    assert acl_sim.rt.get_device_count() == (1, c.ACL_SUCCESS)
    assert acl_sim.sim_devices() == {0: 2}
    assert acl_sim.sim_active_devices() == [2]
    # Device 1 is not in this container.
    assert acl_sim.rt.set_device(1) == c.ACL_ERROR_RT_INVALID_DEVICEID
    assert "ASCEND_VISIBLE_DEVICES=2" in acl_sim.get_recent_err_msg()


@pytest.mark.usefixtures("sim")
def test_two_visible_devices_are_numbered_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(visible.ENV_VISIBLE_DEVICES, "1,3")
    assert open_device(1) == c.ACL_SUCCESS
    assert acl_sim.rt.get_device_count() == (2, c.ACL_SUCCESS)
    assert acl_sim.sim_devices() == {0: 1, 1: 3}
    assert acl_sim.sim_active_devices() == [3]


@pytest.mark.usefixtures("sim")
def test_without_the_variable_the_simulator_has_one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(visible.ENV_VISIBLE_DEVICES, raising=False)
    assert open_device(0) == c.ACL_SUCCESS
    assert acl_sim.sim_devices() == {0: 0}


@pytest.mark.usefixtures("sim")
def test_a_malformed_variable_fails_acl_init_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(visible.ENV_VISIBLE_DEVICES, "Ascend310-2")
    assert acl_sim.init() == c.ACL_ERROR_INVALID_PARAM
    assert "ASCEND_VISIBLE_DEVICES" in acl_sim.get_recent_err_msg()


@pytest.mark.parametrize(
    ("value", "ids"), [("", []), ("0", [0]), ("2,0", [2, 0]), ("0-3", [0, 1, 2, 3]), (" 1, 4-5 ", [1, 4, 5])]
)
def test_parse(value: str, ids: list[int]) -> None:
    assert visible.parse(value) == ids


@pytest.mark.parametrize("value", ["x", "3-1", "1,1", "-1", "0-99999"])
def test_parse_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="ASCEND_VISIBLE_DEVICES"):
        visible.parse(value)
