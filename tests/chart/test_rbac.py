"""The chart's RBAC grants exactly what the operator's code uses: no more, no less, no `*`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.chartutil import of_kind, one, render
from tests.chart.rbac_scan import Needs, Permission, ScanError, scan


@pytest.fixture(scope="module")
def needs() -> Needs:
    return scan()


def grants(rules: list[dict[str, Any]]) -> set[Permission]:
    found: set[Permission] = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys (resourceNames, nonResourceURLs?): {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    found.add((group, resource, verb))
    return found


def no_wildcards(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in value for value in rule[key]), f"wildcard in {key}: {rule}"


def explain(needs: Needs, missing: set[Permission], extra: set[Permission]) -> str:
    lines = []
    for perm in sorted(missing):
        lines.append(f"  missing {perm}: used at {needs.sources.get(perm, ['?'])[:3]}")
    for perm in sorted(extra):
        lines.append(f"  granted but unused {perm}")
    return "chart RBAC (charts/ascend-mlops/templates/_helpers.tpl) differs from the code:\n" + "\n".join(lines)


def assert_exact(granted: set[Permission], wanted: set[Permission], needs: Needs) -> None:
    assert granted == wanted, explain(needs, wanted - granted, granted - wanted)


def test_the_scan_finds_the_operators_core_calls(needs: Needs) -> None:
    # Guards the scanner itself: if it stopped seeing calls, "exact" would be vacuous.
    assert ("", "pods", "create") in needs.namespaced
    assert ("ascend.mlops.dev", "trainingjobs", "watch") in needs.namespaced
    assert ("ascend.mlops.dev", "inferenceservices/status", "patch") in needs.namespaced
    assert ("", "events", "create") in needs.namespaced
    assert ("", "pods/log", "get") in needs.namespaced  # client.read_pod_log, via CLIENT_FIXED
    assert len(needs.namespaced) >= 15


def test_cluster_wide_install_grants_exactly_what_the_code_uses(needs: Needs) -> None:
    docs = render()
    assert not of_kind(docs, "Role")
    rules = one(docs, "ClusterRole")["rules"]
    no_wildcards(rules)
    assert_exact(grants(rules), needs.namespaced | needs.cluster | needs.clusterwide_only, needs)


def test_namespaced_install_splits_the_same_grants_into_roles(needs: Needs) -> None:
    docs = render("namespaced-values.yaml")
    cluster_rules = one(docs, "ClusterRole")["rules"]
    no_wildcards(cluster_rules)
    assert_exact(grants(cluster_rules), needs.cluster | needs.namespaced_only, needs)
    roles = of_kind(docs, "Role")
    assert len(roles) == 2
    for role in roles:
        no_wildcards(role["rules"])
        assert_exact(grants(role["rules"]), needs.namespaced, needs)


def test_no_escalation_verbs_and_secrets_only_by_name(needs: Needs) -> None:
    everything = needs.namespaced | needs.cluster | needs.namespaced_only | needs.clusterwide_only
    for docs in (render(), render("namespaced-values.yaml")):
        for kind in ("ClusterRole", "Role"):
            for role in of_kind(docs, kind):
                for group, resource, verb in grants(role["rules"]):
                    assert verb not in {"escalate", "bind", "impersonate", "deletecollection"}
                    assert resource not in {"roles", "clusterroles", "rolebindings", "clusterrolebindings"}
                    if resource == "secrets":
                        # The object-storage Secret a resource names, read by name to check its
                        # keys; list/watch would hand the operator every Secret's values.
                        assert (group, verb) == ("", "get")
                    assert (group, resource, verb) in everything


FAKE_OPERATOR = '''
import kopf

GROUP = "example.dev"
PLURALS = {"Widget": "widgets"}


class Client:
    async def get(self, *a): ...
    async def create(self, *a): ...
    async def replace(self, *a): ...
    async def patch(self, *a, subresource=None): ...


async def create_child(rt, owner, api_version, plural, body):
    await rt.client.create(api_version, plural, "ns", body)


@kopf.on.event(GROUP, "v1", PLURALS["Widget"])
async def widget_event(**_): ...


@kopf.on.create("apps", "v1", "deployments")
async def deployment_created(**_): ...


@kopf.on.event("v1", "pods")
async def pod_event(**_): ...


async def reconcile(rt, key):
    await rt.client.get(GROUP + "/v1", PLURALS["Widget"], "ns", "w")
    await rt.client.patch(GROUP + "/v1", "widgets", "ns", "w", {}, subresource="status")
    await create_child(rt, None, "v1", "configmaps", {})
    await rt.client.replace("v1", "services", "ns", "s", {})
    kopf.info({}, reason="Done", message="ok")


@kopf.on.startup()
async def startup(settings, **_):
    settings.peering.standalone = True
    settings.scanning.disabled = True
'''


def test_the_scanner_reads_decorators_helpers_and_client_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fakeop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(FAKE_OPERATOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    needs = scan(package, "fakeop")
    assert needs.namespaced == {
        ("example.dev", "widgets", "list"),
        ("example.dev", "widgets", "watch"),
        ("example.dev", "widgets", "get"),
        ("example.dev", "widgets/status", "patch"),
        # a change-tracking handler: Kopf patches annotations/finalizers too
        ("apps", "deployments", "list"),
        ("apps", "deployments", "watch"),
        ("apps", "deployments", "patch"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "configmaps", "create"),  # through the helper, resolved at its call site
        ("", "services", "update"),
        ("", "events", "create"),
    }
    # Scanning and peering are off: no CRD, namespace or peering permissions.
    assert needs.cluster == set() and needs.namespaced_only == set()


def test_the_scanner_refuses_what_it_cannot_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "opaque"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(
        "async def reconcile(rt, plural_from_somewhere):\n"
        "    await rt.client.get('v1', compute(plural_from_somewhere), 'ns', 'x')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ScanError, match="cannot evaluate"):
        scan(package, "opaque")
    (package / "main.py").write_text("async def go(rt):\n    await rt.client.request('GET', '/api/v1/pods')\n")
    with pytest.raises(ScanError, match="not a known API verb"):
        scan(package, "opaque")
