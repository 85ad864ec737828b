"""The chart's RBAC (derived from the code) is enough: the operator was never refused anything by the real apiserver."""

from __future__ import annotations

import re

from tests.cluster import realcluster as rc

REFUSED = re.compile(r"forbidden|(?<![,.:\d])\b403\b", re.IGNORECASE)
# A 403 from the NamespaceLifecycle admission plugin, not RBAC: a test namespace deleted while
# its resources still reconcile (the operator logs it at INFO and retries until the object goes).
TERMINATING = "because it is being terminated"


def refusals(logs: str) -> list[str]:
    return [line for line in logs.splitlines() if REFUSED.search(line) and TERMINATING not in line]


def test_the_pattern_finds_a_refusal_and_not_a_timestamp() -> None:
    assert REFUSED.search("kopf ... APIForbiddenError: ('pods is forbidden: User ...', {'code': 403})")
    assert REFUSED.search("HTTP 403 from the API")
    assert not REFUSED.search("[2026-12-07 16:02:52,403] kopf.objects [INFO] Handler 'child_event' succeeded.")
    rbac = ('reconcile failed (POST /api/v1/namespaces/a/services: 403 Forbidden: services "s" is forbidden: '
            'User "system:serviceaccount:x:y" cannot create resource "services" in API group "" in the namespace "a")')
    lifecycle = ('reconcile failed (POST /api/v1/namespaces/a/services: 403 Forbidden: services "s" is forbidden: '
                 'unable to create new content in namespace a because it is being terminated); retrying in 0.5s')
    assert refusals(f"{rbac}\n{lifecycle}") == [rbac]


def test_the_operator_was_never_forbidden(cluster: rc.Cluster) -> None:
    """Run last (conftest orders it): the logs of every operator pod of the session, deleted ones included."""
    logs = cluster.all_operator_logs()
    assert "Activity 'login' succeeded" in logs  # the logs are there to look at
    # A 403 as a status code, not the milliseconds of a timestamp ("[2026-12-07 16:02:52,403]").
    refused = refusals(logs)
    assert refused == [], "\n".join(refused[:20])
