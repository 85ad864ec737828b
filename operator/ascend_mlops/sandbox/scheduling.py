"""The sandbox's nodes and the scheduler's filters, as pure functions.

Two simulated nodes: a plain CPU worker (where training and conversion pods
land) and an Ascend 310 node that advertises `huawei.com/Ascend310` with the
labels and taint the MindX DL device plugin puts on real ones
(ascend-reference.md §2). A pod is checked against each node with the default
scheduler's filters in their order (taints, node selector / affinity, resource
fit), and an unschedulable pod gets the scheduler's own message:
`0/2 nodes are available: 1 Insufficient huawei.com/Ascend910, 1 node(s) didn't
match Pod's node affinity/selector.`
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ASCEND_RESOURCE = "huawei.com/Ascend310"
CPU_NODE = "sandbox-cpu-0"
ASCEND_NODE = "sandbox-ascend310-0"
KUBELET_VERSION = "v1.33.0-sandbox"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


def parse_quantity(value: Any) -> float:
    """A resource.Quantity ("500m", "6Gi", "1e3", 2) as a number of base units."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (such as 500m, 2, 6Gi)")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


@dataclass(frozen=True)
class NodeConfig:
    name: str
    labels: Mapping[str, str]
    capacity: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...] = ()


def _arch() -> tuple[str, str]:
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64", "huawei-arm"
    return "amd64", "huawei-x86"


def default_nodes(npus: int = 4) -> list[NodeConfig]:
    arch, host_arch = _arch()

    def base(name: str) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
            "node-role.kubernetes.io/worker": "",
        }

    return [
        NodeConfig(CPU_NODE, base(CPU_NODE), {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"}),
        NodeConfig(
            ASCEND_NODE,
            {
                **base(ASCEND_NODE),
                "accelerator": "huawei-Ascend310",
                "host-arch": host_arch,
                "node.kubernetes.io/npu.chip.name": "310",
                "workerselector": "dls-worker-node",
            },
            # An Atlas 300I inference card carries four Ascend 310 chips.
            {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "200Gi", ASCEND_RESOURCE: str(npus)},
            ({"key": ASCEND_RESOURCE, "effect": "NoSchedule"},),
        ),
    ]


def node_object(config: NodeConfig, now: str) -> dict[str, Any]:
    capacity = dict(config.capacity)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.name, "labels": dict(config.labels), "annotations": {"ascend.mlops.dev/sandbox": "true"}},
        "spec": {"taints": [dict(t) for t in config.taints]} if config.taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": config.name}],
            "conditions": [
                {
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "the sandbox kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                },
            ],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": _arch()[0],
                "containerRuntimeVersion": "sandbox://local-processes",
            },
        },
    }


def pod_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """Sum of the containers' requests (limits stand in for absent requests, as the API defaults them)."""
    total: dict[str, float] = {}
    for container in pod.get("spec", {}).get("containers") or []:
        resources = container.get("resources") or {}
        requests = dict(resources.get("limits") or {})
        requests.update(resources.get("requests") or {})
        for name, value in requests.items():
            total[name] = total.get(name, 0.0) + parse_quantity(value)
    return total


def _tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        operator = toleration.get("operator", "Equal")
        key = toleration.get("key")
        if operator == "Exists" and (not key or key == taint.get("key")):
            return True
        if operator == "Equal" and key == taint.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _term_matches(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for expression in term.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        value = labels.get(key)
        if operator == "In" and value not in values:
            return False
        if operator == "NotIn" and value in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator in ("Gt", "Lt"):
            try:
                number, limit = int(value or ""), int(values[0])
            except (ValueError, IndexError):
                return False
            if (operator == "Gt" and not number > limit) or (operator == "Lt" and not number < limit):
                return False
    return True


def filter_node(pod: Mapping[str, Any], node: Mapping[str, Any], used: Mapping[str, float]) -> str | None:
    """None if the pod fits the node, else the first failing filter's reason (scheduler wording)."""
    spec = pod.get("spec", {})
    labels = node.get("metadata", {}).get("labels") or {}
    if node.get("spec", {}).get("unschedulable"):
        return "node(s) were unschedulable"
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(spec.get("tolerations") or [], taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return "node(s) didn't match Pod's node affinity/selector"
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
    if required and not any(_term_matches(term, labels) for term in required):
        return "node(s) didn't match Pod's node affinity/selector"
    allocatable = {k: parse_quantity(v) for k, v in (node.get("status", {}).get("allocatable") or {}).items()}
    insufficient = []
    if used.get("pods", 0) + 1 > allocatable.get("pods", 110):
        insufficient.append("Too many pods")
    for name, amount in sorted(pod_requests(pod).items()):
        if amount <= 0:
            continue
        if used.get(name, 0.0) + amount > allocatable.get(name, 0.0) + 1e-9:
            insufficient.append(f"Insufficient {name}")
    return ", ".join(insufficient) or None


@dataclass
class Decision:
    node: str | None
    message: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


def schedule(pod: Mapping[str, Any], nodes: list[Mapping[str, Any]], usage: Mapping[str, Mapping[str, float]]) -> Decision:
    """Pick the first node that fits (least used NPUs first), or explain why none does."""
    reasons: dict[str, int] = {}
    fitting = []
    for node in nodes:
        name = node["metadata"]["name"]
        reason = filter_node(pod, node, usage.get(name, {}))
        if reason is None:
            fitting.append(node)
        else:
            for part in reason.split(", "):
                reasons[part] = reasons.get(part, 0) + 1
    if fitting:
        # Spread like the default scoring does, roughly: the node with most free CPU wins.
        def free_cpu(node: Mapping[str, Any]) -> float:
            allocatable = parse_quantity((node.get("status", {}).get("allocatable") or {}).get("cpu", "0"))
            return allocatable - usage.get(node["metadata"]["name"], {}).get("cpu", 0.0)

        # Pods that do not need the accelerator avoid the accelerator node when they can.
        wants_npu = any(k.startswith("huawei.com/") for k in pod_requests(pod))
        fitting.sort(key=lambda n: (not wants_npu and ASCEND_RESOURCE in (n.get("status", {}).get("allocatable") or {}), -free_cpu(n)))
        return Decision(fitting[0]["metadata"]["name"])
    summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    message = (
        f"0/{len(nodes)} nodes are available: {summary}. preemption: 0/{len(nodes)} nodes are available: "
        f"{len(nodes)} Preemption is not helpful for scheduling."
    )
    return Decision(None, message, reasons)


def node_usage(pods: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """What the bound, unfinished pods already request, per node."""
    usage: dict[str, dict[str, float]] = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if not node or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        per_node = usage.setdefault(node, {})
        per_node["pods"] = per_node.get("pods", 0.0) + 1
        for name, amount in pod_requests(pod).items():
            per_node[name] = per_node.get(name, 0.0) + amount
    return usage
