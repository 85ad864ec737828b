"""What the real apiserver does that the sandbox's does not: schemas and CEL rules, the objects we write, the garbage collector."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from ascend_mlops.api import catalog, constants
from ascend_mlops.api.specs import parse_inference_service
from ascend_mlops.builders import common, inference, serving
from tests.cluster import realcluster as rc
from tests.cluster.conftest import SMALL_RESOURCES, Seed
from tests.helpers import REPO_ROOT
from tests.unit.test_crds import DELETE, MALFORMED, example_docs, flowers, set_path

# Documents that break one CEL rule each (x-kubernetes-validations), which no structural schema can express.
CEL_VIOLATIONS = [
    ("spec.replicas and spec.autoscaling", {"replicas": 2, "autoscaling": {"maxReplicas": 4}}),
    ("spec.autoscaling.minReplicas above maxReplicas", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
]


def cel_rules() -> list[str]:
    rules = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            rules.extend(rule["rule"] for rule in node.get("x-kubernetes-validations") or [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return rules


def dry_run(cluster: rc.Cluster, doc: dict[str, Any], namespace: str) -> tuple[int, str]:
    result = cluster.run("kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", "-",
                         input=yaml.safe_dump(doc), check=False)
    return result.returncode, result.stderr


def test_every_invalid_example_is_rejected_and_every_example_admitted(cluster: rc.Cluster) -> None:
    assert len(CEL_VIOLATIONS) >= len(cel_rules()) - 1, "a CEL rule without a case here"  # one rule is a default guard
    with cluster.namespace("schema") as ns:
        # The check can fail: every example is admitted as it is.
        for name, doc in example_docs():
            code, err = dry_run(cluster, doc, ns)
            assert code == 0, f"{name}: {err}"
        rejected = []
        for kind, path, value in MALFORMED:
            doc = set_path(flowers(kind), path, value)
            code, err = dry_run(cluster, doc, ns)
            assert code != 0, f"{kind} with {path}={value if value is not DELETE else '(deleted)'} was admitted"
            rejected.append(err.strip().splitlines()[-1])
        for what, spec in CEL_VIOLATIONS:
            doc = flowers(constants.INFERENCE_SERVICE)
            doc["spec"].pop("replicas", None)
            doc["spec"].update(copy.deepcopy(spec))
            code, err = dry_run(cluster, doc, ns)
            assert code != 0, f"{what} was admitted (CEL not evaluated?)"
            assert "Invalid value" in err or "invalid" in err.lower(), err
        print(f"the real apiserver rejected {len(MALFORMED)} malformed manifests and {len(CEL_VIOLATIONS)} CEL violations")


def is_subset(wanted: Any, stored: Any, path: str = "") -> list[str]:
    """Where `stored` lacks or changed what `wanted` has (the apiserver may add defaults, never drop ours)."""
    if isinstance(wanted, dict):
        if not isinstance(stored, dict):
            return [path]
        return [p for key, value in wanted.items() for p in is_subset(value, stored.get(key), f"{path}.{key}")]
    if isinstance(wanted, list):
        if not isinstance(stored, list) or len(stored) != len(wanted):
            return [path]
        return [p for i, (w, s) in enumerate(zip(wanted, stored, strict=True)) for p in is_subset(w, s, f"{path}[{i}]")]
    return [] if wanted == stored else [f"{path}: {wanted!r} != {stored!r}"]


def exposed_service(namespace: str, seed: Seed, name: str, **spec: Any) -> dict[str, Any]:
    version = f"pvc://flowers-data/runs/flowers-resnet50/{seed.version}"
    return {
        "apiVersion": constants.API_VERSION, "kind": constants.INFERENCE_SERVICE,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": f"{version}/om/model", "labels": f"{version}/labels.txt"}, "runtime": "acl",
                 "resources": SMALL_RESOURCES, **spec},
    }


def owner_of(cluster: rc.Cluster, name: str, namespace: str) -> common.Owner:
    obj = cluster.get(constants.INFERENCE_SERVICE, name, namespace)
    assert obj is not None
    return common.Owner(kind=constants.INFERENCE_SERVICE, name=name, namespace=namespace, uid=obj["metadata"]["uid"])


def test_ingress_httproute_and_hpa_are_stored_with_every_field_we_write(cluster: rc.Cluster, seed: Seed) -> None:
    with cluster.namespace("expose") as ns:
        cluster.claim(ns, "flowers-data", host_dir=seed.data)
        doc = exposed_service(ns, seed, "online", exposure={"type": "Ingress"},
                              autoscaling={"minReplicas": 1, "maxReplicas": 2, "metric": "cpu", "target": 70})
        cluster.apply(doc)
        spec = parse_inference_service(doc["spec"], catalog.DEFAULT_ACCELERATOR_RESOURCE)
        assert spec.exposure is not None and spec.autoscaling is not None
        owner = owner_of(cluster, "online", ns)
        ingress = rc.eventually(lambda: cluster.get("ingress", serving.ingress_name("online"), ns), timeout=120, what="the Ingress")
        wanted = serving.build_ingress(owner, spec.exposure, f"online.{ns}.{rc.DOMAIN}", "")
        assert is_subset(wanted["spec"], ingress["spec"]) == []
        assert ingress["metadata"]["ownerReferences"] == wanted["metadata"]["ownerReferences"]
        hpa = rc.eventually(lambda: cluster.get("hpa", inference.deployment_name("online"), ns), timeout=120, what="the HPA")
        wanted = serving.build_hpa(owner, spec.autoscaling)
        assert is_subset(wanted["spec"], hpa["spec"]) == []
        cluster.wait_condition(constants.INFERENCE_SERVICE, "online", ns, "Ready", timeout=600)

        # HTTPRoute exposure needs a Gateway named in the operator's settings: upgrade the release for it.
        upgrade = ["helm", "upgrade", rc.RELEASE, str(REPO_ROOT / "charts" / "ascend-mlops"), "-n", rc.SYSTEM_NAMESPACE,
                   "--reuse-values", "--wait", "--timeout", "3m"]
        cluster.run(*upgrade, "--set", f"gateway.parent={rc.GATEWAY}", timeout=300)
        try:
            doc = exposed_service(ns, seed, "routed", replicas=1, exposure={"type": "HTTPRoute"})
            cluster.apply(doc)
            owner = owner_of(cluster, "routed", ns)
            route = rc.eventually(lambda: cluster.get("httproute", inference.route_name("routed"), ns), timeout=180,
                                  what="the HTTPRoute")
            gateway = tuple(rc.GATEWAY.split("/"))
            wanted = inference.build_httproute(owner, (gateway[0], gateway[1]), f"routed.{ns}.{rc.DOMAIN}", None)
            assert is_subset(wanted["spec"], route["spec"]) == []
            cluster.wait_condition(constants.INFERENCE_SERVICE, "routed", ns, "Ready", timeout=600)
            isvc = cluster.get(constants.INFERENCE_SERVICE, "routed", ns)
            assert isvc is not None and isvc["status"]["url"] == f"http://routed.{ns}.{rc.DOMAIN}"
        finally:
            cluster.run(*upgrade, "--set", "gateway.parent=", timeout=300)


@pytest.fixture
def gc_namespace(cluster: rc.Cluster, seed: Seed) -> Any:
    with cluster.namespace("gc") as ns:
        cluster.claim(ns, "flowers-data", host_dir=seed.data)
        yield ns


def children(cluster: rc.Cluster, namespace: str, kind: str, name: str) -> list[str]:
    found = []
    for plural in ("pods", "services", "deployments", "replicasets", "ingresses"):
        for obj in cluster.list(plural, namespace):
            refs = obj["metadata"].get("ownerReferences") or []
            if rc.owned_by(obj, kind, name) or any(r["kind"] == kind and r["name"] == name for r in refs):
                found.append(f"{plural}/{obj['metadata']['name']}")
    return found


def test_kubectl_delete_lets_the_garbage_collector_remove_every_child(cluster: rc.Cluster, seed: Seed, gc_namespace: str) -> None:
    ns = gc_namespace
    job = {
        "apiVersion": constants.API_VERSION, "kind": constants.TRAINING_JOB, "metadata": {"name": "gc", "namespace": ns},
        "spec": {"algorithm": {"name": "mobilenet_v1", "hyperparameters": {"epochs": 50, "image_size": 32}},
                 "dataset": {"uri": "pvc://flowers-data/datasets/flowers"}, "output": {"uri": f"pvc://flowers-data/runs/gc-{ns}"},
                 "workers": 2, "resources": SMALL_RESOURCES},
    }
    cluster.apply([job, exposed_service(ns, seed, "gc", replicas=1, exposure={"type": "Ingress"})])
    rc.eventually(lambda: len([c for c in children(cluster, ns, constants.TRAINING_JOB, "gc") if c.startswith("pods/")]) == 2,
                  timeout=180, what="the two training pods")
    rc.eventually(lambda: {p.split("/")[0] for p in children(cluster, ns, constants.INFERENCE_SERVICE, "gc")}
                  >= {"pods", "services", "deployments", "ingresses"}, timeout=180, what="the service's children")
    # Every child points at its owner's uid, as the controller, so the garbage collector follows it.
    for kind in (constants.TRAINING_JOB, constants.INFERENCE_SERVICE):
        owner = cluster.get(kind, "gc", ns)
        assert owner is not None
        direct = [obj for plural in ("pods", "services", "deployments", "ingresses") for obj in cluster.list(plural, ns)
                  if any(r["kind"] == kind for r in obj["metadata"].get("ownerReferences") or [])]
        assert direct
        for obj in direct:
            [ref] = obj["metadata"]["ownerReferences"]
            assert (ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (owner["metadata"]["uid"], True, True), obj["metadata"]
    for kind in (constants.TRAINING_JOB, constants.INFERENCE_SERVICE):
        cluster.kubectl("delete", kind, "gc", "-n", ns, "--wait=true", "--timeout=120s", timeout=150)
        rc.eventually(lambda k=kind: children(cluster, ns, k, "gc") == [], timeout=180, what=f"every child of {kind}/gc gone")  # type: ignore[misc]
