"""The model a pod loads (after references were followed) and how it is mounted: shared by the
InferenceService's servers and the BatchPrediction's predictors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api import contract
from ascend_mlops.api.specs import Accelerator, PodOptions, StorageOptions, StorageURI
from ascend_mlops.builders import accelerator, common
from ascend_mlops.settings import Settings
from ascend_mlops.storage import Mount, Role, merge, mount

MODEL_FILE_SUFFIXES: Final = (".om", ".pb")


@dataclass(frozen=True)
class ResolvedModel:
    """The model the pods load, after references were followed."""

    uri: StorageURI
    labels: StorageURI | None
    runtime: str


@dataclass(frozen=True)
class ModelMounts:
    model_path: str
    labels_path: str | None
    mounts: tuple[Mount, ...]

    def volumes(self, *others: Mount) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return merge(*self.mounts, *others)


def model_mounts(model: ResolvedModel) -> ModelMounts:
    model_mount = mount(model.uri, Role.MODEL, is_file=model.uri.name.endswith(MODEL_FILE_SUFFIXES))
    mounts = [model_mount]
    labels_path: str | None = None
    if model.labels is not None:
        labels_mount = mount(model.labels, Role.LABELS, is_file=True)
        mounts.append(labels_mount)
        labels_path = labels_mount.path
    return ModelMounts(model_mount.path, labels_path, tuple(mounts))


@dataclass(frozen=True)
class ModelPod:
    """What a container that loads the model needs: paths for its command line, volumes, mounts, env."""

    model_path: str
    labels_path: str | None
    volumes: list[dict[str, Any]]
    volume_mounts: list[dict[str, Any]]
    env: list[dict[str, Any]]


def model_pod(
    model: ResolvedModel,
    settings: Settings,
    *,
    pod: PodOptions,
    storage: StorageOptions,
    device: Accelerator | None,
    extra: Sequence[tuple[StorageURI, Mount]] = (),
) -> ModelPod:
    """The model (and `extra` locations) mounted or reached on object storage, /tmp, the driver, the env.

    The Ascend driver is mounted only when the pod has a `device` and runs the acl backend.
    """
    located = model_mounts(model)
    volumes, volume_mounts = located.volumes(*(m for _, m in extra))
    access = common.object_storage((model.uri, model.labels, *(u for u, _ in extra)), storage, settings)
    volumes += access.volumes
    volume_mounts += access.volume_mounts
    tmp, tmp_mount = common.tmp_volume()
    volumes.append(tmp)
    volume_mounts.append(tmp_mount)
    driver_volumes, driver_volume_mounts = accelerator.driver_mounts(
        settings, device is not None and model.runtime == "acl"
    )
    volumes += driver_volumes
    volume_mounts += driver_volume_mounts
    env = list(common.BASE_ENV)
    if settings.simulator:
        env.append((contract.ENV_SIMULATOR, "1"))
    return ModelPod(
        located.model_path, located.labels_path, volumes, volume_mounts, common.container_env(env, pod.env, access)
    )
