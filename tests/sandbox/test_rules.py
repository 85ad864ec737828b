"""Pure rules of the sandbox: scheduling filters, path/port mapping of pods, patches, selectors."""

from __future__ import annotations

import base64
import datetime
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ascend_mlops.sandbox import objects, podrun, scheduling


def _nodes() -> list[dict[str, Any]]:
    return [scheduling.node_object(config, "2026-01-01T00:00:00Z") for config in scheduling.default_nodes(npus=1)]


def _pod(**spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": "x", "resources": spec.pop("resources", {})}
    return {"metadata": {"name": "p"}, "spec": {"containers": [container], **spec}}


ASCEND_TOLERATION = {"key": scheduling.ASCEND_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
ASCEND_SELECTOR = {"accelerator": "huawei-Ascend310"}


def test_ascend_node_advertises_the_device_plugin_resource_labels_and_taint() -> None:
    ascend = _nodes()[1]
    assert ascend["status"]["allocatable"][scheduling.ASCEND_RESOURCE] == "1"
    labels = ascend["metadata"]["labels"]
    assert labels["accelerator"] == "huawei-Ascend310"
    assert labels["node.kubernetes.io/npu.chip.name"] == "310"
    assert labels["workerselector"] == "dls-worker-node"
    assert labels["host-arch"] in ("huawei-x86", "huawei-arm")
    assert ascend["spec"]["taints"] == [{"key": scheduling.ASCEND_RESOURCE, "effect": "NoSchedule"}]


def test_inference_pod_lands_on_the_ascend_node_and_training_pod_on_the_cpu_node() -> None:
    nodes = _nodes()
    npu = {"limits": {scheduling.ASCEND_RESOURCE: "1", "cpu": "3", "memory": "6Gi"}}
    decision = scheduling.schedule(_pod(resources=npu, nodeSelector=ASCEND_SELECTOR, tolerations=[ASCEND_TOLERATION]), nodes, {})
    assert decision.node == scheduling.ASCEND_NODE
    assert scheduling.schedule(_pod(resources={"requests": {"cpu": "2"}}), nodes, {}).node == scheduling.CPU_NODE


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (  # the seed's pod without the toleration: the taint keeps it off, the CPU node lacks the device
            {"resources": {"limits": {scheduling.ASCEND_RESOURCE: "1"}}},
            "0/2 nodes are available: 1 Insufficient huawei.com/Ascend310, 1 node(s) had untolerated taint {huawei.com/Ascend310: }.",
        ),
        (  # an accelerator the node does not have
            {"resources": {"limits": {"huawei.com/Ascend910": "1"}}, "nodeSelector": ASCEND_SELECTOR, "tolerations": [ASCEND_TOLERATION]},
            "0/2 nodes are available: 1 Insufficient huawei.com/Ascend910, 1 node(s) didn't match Pod's node affinity/selector.",
        ),
        (  # more devices than the node has
            {"resources": {"limits": {scheduling.ASCEND_RESOURCE: "2"}}, "nodeSelector": ASCEND_SELECTOR, "tolerations": [ASCEND_TOLERATION]},
            "0/2 nodes are available: 1 Insufficient huawei.com/Ascend310, 1 node(s) didn't match Pod's node affinity/selector.",
        ),
    ],
)
def test_unschedulable_pods_get_the_schedulers_message(spec: dict[str, Any], message: str) -> None:
    decision = scheduling.schedule(_pod(**spec), _nodes(), {})
    assert decision.node is None
    assert decision.message.startswith(message)
    assert "preemption: 0/2 nodes are available" in decision.message


def test_used_devices_count_against_the_node() -> None:
    nodes = _nodes()
    pod = _pod(resources={"limits": {scheduling.ASCEND_RESOURCE: "1"}}, nodeSelector=ASCEND_SELECTOR, tolerations=[ASCEND_TOLERATION])
    running = {**pod, "spec": {**pod["spec"], "nodeName": scheduling.ASCEND_NODE}, "status": {"phase": "Running"}}
    finished = {**running, "status": {"phase": "Succeeded"}}
    assert scheduling.schedule(pod, nodes, scheduling.node_usage([running])).node is None
    assert scheduling.schedule(pod, nodes, scheduling.node_usage([finished])).node == scheduling.ASCEND_NODE


