"""The embedded API server: the semantics the operator, the kubelet and kubectl rely on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from ascend_mlops.api import constants
from ascend_mlops.kube import JSON_PATCH, ApiError, KubeClient
from ascend_mlops.sandbox import apiserver
from ascend_mlops.sandbox.apiserver import APIServer, parse_target
from tests.helpers import REPO_ROOT, eventually
from tests.sandbox.conftest import GROUP, WIDGET_CRD, widget

W = f"{GROUP}/v1"


async def test_create_fills_metadata_and_generate_name(client: KubeClient) -> None:
    created = await client.create(W, "widgets", "default", widget("a"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    assert created["spec"]["colour"] == "red"  # the schema's default
    generated = await client.create(W, "widgets", "default", {**widget(""), "metadata": {"generateName": "w-"}})
    assert generated["metadata"]["name"].startswith("w-") and len(generated["metadata"]["name"]) == 7
    with pytest.raises(ApiError) as info:
        await client.create(W, "widgets", "default", widget("a"))
    assert info.value.status == 409 and info.value.reason == "AlreadyExists"
    assert await client.get(W, "widgets", "default", "missing") is None


async def test_schema_validation_and_pruning(client: KubeClient) -> None:
    with pytest.raises(ApiError) as info:
        await client.create(W, "widgets", "default", widget("bad", size=0))
    assert info.value.status == 422
    assert "spec.size: Invalid value: 0" in info.value.message and "greater than or equal to 1" in info.value.message
    with pytest.raises(ApiError) as info:
        await client.create(W, "widgets", "default", {**widget("nosize"), "spec": {}})
    assert "spec.size: Required value" in info.value.message
    with pytest.raises(ApiError) as info:
        await client.create(W, "widgets", "default", widget("colour", colour="green"))
    assert 'Unsupported value: "green"' in info.value.message
    created = await client.create(W, "widgets", "default", widget("pruned", unknown=1, free={"x": {"y": 1}}))
    assert "unknown" not in created["spec"]
    assert created["spec"]["free"] == {"x": {"y": 1}}  # x-kubernetes-preserve-unknown-fields
    # kubectl's strict field validation turns pruning into an error instead.
    with pytest.raises(ApiError) as info:
        await client.request("POST", f"/apis/{W}/namespaces/default/widgets", body=widget("strict", unknown=1), params={"fieldValidation": "Strict"})
    assert info.value.status == 400 and 'unknown field "spec.unknown"' in info.value.message


async def test_generation_and_status_subresource(client: KubeClient) -> None:
    await client.create(W, "widgets", "default", widget("g"))
    # Status through the main resource is ignored: the CRD has a status subresource.
    same = await client.patch(W, "widgets", "default", "g", {"status": {"phase": "Sneaky"}})
    assert "status" not in same and same["metadata"]["generation"] == 1
    status = await client.patch(W, "widgets", "default", "g", {"status": {"phase": "Running", "bogus": 1}}, subresource="status")
    assert status["status"] == {"phase": "Running"}  # unknown status fields are pruned
    assert status["metadata"]["generation"] == 1
    # Spec changes through /status are ignored too.
    ignored = await client.patch(W, "widgets", "default", "g", {"spec": {"size": 5}}, subresource="status")
    assert ignored["spec"]["size"] == 1
    labelled = await client.patch(W, "widgets", "default", "g", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1 and labelled["metadata"]["labels"] == {"a": "b"}
    bumped = await client.patch(W, "widgets", "default", "g", {"spec": {"size": 2}})
    assert bumped["metadata"]["generation"] == 2 and bumped["status"]["phase"] == "Running"
    # A no-op write changes nothing, not even the resourceVersion.
    again = await client.patch(W, "widgets", "default", "g", {"spec": {"size": 2}})
    assert again["metadata"]["resourceVersion"] == bumped["metadata"]["resourceVersion"]


async def test_json_patch_test_op_and_put_precondition(client: KubeClient) -> None:
    created = await client.create(W, "widgets", "default", widget("j"))
    rv = created["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]
    patched = await client.patch(W, "widgets", "default", "j", ops, content_type=JSON_PATCH)
    assert patched["metadata"]["finalizers"] == ["x/y"]
    with pytest.raises(ApiError) as info:  # the same test again: the resourceVersion moved on
        await client.patch(W, "widgets", "default", "j", ops, content_type=JSON_PATCH)
    assert info.value.status == 422
    stale = {**created, "spec": {"size": 3}}
    with pytest.raises(ApiError) as info:
        await client.request("PUT", f"/apis/{W}/namespaces/default/widgets/j", body=stale)
    assert info.value.status == 409 and info.value.reason == "Conflict"


async def test_strategic_merge_patch_merges_containers_by_name(client: KubeClient) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    await client.create("v1", "pods", "default", pod)
    patched = await client.patch(
        "v1", "pods", "default", "p", {"spec": {"containers": [{"name": "b", "image": "z"}]}},
        content_type="application/strategic-merge-patch+json",
    )
    assert [(c["name"], c["image"]) for c in patched["spec"]["containers"]] == [("a", "x"), ("b", "z")]
    assert patched["spec"]["restartPolicy"] == "Always"  # built-in defaults
    assert patched["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"


async def test_label_and_field_selectors(client: KubeClient) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        await client.create(W, "widgets", "default", {**widget(name), "metadata": {"name": name, "labels": {"tier": tier}}})
    names = lambda listing: sorted(i["metadata"]["name"] for i in listing["items"])  # noqa: E731
    assert names(await client.listing(W, "widgets", "default", label_selector="tier=web")) == ["a", "c"]
    assert names(await client.listing(W, "widgets", "default", label_selector="tier!=web")) == ["b"]
    assert names(await client.listing(W, "widgets", "default", label_selector="tier in (db,cache)")) == ["b"]
    assert names(await client.listing(W, "widgets", None, field_selector="metadata.name=c")) == ["c"]


async def _watch_lines(
    api: APIServer, path: str, params: dict[str, str], count: int | None = None,
    until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Events of one watch request, until `count` of them or one that satisfies `until`."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + path, params=params) as response:
            async with asyncio.timeout(timeout):
                async for line in response.content:
                    if line.strip():
                        events.append(json.loads(line))
                        if (count is not None and len(events) >= count) or (until is not None and until(events[-1])):
                            break
    return events


async def test_watch_resumes_from_resource_version_and_filters_labels(api: APIServer, client: KubeClient) -> None:
    await client.create(W, "widgets", "default", {**widget("old"), "metadata": {"name": "old", "labels": {"w": "1"}}})
    listing = await client.listing(W, "widgets", "default")
    since = listing["metadata"]["resourceVersion"]
    watcher = asyncio.create_task(
        _watch_lines(api, f"/apis/{W}/namespaces/default/widgets", {"watch": "true", "resourceVersion": since, "labelSelector": "w=1"}, 3)
    )
    await client.create(W, "widgets", "default", {**widget("new"), "metadata": {"name": "new", "labels": {"w": "1"}}})
    await client.create(W, "widgets", "default", {**widget("other"), "metadata": {"name": "other", "labels": {"w": "2"}}})
    await client.patch(W, "widgets", "default", "new", {"metadata": {"labels": {"w": "2"}}})  # leaves the selection
    await client.delete(W, "widgets", "default", "old")
    events = await watcher
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "new"), ("DELETED", "new"), ("DELETED", "old")]


async def test_watch_without_version_lists_first_and_sends_bookmarks(monkeypatch: pytest.MonkeyPatch, api: APIServer, client: KubeClient) -> None:
    monkeypatch.setattr(apiserver, "BOOKMARK_INTERVAL", 0.2)
    await client.create(W, "widgets", "default", widget("first"))
    bookmarked = asyncio.Event()

    def seen(event: dict[str, Any]) -> bool:
        if event["type"] == "BOOKMARK":
            bookmarked.set()
        return event["object"]["metadata"].get("name") == "second"

    watcher = asyncio.create_task(
        _watch_lines(api, f"/apis/{W}/namespaces/default/widgets", {"watch": "true", "allowWatchBookmarks": "true"}, until=seen)
    )
    # After a bookmark (an idle period), the stream must still deliver events.
    await asyncio.wait_for(bookmarked.wait(), 10)
    await client.create(W, "widgets", "default", widget("second"))
    events = await watcher
    assert (events[0]["type"], events[0]["object"]["metadata"]["name"]) == ("ADDED", "first")
    assert (events[-1]["type"], events[-1]["object"]["metadata"]["name"]) == ("ADDED", "second")


async def test_watch_from_a_forgotten_version_is_gone(monkeypatch: pytest.MonkeyPatch, crd_dir: Any) -> None:
    monkeypatch.setattr(apiserver, "WATCH_HISTORY", 3)
    async with APIServer(crd_dirs=[crd_dir]) as api, KubeClient(api.url) as client:
        first = await client.create(W, "widgets", "default", widget("w0"))
        for index in range(1, 6):
            await client.create(W, "widgets", "default", widget(f"w{index}"))
        events = await _watch_lines(api, f"/apis/{W}/namespaces/default/widgets", {"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"]}, 1)
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_finalizers_then_garbage_collection(client: KubeClient) -> None:
    owner = await client.create(W, "widgets", "default", {**widget("owner"), "metadata": {"name": "owner", "finalizers": ["test/hold"]}})
    ref = {"apiVersion": W, "kind": "Widget", "name": "owner", "uid": owner["metadata"]["uid"], "controller": True}
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "child", "ownerReferences": [ref]}})
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "orphan-me", "ownerReferences": [ref]}})
    await client.delete(W, "widgets", "default", "owner")
    held = await client.get(W, "widgets", "default", "owner")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert await client.get("v1", "configmaps", "default", "child") is not None
    with pytest.raises(ApiError):  # no new finalizers on a deleting object
        await client.patch(W, "widgets", "default", "owner", {"metadata": {"finalizers": ["test/hold", "test/more"]}})
    await client.patch(W, "widgets", "default", "owner", {"metadata": {"finalizers": None}})
    assert await client.get(W, "widgets", "default", "owner") is None
    assert await client.get("v1", "configmaps", "default", "child") is None
    assert await client.get("v1", "configmaps", "default", "orphan-me") is None


async def test_orphan_propagation_keeps_dependents(client: KubeClient) -> None:
    owner = await client.create(W, "widgets", "default", widget("owner2"))
    ref = {"apiVersion": W, "kind": "Widget", "name": "owner2", "uid": owner["metadata"]["uid"]}
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "kept", "ownerReferences": [ref]}})
    await client.request("DELETE", f"/apis/{W}/namespaces/default/widgets/owner2", params={"propagationPolicy": "Orphan"})
    kept = await client.get("v1", "configmaps", "default", "kept")
    assert kept is not None and not kept["metadata"].get("ownerReferences")


async def test_a_dependent_created_without_a_live_owner_is_collected(client: KubeClient) -> None:
    """As a cluster's garbage collector does: the owner is looked up by kind, name and uid."""
    owner = await client.create(W, "widgets", "default", widget("owner3"))
    live = {"apiVersion": W, "kind": "Widget", "name": "owner3", "uid": owner["metadata"]["uid"]}
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "owned", "ownerReferences": [live]}})
    for name, ref in {
        "no-such-owner": {**live, "name": "absent", "uid": "0000"},
        "stale-uid": {**live, "uid": "an-older-owner3"},
    }.items():
        created = await client.create("v1", "configmaps", "default", {"metadata": {"name": name, "ownerReferences": [ref]}})
        assert created["metadata"]["name"] == name  # accepted, then collected
    # An owner of a kind the API does not serve cannot be looked up: kept (a collector deletes nothing it cannot check).
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "name": "g", "uid": "1111"}
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "unknown-owner", "ownerReferences": [unknown]}})
    # The collector looks at each dependent a moment after its creation, in order: once one
    # created after all the others is collected, it has looked at every one of them.
    last = {**live, "name": "absent", "uid": "0001"}
    await client.create("v1", "configmaps", "default", {"metadata": {"name": "collected-last", "ownerReferences": [last]}})

    async def collected() -> bool:
        return await client.get("v1", "configmaps", "default", "collected-last") is None

    await eventually(collected, timeout=10, what="the last dangling dependent collected")
    assert await client.get("v1", "configmaps", "default", "no-such-owner") is None
    assert await client.get("v1", "configmaps", "default", "stale-uid") is None
    assert await client.get("v1", "configmaps", "default", "owned") is not None
    assert await client.get("v1", "configmaps", "default", "unknown-owner") is not None


