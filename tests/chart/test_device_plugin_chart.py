"""The simulated device plugin's DaemonSet (simulator=true, simulatorDevicePlugin.enabled=true): hardened, one hostPath, no RBAC."""

from __future__ import annotations

from typing import Any

import pytest

from ascend_mlops import cli
from ascend_mlops.ascend.deviceplugin.plugin import PluginConfig
from tests.chart.chartutil import NAMESPACE, of_kind, one, render, render_failure

ENABLED = ("simulator=true", "simulatorDevicePlugin.enabled=true")
KUBELET_DIR = "/var/lib/kubelet/device-plugins"


def daemonset(*values_files: str, sets: tuple[str, ...] = ENABLED) -> dict[str, Any]:
    return one(render(*values_files, sets=sets), "DaemonSet")


def test_not_rendered_by_default_nor_with_the_simulator_alone() -> None:
    assert not of_kind(render(), "DaemonSet")
    assert not of_kind(render(sets=("simulator=true",)), "DaemonSet")


def test_the_daemonset_is_hardened_with_only_the_device_plugins_hostpath() -> None:
    ds = daemonset()
    assert ds["metadata"]["namespace"] == NAMESPACE
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    # No API access: no token, no service account of its own.
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    # Root (the kubelet's directory and socket are root's), but with nothing else.
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    (volume,) = pod["volumes"]
    assert volume["hostPath"] == {"path": KUBELET_DIR, "type": "Directory"}
    assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": KUBELET_DIR}]


def test_it_runs_the_simulated_plugin_for_the_operators_resource_on_labelled_nodes() -> None:
    docs = render(sets=ENABLED)
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["ascend-mlops", "device-plugin"]
    # The args are valid for the real command line and name the operator's resource.
    args = cli.build_parser(["device-plugin"]).parse_args(["device-plugin", *container["args"]])
    assert args.simulated is True
    config = PluginConfig(resource=args.resource, devices=args.devices, directory=args.device_plugin_dir)
    config.validate()
    operator_env = {e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert config.resource == operator_env["ASCEND_MLOPS_ACCELERATOR_RESOURCE"] == "huawei.com/Ascend310"
    assert operator_env["ASCEND_MLOPS_SIMULATOR"] == "1"
    assert (config.devices, str(config.directory)) == (4, KUBELET_DIR)
    assert pod["nodeSelector"] == {"ascend.mlops.dev/simulated-npu": "true"}
    assert {"key": "huawei.com/Ascend310", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Default image: the server image (it has grpcio with the simulator's tensorflow extra).
    assert container["image"] == "ascend-mlops/server:0.1.0"


def test_values_file_sets_image_devices_and_nodes() -> None:
    pod = daemonset("device-plugin-values.yaml", sets=())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ascend-mlops/server:0.1.0-sim"
    assert container["args"][container["args"].index("--devices") + 1] == "2"
    assert pod["nodeSelector"] == {"ascend.mlops.dev/simulated-npu": "true", "kubernetes.io/arch": "amd64"}
    assert pod["priorityClassName"] == "system-node-critical"


def test_the_plugin_gets_no_rbac() -> None:
    with_plugin = render(sets=ENABLED)
    without = render(sets=("simulator=true",))
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert of_kind(with_plugin, kind) == of_kind(without, kind), kind


def test_refused_without_the_simulator() -> None:
    assert "needs simulator=true" in render_failure("simulatorDevicePlugin.enabled=true")


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("simulatorDevicePlugin.devices=0",), "devices"),
        (("simulatorDevicePlugin.kubeletDevicePluginDir=relative",), "kubeletDevicePluginDir"),
        (("simulatorDevicePlugin.typo=1",), "typo"),
    ],
)
def test_bad_values_are_refused(sets: tuple[str, ...], expected: str) -> None:
    assert expected in render_failure(*sets)