def test_quantities() -> None:
    assert scheduling.parse_quantity("500m") == 0.5
    assert scheduling.parse_quantity("6Gi") == 6 * 2**30
    assert scheduling.parse_quantity("1e3") == 1000
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        scheduling.parse_quantity("lots")


def test_paths_are_rewritten_only_at_path_boundaries() -> None:
    mapping = [("/mnt/output", "/sb/out"), ("/mnt/output-extra", "/sb/extra"), ("/tmp", "/sb/tmp")]
    assert podrun.rewrite_paths("/mnt/output/V001", mapping) == "/sb/out/V001"
    assert podrun.rewrite_paths("/mnt/output-extra/x", mapping) == "/sb/extra/x"
    assert podrun.rewrite_paths("--out=/mnt/output", mapping) == "--out=/sb/out"
    assert podrun.rewrite_paths("/mnt/outputs", mapping) == "/mnt/outputs"
    assert podrun.rewrite_paths("/var/tmp/x", mapping) == "/var/tmp/x"
    assert podrun.rewrite_paths("a:/tmp,b", mapping) == "a:/sb/tmp,b"


def test_plan_maps_volumes_ports_env_and_the_entrypoint(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    pod = {
        "metadata": {"name": "srv", "namespace": "ns", "labels": {"app": "a"}},
        "spec": {
            "volumes": [
                {"name": "data", "hostPath": {"path": str(existing), "type": "Directory"}},
                {"name": "out", "hostPath": {"path": "/nonexistent/place", "type": "DirectoryOrCreate"}},
                {"name": "claim", "persistentVolumeClaim": {"claimName": "flowers-data"}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    container = {
        "name": "server",
        "command": ["ascend-mlops"],
        "args": ["serve", "--model", "/mnt/model/model.om", "--host", "0.0.0.0", "--port", "8080", "--metrics-port=9090", "--termination-log", "/dev/termination-log"],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ],
        "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
        "volumeMounts": [
            {"name": "data", "mountPath": "/mnt/dataset"},
            {"name": "out", "mountPath": "/mnt/output"},
            {"name": "claim", "mountPath": "/mnt/model"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_dir = tmp_path / "pod"
    volumes = podrun.volume_dirs(pod, tmp_path / "data", pod_dir)
    assert volumes["data"] == existing
    assert volumes["out"] == tmp_path / "data" / "hostpath" / "nonexistent" / "place" and volumes["out"].is_dir()
    assert volumes["claim"] == tmp_path / "data" / "pvc" / "flowers-data"
    plan = podrun.plan_container(pod, container, volumes=volumes, pod_dir=pod_dir, ports={8080: 41000, 9090: 41001}, extra_env={"X": "1"})
    assert plan.argv[:3] == [sys.executable, "-m", "ascend_mlops"]
    args = plan.argv[3:]
    assert args[args.index("--model") + 1] == str(tmp_path / "data" / "pvc" / "flowers-data" / "model.om")
    assert args[args.index("--port") + 1] == "41000"
    assert "--metrics-port=41001" in args
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--termination-log") + 1] == str(plan.termination_log)
    assert plan.env["HOME"] == str(volumes["tmp"]) and plan.env["TMPDIR"] == str(volumes["tmp"])
    assert (plan.env["POD"], plan.env["APP"], plan.env["X"]) == ("srv", "a", "1")
    assert podrun.probe_port("http", plan) == 41000 and podrun.probe_port(8080, plan) == 41000


def test_volume_errors_name_the_volume(tmp_path: Path) -> None:
    missing = {"spec": {"volumes": [{"name": "in", "hostPath": {"path": "/nonexistent/in", "type": "Directory"}}]}}
    with pytest.raises(podrun.PodConfigError, match='volume "in".*not a directory'):
        podrun.volume_dirs(missing, tmp_path, tmp_path / "pod")
    nfs = {"spec": {"volumes": [{"name": "s", "nfs": {"server": "nas", "path": "/x"}}]}}
    with pytest.raises(podrun.PodConfigError, match=r'volume "s" has a type the sandbox does not run \(nfs\)'):
        podrun.volume_dirs(nfs, tmp_path, tmp_path / "pod")


def test_termination_message_falls_back_to_the_log_on_error(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("line 1\nTraceback: boom\n")
    absent = tmp_path / "none"
    assert podrun.read_termination_message(absent, log, "FallbackToLogsOnError", 1).endswith("Traceback: boom")
    assert podrun.read_termination_message(absent, log, "File", 1) == ""
    assert podrun.read_termination_message(absent, log, "FallbackToLogsOnError", 0) == ""
    (tmp_path / "msg").write_text('{"exitCode": 3}')
    assert podrun.read_termination_message(tmp_path / "msg", log, "FallbackToLogsOnError", 3) == '{"exitCode": 3}'


def test_patches_and_selectors() -> None:
    assert objects.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    doc = {"list": [1, 2], "x": {"y": 1}}
    assert objects.json_patch(doc, [{"op": "add", "path": "/list/-", "value": 3}, {"op": "remove", "path": "/x/y"}]) == {"list": [1, 2, 3], "x": {}}
    with pytest.raises(objects.PatchError):
        objects.json_patch(doc, [{"op": "test", "path": "/x/y", "value": 2}])
    assert objects.label_selector_matches("a=1,b in (x,y),!c", {"a": "1", "b": "y"})
    assert not objects.label_selector_matches("a=1,b notin (x,y)", {"a": "1", "b": "y"})
    assert objects.match_labels_selector({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1", "b": ""})
    obj = {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}}
    assert objects.jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert objects.field_selector_matches("status.conditions=x", obj) is False


def test_the_interpreter_is_never_mapped_even_when_it_lives_under_a_mounted_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venv under /tmp (a common place) while the pod mounts an emptyDir at /tmp:
    # the interpreter is a host path and must run as it is.
    monkeypatch.setattr(podrun.sys, "executable", "/tmp/venv/bin/python3")
    pod = {"metadata": {"name": "w", "namespace": "ns"}, "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]}}
    container = {
        "name": "trainer",
        "command": ["ascend-mlops"],
        "args": ["train", "--output", "/tmp/out"],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = podrun.volume_dirs(pod, tmp_path / "data", tmp_path / "pod")
    plan = podrun.plan_container(pod, container, volumes=volumes, pod_dir=tmp_path / "pod", ports={})
    assert plan.argv[:3] == ["/tmp/venv/bin/python3", "-m", "ascend_mlops"]
    assert plan.argv[plan.argv.index("--output") + 1] == str(volumes["tmp"] / "out")

    # Any other program is the image's too: kept as it is, its arguments mapped.
    other = {**container, "command": ["/tmp/venv/bin/python3", "-c", "pass", "/tmp/in"], "args": []}
    plan = podrun.plan_container(pod, other, volumes=volumes, pod_dir=tmp_path / "pod", ports={})
    assert plan.argv == ["/tmp/venv/bin/python3", "-c", "pass", str(volumes["tmp"] / "in")]


def storage_env_container() -> dict[str, Any]:
    def ref(key: str, optional: bool = False) -> dict[str, Any]:
        selector: dict[str, Any] = {"name": "store", "key": key}
        if optional:
            selector["optional"] = True
        return {"name": key, "valueFrom": {"secretKeyRef": selector}}

    return {
        "name": "trainer",
        "env": [
            ref("AWS_ACCESS_KEY_ID"), ref("AWS_SECRET_ACCESS_KEY"),
            ref("AWS_SESSION_TOKEN", optional=True), ref("AWS_ENDPOINT_URL", optional=True),
            {"name": "ASCEND_MLOPS_SCRATCH", "value": "/scratch"},
        ],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    }


def test_secret_key_refs_resolve_and_optional_keys_are_skipped(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}
    container = storage_env_container()
    lookup = {("Secret", "store"): {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}}
    volumes = podrun.volume_dirs(pod, tmp_path / "data", tmp_path / "pod")
    assert volumes["scratch"] == tmp_path / "pod" / "volumes" / "scratch" and volumes["scratch"].is_dir()
    plan = podrun.plan_container(pod, container, volumes=volumes, pod_dir=tmp_path / "pod", ports={}, lookup=lookup)
    assert (plan.env["AWS_ACCESS_KEY_ID"], plan.env["AWS_SECRET_ACCESS_KEY"]) == ("AK", "SK")
    assert plan.env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"  # a URL is not a container path
    assert "AWS_SESSION_TOKEN" not in plan.env  # optional and absent: skipped, as by the kubelet
    assert plan.env["ASCEND_MLOPS_SCRATCH"] == str(volumes["scratch"])
    # A whole optional Secret may be absent too.
    optional = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "X", "optional": True}}}]}
    assert "X" not in podrun.container_env(pod, optional, {})


def test_a_missing_secret_or_required_key_is_the_kubelets_config_error() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}}
    container = storage_env_container()
    with pytest.raises(podrun.PodConfigError, match='^secret "store" not found$') as missing:
        podrun.container_env(pod, container, {})
    assert missing.value.reason == "CreateContainerConfigError"
    lookup = {("Secret", "store"): {"AWS_ACCESS_KEY_ID": "AK-VALUE"}}
    with pytest.raises(podrun.PodConfigError, match="^couldn't find key AWS_SECRET_ACCESS_KEY in Secret ns/store$") as no_key:
        podrun.container_env(pod, container, lookup)
    assert "AK-VALUE" not in no_key.value.message


# --- secret and configMap volumes ------------------------------------------------------------
def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _secret_volume(**source: Any) -> podrun.ObjectVolume:
    volume = podrun.object_volume({"name": "tokens", "secret": {"secretName": "flowers-tokens", **source}})
    assert volume is not None
    return volume


def test_secret_and_config_map_volumes_are_read_from_the_pod() -> None:
    pod = {"spec": {"volumes": [
        {"name": "tokens", "secret": {"secretName": "t", "defaultMode": 0o400, "optional": True}},
        {"name": "conf", "configMap": {"name": "c", "items": [{"key": "a", "path": "x/a.txt", "mode": 0o600}]}},
        {"name": "tmp", "emptyDir": {}},
    ]}}
    tokens, conf = podrun.object_volumes(pod)
    assert (tokens.kind, tokens.plural, tokens.name, tokens.optional, tokens.default_mode, tokens.items) == ("Secret", "secrets", "t", True, 0o400, None)
    assert (conf.kind, conf.plural, conf.name, conf.optional, conf.default_mode) == ("ConfigMap", "configmaps", "c", False, 0o644)
    assert conf.items == ({"key": "a", "path": "x/a.txt", "mode": 0o600},)


def test_volume_payload_follows_items_modes_and_optional() -> None:
    secret = {"data": {"token": _b64("s3cret\n"), "other": _b64("x")}, "stringData": {"plain": "p"}}
    assert podrun.volume_payload(_secret_volume(), secret) == {
        "other": (b"x", 0o644), "plain": (b"p", 0o644), "token": (b"s3cret\n", 0o644),
    }
    items = [{"key": "token", "path": "auth/token"}, {"key": "other", "path": "o", "mode": 0o400}]
    assert podrun.volume_payload(_secret_volume(items=items, defaultMode=0o440), secret) == {
        "auth/token": (b"s3cret\n", 0o440), "o": (b"x", 0o400),
    }
    config = podrun.object_volume({"name": "conf", "configMap": {"name": "c"}})
    assert config is not None
    assert podrun.volume_payload(config, {"data": {"a": "1"}, "binaryData": {"b": _b64("\x00\x01")}}) == {
        "a": (b"1", 0o644), "b": (b"\x00\x01", 0o644),
    }
    # Optional: a missing object is an empty folder, a missing listed key is skipped.
    assert podrun.volume_payload(_secret_volume(optional=True), None) == {}
    assert podrun.volume_payload(_secret_volume(optional=True, items=[{"key": "gone", "path": "g"}]), secret) == {}


def test_volume_payload_errors_are_the_kubelets_and_name_no_value() -> None:
    with pytest.raises(podrun.PodConfigError, match='^MountVolume.SetUp failed for volume "tokens" : secret "flowers-tokens" not found$') as missing:
        podrun.volume_payload(_secret_volume(), None)
    assert missing.value.reason == "ContainerCreating"
    secret = {"data": {"token": _b64("VALUE-1234")}}
    with pytest.raises(podrun.PodConfigError, match="references non-existent secret key: gone$") as no_key:
        podrun.volume_payload(_secret_volume(items=[{"key": "gone", "path": "g"}]), secret)
    assert "VALUE-1234" not in no_key.value.message
    config = podrun.object_volume({"name": "conf", "configMap": {"name": "c"}})
    assert config is not None
    with pytest.raises(podrun.PodConfigError, match='configmap "c" not found'):
        podrun.volume_payload(config, None)
    for path in ("/etc/passwd", "../escape", "..data", "a/../../b"):
        with pytest.raises(podrun.PodConfigError, match="invalid path"):
            podrun.volume_payload(_secret_volume(items=[{"key": "token", "path": path}]), secret)


def test_write_atomically_uses_the_kubelets_layout_and_swaps_data_in_one_rename(tmp_path: Path) -> None:
    target = tmp_path / "tokens"
    when = datetime.datetime(2026, 3, 1, 12, 30, 5, tzinfo=datetime.UTC)
    assert podrun.write_atomically(target, {"token": (b"one\n", 0o644), "auth/nested": (b"n", 0o400)}, now=when)
    data = target / podrun.DATA_LINK
    first = os.readlink(data)
    assert first.startswith("..2026_03_01_12_30_05.") and "/" not in first  # relative, in the folder
    assert os.readlink(target / "token") == "..data/token" and os.readlink(target / "auth") == "..data/auth"
    assert (target / "token").read_text() == "one\n" and (target / "auth" / "nested").read_bytes() == b"n"
    assert stat.S_IMODE((target / first / "token").stat().st_mode) == 0o644
    assert stat.S_IMODE((target / first / "auth" / "nested").stat().st_mode) == 0o400
    assert sorted(p.name for p in target.iterdir()) == sorted([first, "..data", "auth", "token"])
    # The same payload again changes nothing (not even the folder).
    assert not podrun.write_atomically(target, {"token": (b"one\n", 0o644), "auth/nested": (b"n", 0o400)})
    assert os.readlink(data) == first
    # A change: a new folder, ..data points at it, the old folder and the key that left are gone.
    assert podrun.write_atomically(target, {"token": (b"two\n", 0o644), "extra": (b"e", 0o644)})
    second = os.readlink(data)
    assert second != first and not (target / first).exists()
    assert sorted(p.name for p in target.iterdir()) == sorted([second, "..data", "extra", "token"])
    assert (target / "token").read_text() == "two\n" and (target / "extra").read_text() == "e"
    # Modes the sandbox's own user could not read still let the owner read (it is the file's owner).
    assert podrun.write_atomically(target, {"token": (b"three", 0o000)})
    assert stat.S_IMODE((target / "token").stat().st_mode) == 0o400 and (target / "token").read_text() == "three"
    # An optional object that went away: an empty folder, ..data still there.
    assert podrun.write_atomically(target, {})
    assert [p.name for p in target.iterdir() if not p.name.startswith("..")] == []
    assert (target / "..data").is_symlink() and list((target / "..data").iterdir()) == []


def test_a_reader_through_data_never_sees_a_mix_of_two_versions(tmp_path: Path) -> None:
    """Two keys that always change together: a reader that resolves ..data once sees one version of both."""
    target = tmp_path / "pair"
    podrun.write_atomically(target, {"a": (b"0", 0o644), "b": (b"0", 0o644)})
    stop = threading.Event()
    seen: list[tuple[bytes, bytes]] = []

    def read() -> None:
        while not stop.is_set():
            try:
                folder = target / os.readlink(target / podrun.DATA_LINK)
                seen.append(((folder / "a").read_bytes(), (folder / "b").read_bytes()))
            except FileNotFoundError:
                continue  # that version's folder was removed after the swap: read again

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(1, 200):
            value = str(version).encode()
            podrun.write_atomically(target, {"a": (value, 0o644), "b": (value, 0o644)})
    finally:
        stop.set()
        reader.join()
    assert seen and all(a == b for a, b in seen), [pair for pair in seen if pair[0] != pair[1]][:5]
    assert (target / "a").read_bytes() == b"199"
