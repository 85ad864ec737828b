"""ModelConversion -> one Pod running `ascend-mlops convert` (ATC, or its simulator when enabled)."""

from __future__ import annotations

from typing import Any, Final

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import ModelConversionSpec, StorageURI
from ascend_mlops.builders import common
from ascend_mlops.settings import Settings
from ascend_mlops.storage import Role, merge, mount

COMPONENT: Final = "converter"
CONTAINER: Final = "converter"
FROZEN_GRAPH_SUFFIX: Final = ".pb"


def default_output_for_source(source: StorageURI) -> StorageURI:
    """`<version>/frozen_graph[/x.pb]` -> `<version>/om/model`, the seed's layout."""
    directory = source.parent() if source.name.endswith(FROZEN_GRAPH_SUFFIX) else source
    return directory.parent().join(contract.OM_OUTPUT_SUBDIR)


def pod_name(conversion: str, attempt: int) -> str:
    base = f"{conversion}-convert"
    return common.clip_name(base if attempt == 0 else f"{base}-retry-{attempt}", 253)


def build_pod(
    spec: ModelConversionSpec,
    owner: common.Owner,
    settings: Settings,
    *,
    source: StorageURI,
    output: StorageURI,
    attempt: int,
) -> dict[str, Any]:
    source_mount = mount(source, Role.SOURCE, is_file=source.name.endswith(FROZEN_GRAPH_SUFFIX))
    output_mount = mount(output, Role.OUTPUT)
    volumes, volume_mounts = merge(source_mount, output_mount)
    access = common.object_storage((source, output), spec.storage, settings)
    tmp, tmp_mount = common.tmp_volume()
    env = list(common.BASE_ENV)
    if settings.simulator:
        env.append((contract.ENV_SIMULATOR, "1"))
    container = common.workload_container(
        name=CONTAINER,
        image=spec.pod.image or settings.converter_image,
        pull_policy=settings.image_pull_policy,
        args=contract.convert_args(
            template=spec.template,
            input_path=source_mount.path,
            output=output_mount.path,
            options=spec.options,
        ),
        env=common.container_env(env, spec.pod.env, access),
        volume_mounts=[*volume_mounts, *access.volume_mounts, tmp_mount],
        resources=spec.pod.resources,
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": common.object_meta(
            pod_name(owner.name, attempt), owner, COMPONENT, {constants.LABEL_ATTEMPT: str(attempt)}
        ),
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [*volumes, *access.volumes, tmp],
            "securityContext": common.pod_security_context(),
            "automountServiceAccountToken": False,
            **common.pod_scheduling(spec.pod),
        },
    }
