"""The chart's RBAC grants exactly what the operator's code uses: no more, no less, no `*`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chartutil import of_kind, one, render
from tests.chart.rbac_scan import Needs, Permission, scan


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


def test_no_escalation_verbs_or_secrets(needs: Needs) -> None:
    everything = needs.namespaced | needs.cluster | needs.namespaced_only | needs.clusterwide_only
    for docs in (render(), render("namespaced-values.yaml")):
        for kind in ("ClusterRole", "Role"):
            for role in of_kind(docs, kind):
                for group, resource, verb in grants(role["rules"]):
                    assert verb not in {"escalate", "bind", "impersonate", "deletecollection"}
                    assert resource not in {"secrets", "roles", "clusterroles", "rolebindings", "clusterrolebindings"}
                    assert (group, resource, verb) in everything
