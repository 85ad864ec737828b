from __future__ import annotations

import re

import pytest

from ascend_mlops.api import contract
from ascend_mlops.api.specs import StorageOptions, parse_storage_uri
from ascend_mlops.storage import (
    MOUNT_LABELS,
    Access,
    Role,
    claim_volume_name,
    claims_mounted_twice,
    host_volume_name,
    merge,
    mount,
    object_storage_access,
    secret_name,
)


def uri(text: str):  # type: ignore[no-untyped-def]
    return parse_storage_uri(text, "spec.x")


def test_pvc_input_mounts_claim_root_read_only() -> None:
    m = mount(uri("pvc://data/flowers"), Role.DATASET)
    assert m.volumes == [{"name": "pvc-data", "persistentVolumeClaim": {"claimName": "data"}}]
    # Read-only on the mount, never on the volume: the same claim may be written through another mount.
    assert m.volume_mounts == [{"name": "pvc-data", "mountPath": contract.MOUNT_DATASET, "readOnly": True}]
    assert m.path == f"{contract.MOUNT_DATASET}/flowers"


def test_pvc_output_is_writable_and_root_claim_maps_to_mount_path() -> None:
    m = mount(uri("pvc://runs"), Role.OUTPUT)
    assert m.volumes == [{"name": "pvc-runs", "persistentVolumeClaim": {"claimName": "runs"}}]
    assert m.volume_mounts == [{"name": "pvc-runs", "mountPath": contract.MOUNT_OUTPUT}]
    assert m.path == contract.MOUNT_OUTPUT


def test_file_output_creates_directory_input_requires_it() -> None:
    out = mount(uri("file:///srv/runs/flowers"), Role.OUTPUT)
    assert out.volumes == [
        {"name": host_volume_name("/srv/runs/flowers"), "hostPath": {"path": "/srv/runs/flowers", "type": "DirectoryOrCreate"}}
    ]
    assert out.volumes[0]["name"].startswith("host-srv-runs-flowers-")
    assert out.path == contract.MOUNT_OUTPUT
    src = mount(uri("file:///srv/runs/flowers/V001/frozen_graph"), Role.SOURCE)
    assert src.volumes[0]["hostPath"] == {"path": "/srv/runs/flowers/V001/frozen_graph", "type": "Directory"}
    assert src.volume_mounts[0]["readOnly"] is True
    assert src.path == contract.MOUNT_SOURCE


def test_files_mount_their_directory() -> None:
    labels = mount(uri("file:///srv/runs/V001/labels.txt"), Role.LABELS, is_file=True)
    assert labels.volumes[0]["hostPath"] == {"path": "/srv/runs/V001", "type": "Directory"}
    assert labels.path == f"{MOUNT_LABELS}/labels.txt"
    om = mount(uri("pvc://models/flowers/om/model/model.om"), Role.MODEL, is_file=True)
    assert om.path == f"{contract.MOUNT_MODEL}/flowers/om/model/model.om"


def test_artifacts_written_by_one_pod_are_found_by_the_next() -> None:
    # The trainer writes <output>/V001/frozen_graph; the converter reads it by URI.
    output_root = uri("pvc://data/runs/flowers")
    trainer_view = mount(output_root, Role.OUTPUT).path + "/V001/frozen_graph"
    converter_view = mount(output_root.join("V001", "frozen_graph"), Role.SOURCE).path
    # Same claim, same relative path below the claim root, different mount points.
    assert trainer_view.removeprefix(contract.MOUNT_OUTPUT) == converter_view.removeprefix(contract.MOUNT_SOURCE)


def test_merge_gives_one_volume_per_claim_each_role_its_own_mount() -> None:
    a = mount(uri("pvc://data/flowers"), Role.DATASET)
    b = mount(uri("pvc://data/runs"), Role.OUTPUT)
    volumes, mounts = merge(a, b, a)
    assert volumes == [{"name": "pvc-data", "persistentVolumeClaim": {"claimName": "data"}}]
    assert mounts == [
        {"name": "pvc-data", "mountPath": contract.MOUNT_DATASET, "readOnly": True},
        {"name": "pvc-data", "mountPath": contract.MOUNT_OUTPUT},
    ]
    other = mount(uri("pvc://other/flowers"), Role.SOURCE)
    volumes, _ = merge(a, other)
    assert [v["name"] for v in volumes] == ["pvc-data", "pvc-other"]


