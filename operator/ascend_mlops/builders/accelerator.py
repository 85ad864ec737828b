"""Pods on Ascend nodes: the device request, the node selector and toleration, the driver mounts.

Shared by every kind that runs the model (InferenceService, BatchPrediction), so
that a server pod and a batch pod land on the same nodes the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ascend_mlops.api.specs import Accelerator, PodOptions
from ascend_mlops.settings import DRIVER_MOUNTS_HOSTPATH, Settings

# Without Ascend Docker Runtime the pod mounts the driver itself (ascend-reference.md §2).
# (host path, hostPath type)
DRIVER_HOST_PATHS: Final = (
    ("/usr/local/Ascend/driver/lib64", "Directory"),
    ("/usr/local/Ascend/driver/include", "Directory"),
    ("/usr/local/dcmi", "Directory"),
    ("/usr/local/bin/npu-smi", "File"),
    ("/var/log/npu/conf/slog", "Directory"),
    ("/etc/ascend_install.info", "File"),
    ("/usr/local/Ascend/driver/version.info", "File"),
)


def driver_mounts(settings: Settings, uses_device: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """hostPath volumes for the driver, when the pod uses a device and the cluster has no Ascend Docker Runtime."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if not uses_device or settings.driver_mounts != DRIVER_MOUNTS_HOSTPATH:
        return volumes, mounts
    for index, (path, kind) in enumerate(DRIVER_HOST_PATHS):
        name = f"ascend-driver-{index}"
        volumes.append({"name": name, "hostPath": {"path": path, "type": kind}})
        mounts.append({"name": name, "mountPath": path, "readOnly": True})
    return volumes, mounts


def resources(
    pod: PodOptions, accelerator: Accelerator | None, default: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The user's CPU/memory (else `default`) plus the device request."""
    found: dict[str, dict[str, str]] = {section: dict(values) for section, values in (pod.resources or {}).items()}
    if not found:
        found = {k: dict(v) for k, v in default.items()}
    if accelerator is not None:
        # Extended resources must be equal in requests and limits.
        count = str(accelerator.count)
        found.setdefault("requests", {})[accelerator.resource] = count
        found.setdefault("limits", {})[accelerator.resource] = count
    return found


def scheduling(pod: PodOptions, accelerator: Accelerator | None, settings: Settings) -> dict[str, Any]:
    """nodeSelector and tolerations: the operator's Ascend defaults when a device is requested, then the user's."""
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    if accelerator is not None:
        node_selector.update(settings.accelerator_node_selector)
        tolerations.append({"key": settings.accelerator_toleration_key, "operator": "Exists", "effect": "NoSchedule"})
    node_selector.update(pod.node_selector)
    for toleration in pod.tolerations:
        if dict(toleration) not in tolerations:
            tolerations.append(dict(toleration))
    result: dict[str, Any] = {}
    if node_selector:
        result["nodeSelector"] = node_selector
    if tolerations:
        result["tolerations"] = tolerations
    return result