async def _invalid(coro: Any) -> str:
    with pytest.raises(ApiError) as info:
        await coro
    assert info.value.status == 422, info.value
    return info.value.message


POD = {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}


async def test_what_a_cluster_refuses_to_change_or_store(client: KubeClient) -> None:
    """As upstream kube-apiserver v1.32 answers (tests/integration runs the same tests on one)."""
    pod = await client.create("v1", "pods", "default", POD)
    # What admission adds to a pod (not to a template).
    assert pod["spec"]["serviceAccountName"] == "default" and pod["spec"]["enableServiceLinks"] is True
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300} in pod["spec"]["tolerations"]
    assert "Forbidden: pod updates may not change fields other than `spec.containers[*].image`" in await _invalid(
        client.patch("v1", "pods", "default", "p", {"spec": {"restartPolicy": "Always"}}))
    assert (await client.patch("v1", "pods", "default", "p", {"spec": {"containers": [{"name": "c", "image": "y"}]}}))["spec"]["containers"][0]["image"] == "y"
    done = {"phase": "Succeeded", "containerStatuses": [{"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]}
    await client.patch("v1", "pods", "default", "p", {"status": done}, subresource="status")
    again = {"phase": "Running", "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}]}
    assert "may not be transitioned to non-terminated state" in await _invalid(
        client.patch("v1", "pods", "default", "p", {"status": again}, subresource="status"))
    assert "must be no more than 63 characters" in await _invalid(
        client.create("v1", "configmaps", "default", {"metadata": {"name": "c", "labels": {"a": "x" * 64}}}))
    assert "a DNS-1035 label" in await _invalid(
        client.create("v1", "services", "default", {"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}}))
    svc = await client.create("v1", "services", "default", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
    assert "may not change once set" in await _invalid(client.patch("v1", "services", "default", "svc", {"spec": {"clusterIP": "10.96.99.99"}}))
    replaced = await client.request("PUT", "/api/v1/namespaces/default/services/svc", body={**svc, "spec": {"ports": [{"port": 81}]}})
    assert replaced["spec"]["clusterIP"] == svc["spec"]["clusterIP"]  # kept when an update leaves it out
    dep = {"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    await client.create("apps/v1", "deployments", "default", dep)
    assert 'Deployment.apps "d" is invalid: spec.selector' in await _invalid(client.patch(
        "apps/v1", "deployments", "default", "d", {"spec": {"selector": {"matchLabels": {"a": "c"}}, "template": {"metadata": {"labels": {"a": "c"}}}}}))
    assert "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas" in await _invalid(client.patch(
        "apps/v1", "deployments", "default", "d", {"status": {"replicas": 1, "readyReplicas": 2}}, subresource="status"))
    assert "does not match event.namespace" in await _invalid(client.create("v1", "events", "default", {
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}, "reason": "X", "message": "m"}))
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "things.example.k8s.io"},
           "spec": {"group": "example.k8s.io", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    assert "protected groups must have approval annotation" in await _invalid(
        client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd))
    empty = await client.create("v1", "configmaps", "default", {"metadata": {"name": "plain", "labels": {}, "annotations": {}}})
    assert "labels" not in empty["metadata"] and "annotations" not in empty["metadata"]


async def test_namespace_deletion_removes_its_objects(client: KubeClient) -> None:
    await client.create("v1", "namespaces", None, {"metadata": {"name": "scratch"}})
    await client.create("v1", "configmaps", "scratch", {"metadata": {"name": "c"}})
    with pytest.raises(ApiError) as info:
        await client.create("v1", "configmaps", "nowhere", {"metadata": {"name": "c"}})
    assert info.value.status == 404
    await client.delete("v1", "namespaces", None, "scratch")
    assert await client.get("v1", "configmaps", "scratch", "c") is None
    assert await client.get("v1", "namespaces", None, "scratch") is None


async def test_discovery_and_tables_for_kubectl(api: APIServer, client: KubeClient) -> None:
    core = await client.request("GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["namespaced"] and "watch" in pods["verbs"] and "po" in pods["shortNames"]
    assert any(r["name"] == "pods/status" for r in core["resources"])
    groups = await client.request("GET", "/apis")
    assert {g["name"] for g in groups["groups"]} >= {"apps", GROUP, "apiextensions.k8s.io"}
    version = await client.request("GET", f"/apis/{W}")
    names = {r["name"] for r in version["resources"]}
    assert names == {"widgets", "widgets/status"}
    await client.create(W, "widgets", "default", widget("t", size=7))
    await client.patch(W, "widgets", "default", "t", {"status": {"phase": "Done", "conditions": [{"type": "Ready", "status": "True"}]}}, subresource="status")
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
        async with session.get(f"{api.url}/apis/{W}/namespaces/default/widgets", headers=headers) as response:
            table = await response.json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Phase", "Ready", "Size", "Age"]
    assert table["rows"][0]["cells"][:4] == ["t", "Done", "True", 7]


async def test_crds_of_the_project_load_and_are_served() -> None:
    async with APIServer(crd_dirs=[REPO_ROOT / "crds"]) as api, KubeClient(api.url) as client:
        version = await client.request("GET", f"/apis/{constants.API_VERSION}")
        names = {r["name"] for r in version["resources"]}
        for plural in constants.PLURALS.values():
            assert plural in names and f"{plural}/status" in names
        crds = await client.listing("apiextensions.k8s.io/v1", "customresourcedefinitions")
        assert len(crds["items"]) == len(constants.PLURALS)
        established = [c for c in crds["items"] if any(x["type"] == "Established" and x["status"] == "True" for x in c["status"]["conditions"])]
        assert len(established) == len(constants.PLURALS)


async def test_crd_created_through_the_api_is_served_and_removed(client: KubeClient) -> None:
    gadget = json.loads(json.dumps(WIDGET_CRD).replace("widget", "gadget").replace("Widget", "Gadget").replace('"wd"', '"gd"'))
    await client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, gadget)
    await client.create(W, "gadgets", "default", {"apiVersion": W, "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 1}})
    assert (await client.get(W, "gadgets", "default", "g")) is not None
    await client.delete("apiextensions.k8s.io/v1", "customresourcedefinitions", None, gadget["metadata"]["name"])
    with pytest.raises(ApiError) as info:
        await client.listing(W, "gadgets", "default")
    assert info.value.status == 404


def test_parse_target_handles_namespaces_and_subresources() -> None:
    assert parse_target("/api/v1/namespaces").plural == "namespaces"  # type: ignore[union-attr]
    ns = parse_target("/api/v1/namespaces/default")
    assert ns is not None and (ns.plural, ns.name, ns.namespace) == ("namespaces", "default", None)
    status = parse_target("/api/v1/namespaces/default/status")
    assert status is not None and (status.plural, status.name, status.subresource) == ("namespaces", "default", "status")
    pod = parse_target("/api/v1/namespaces/x/pods/p/log")
    assert pod is not None and (pod.namespace, pod.plural, pod.name, pod.subresource) == ("x", "pods", "p", "log")
    assert parse_target("/apis/apps/v1") is None
