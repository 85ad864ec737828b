"""Pods that do not start: the one check every kind's reconciler makes of its pods.

A pod still not running ASCEND_MLOPS_POD_START_TIMEOUT seconds after it was
scheduled (a volume that never mounts, an image the node does not have with
`imagePullPolicy: Never`, a pod sandbox the runtime cannot create) is reported
by its resource with reason PodStartTimeout: which pod, for how long, and the
kubelet's reason. That reason is in the pod's status when the container waits
with one (ErrImageNeverPull, CreateContainerConfigError); a pod stuck on a
volume or its sandbox says only ContainerCreating there, and the kubelet's
reason (FailedMount, FailedCreatePodSandBox) is in its Events. Events are not
watched (there are far too many), so they are read with one bounded LIST per
pod, filtered by the API server, and only for the few pods already past the
deadline whose status says nothing.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ascend_mlops.reconcilers import pods as P
from ascend_mlops.reconcilers.engine import Engine

logger = logging.getLogger(__name__)

EVENTS_LIMIT: Final = 50  # a kubelet repeats an Event by counting it: a stuck pod has a handful
# How often a resource with a pod past the deadline is looked at again, though no watch event
# comes: the time it has waited and the kubelet's latest Event stay current.
REFRESH_SECONDS: Final = 60.0
# Past the deadline the requeue fires; a little later than exact, so that the pod is past it then.
DEADLINE_SLACK: Final = 0.5


@dataclass(frozen=True)
class StartCheck:
    message: str  # "" when no pod is past the timeout
    pods: tuple[str, ...] = ()  # the pods past it, longest waiting first
    requeue_after: float | None = None  # when to look again (None: no pod waits to start)


async def check(rt: Engine, namespace: str, states: Iterable[P.PodState], now: datetime.datetime) -> StartCheck:
    """The pods of `states` (one resource's) that have not started within the timeout, in one message."""
    slow, next_deadline = P.slow_starts(states, now, rt.settings.pod_start_timeout)
    requeue = None if next_deadline is None else next_deadline + DEADLINE_SLACK
    if not slow:
        return StartCheck("", requeue_after=requeue)
    messages = []
    for item in slow[: P.STUCK_PODS_NAMED]:
        reason = P.status_reason(item.state)
        if reason is None:
            reason = P.newest_warning(await pod_warnings(rt, namespace, item.state.name), item.state)
        messages.append(P.slow_start_message(item, reason))
    requeue = REFRESH_SECONDS if requeue is None else min(requeue, REFRESH_SECONDS)
    return StartCheck(
        P.slow_starts_message(messages, len(slow)), tuple(s.state.name for s in slow), requeue_after=requeue
    )


async def pod_warnings(rt: Engine, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The Warning Events about one pod (RBAC: list events). None found, or not allowed to look: []."""
    try:
        return await rt.client.list(
            "v1", "events", namespace,
            fields={"involvedObject.kind": "Pod", "involvedObject.name": pod, "type": "Warning"}, limit=EVENTS_LIMIT,
        )
    except Exception as exc:  # a missing RBAC rule or a slow API server: the message says less, nothing fails
        logger.debug("%s/%s: cannot list its Events: %s", namespace, pod, exc)
        return []
