"""The model a pod loads (after references were followed) and how it is mounted: shared by the
InferenceService's servers and the BatchPrediction's predictors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.api.specs import StorageURI
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