def test_merge_gives_one_volume_per_host_directory_created_if_any_role_writes() -> None:
    labels = mount(uri("file:///srv/runs/V001/labels.txt"), Role.LABELS, is_file=True)
    output = mount(uri("file:///srv/runs/V001"), Role.OUTPUT)
    volumes, mounts = merge(labels, output)
    assert volumes == [{"name": host_volume_name("/srv/runs/V001"), "hostPath": {"path": "/srv/runs/V001", "type": "DirectoryOrCreate"}}]
    assert [m["mountPath"] for m in mounts] == [MOUNT_LABELS, contract.MOUNT_OUTPUT]
    # Nested directories are different host paths: two volumes, as a kubelet allows.
    volumes, _ = merge(mount(uri("file:///srv/runs"), Role.DATASET), output)
    assert len({v["name"] for v in volumes}) == 2


@pytest.mark.parametrize(
    "claim",
    ["data", "a.b.c", "x" * 253, "Flowers-Data", "-"],
)
def test_volume_names_are_dns_labels_and_distinct(claim: str) -> None:
    name = claim_volume_name(claim)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name != claim_volume_name(claim + "x")
    host = host_volume_name("/" + claim)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", host) and len(host) <= 63
    assert host != host_volume_name("/" + claim + "/y")


def test_claims_mounted_twice_finds_the_old_layout() -> None:
    # What storage.py built before one volume per claim: a volume per role, the same claim twice.
    old = {"volumes": [
        {"name": "dataset-storage", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
        {"name": "output-storage", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "tmp", "emptyDir": {}},
    ]}
    assert claims_mounted_twice(old) == ["data"]
    volumes, _ = merge(mount(uri("pvc://data/a"), Role.DATASET), mount(uri("pvc://data/b"), Role.OUTPUT))
    assert claims_mounted_twice({"volumes": volumes}) == []


# --- object storage ---------------------------------------------------------------------
@pytest.mark.parametrize("text", ["s3://runs/flowers/V001/frozen_graph", "obs://flowers-data/flowers"])
def test_object_storage_is_never_mounted_the_uri_is_the_path(text: str) -> None:
    for role in Role:
        m = mount(uri(text), role, is_file=role in (Role.LABELS, Role.WEIGHTS))
        assert (m.volumes, m.volume_mounts, m.path) == ([], [], text)


def test_object_storage_access_scratch_and_secret_key_refs() -> None:
    access = object_storage_access(
        [uri("pvc://data/flowers"), uri("s3://runs/flowers"), None],
        StorageOptions(secret_name="s3-creds", scratch_size="5Gi"),
        default_secret="default-creds",
        default_scratch_size="20Gi",
    )
    assert access.volumes == [{"name": "scratch", "emptyDir": {"sizeLimit": "5Gi"}}]
    assert access.volume_mounts == [{"name": "scratch", "mountPath": contract.MOUNT_SCRATCH}]
    assert access.env == [(contract.ENV_SCRATCH, contract.MOUNT_SCRATCH)]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in access.secret_env}
    assert list(refs) == [*contract.STORAGE_SECRET_REQUIRED_KEYS, *contract.STORAGE_SECRET_OPTIONAL_KEYS]
    for key in contract.STORAGE_SECRET_REQUIRED_KEYS:
        assert refs[key] == {"name": "s3-creds", "key": key}
    for key in contract.STORAGE_SECRET_OPTIONAL_KEYS:
        assert refs[key] == {"name": "s3-creds", "key": key, "optional": True}


def test_object_storage_access_defaults_and_absence() -> None:
    defaults = object_storage_access(
        [uri("obs://bucket/x")], StorageOptions(), default_secret="default-creds", default_scratch_size="20Gi"
    )
    assert defaults.volumes == [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in defaults.secret_env} == {"default-creds"}
    # No Secret anywhere: scratch only, the pod uses its own identity (IRSA).
    own_identity = object_storage_access(
        [uri("obs://bucket/x")], StorageOptions(), default_secret="", default_scratch_size="20Gi"
    )
    assert own_identity.volumes and own_identity.secret_env == []
    # Nothing on object storage: nothing at all, even with a Secret named.
    assert object_storage_access(
        [uri("pvc://data/x"), uri("file:///srv/x")],
        StorageOptions(secret_name="s3-creds"),
        default_secret="default-creds",
        default_scratch_size="20Gi",
    ) == Access()
    assert secret_name(StorageOptions(), "") is None
