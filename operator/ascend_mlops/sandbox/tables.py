"""`Table` responses (meta.k8s.io/v1) so that `kubectl get` prints real columns.

Custom resources get their CRD's `additionalPrinterColumns` plus AGE, as on a
cluster; the built-in kinds get the columns kubectl users know.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ascend_mlops.sandbox import objects as k8s

if TYPE_CHECKING:
    from ascend_mlops.sandbox.apiserver import ResourceSpec

Row = list[Any]
Obj = Mapping[str, Any]


def _column(name: str, type_: str = "string", priority: int = 0, format_: str = "", description: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description or name, "priority": priority}


def _age(obj: Obj) -> str:
    return k8s.human_duration(obj.get("metadata", {}).get("creationTimestamp"))


def _pod_status(pod: Obj) -> str:
    status = pod.get("status", {})
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    reason = status.get("reason") or status.get("phase", "Pending")
    for container in status.get("containerStatuses") or []:
        state = container.get("state", {})
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            terminated = state["terminated"]
            reason = terminated.get("reason") or (
                f"Signal:{terminated['signal']}" if terminated.get("signal") else f"ExitCode:{terminated.get('exitCode')}"
            )
    return str(reason)


def _pod_row(pod: Obj) -> Row:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [
        pod["metadata"]["name"], f"{ready}/{total}", _pod_status(pod), restarts, _age(pod),
        pod.get("status", {}).get("podIP") or "<none>", pod.get("spec", {}).get("nodeName") or "<none>",
    ]


def _deployment_row(dep: Obj) -> Row:
    status = dep.get("status", {})
    return [
        dep["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{dep.get('spec', {}).get('replicas', 1)}",
        status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _age(dep),
    ]


def _service_row(svc: Obj) -> Row:
    spec = svc.get("spec", {})
    ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or "<none>"
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    return [svc["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), external, ports, _age(svc)]


def _node_row(node: Obj) -> Row:
    ready: Mapping[str, Any] = next(
        (c for c in node.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    status = "Ready" if ready.get("status") == "True" else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = node.get("metadata", {}).get("labels") or {}
    roles = ",".join(sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    version = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return [node["metadata"]["name"], status, roles, _age(node), version]


def _event_row(event: Obj) -> Row:
    involved = event.get("involvedObject", {})
    return [
        k8s.human_duration(event.get("lastTimestamp") or event.get("eventTime") or event.get("metadata", {}).get("creationTimestamp")),
        event.get("type", ""), event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", event.get("message", ""),
    ]


_BUILTIN: dict[str, tuple[list[dict[str, Any]], Callable[[Obj], Row]]] = {
    "Pod": (
        [_column("Name", format_="name"), _column("Ready"), _column("Status"), _column("Restarts", "integer"),
         _column("Age"), _column("IP", priority=1), _column("Node", priority=1)],
        _pod_row,
    ),
    "Deployment": (
        [_column("Name", format_="name"), _column("Ready"), _column("Up-to-date", "integer"),
         _column("Available", "integer"), _column("Age")],
        _deployment_row,
    ),
    "Service": (
        [_column("Name", format_="name"), _column("Type"), _column("Cluster-IP"), _column("External-IP"),
         _column("Port(s)"), _column("Age")],
        _service_row,
    ),
    "Node": (
        [_column("Name", format_="name"), _column("Status"), _column("Roles"), _column("Age"), _column("Version")],
        _node_row,
    ),
    "Namespace": (
        [_column("Name", format_="name"), _column("Status"), _column("Age")],
        lambda ns: [ns["metadata"]["name"], ns.get("status", {}).get("phase", ""), _age(ns)],
    ),
    "Event": (
        [_column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"), _column("Message")],
        _event_row,
    ),
}


def _custom_columns(spec: ResourceSpec) -> tuple[list[dict[str, Any]], Callable[[Obj], Row]]:
    printer = list(spec.printer_columns)
    columns = [_column("Name", format_="name", description="Name must be unique within a namespace.")]
    for column in printer:
        columns.append(
            _column(column["name"], column.get("type", "string"), int(column.get("priority", 0)),
                    column.get("format", ""), column.get("description", ""))
        )
    has_age = any(c["name"].lower() == "age" for c in printer)
    if not has_age:
        columns.append(_column("Age", "date"))

    def row(obj: Obj) -> Row:
        cells: Row = [obj["metadata"]["name"]]
        for column in printer:
            values = k8s.jsonpath(obj, column.get("jsonPath", ""))
            value = values[0] if values else None
            if column.get("type") == "date" and isinstance(value, str):
                value = k8s.human_duration(value)
            elif isinstance(value, dict | list):
                value = str(value)
            cells.append(value)
        if not has_age:
            cells.append(_age(obj))
        return cells

    return columns, row


def to_table(spec: ResourceSpec, items: Iterable[Obj], include: str = "Metadata") -> dict[str, Any]:
    if spec.custom:
        columns, row = _custom_columns(spec)
    elif spec.kind in _BUILTIN:
        columns, row = _BUILTIN[spec.kind]
    else:
        columns = [_column("Name", format_="name"), _column("Age")]

        def row(obj: Obj) -> Row:
            return [obj["metadata"]["name"], _age(obj)]

    rows = []
    for item in items:
        if include == "Object":
            embedded: Any = item
        elif include == "None":
            embedded = None
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item.get("metadata", {})}
        rows.append({"cells": row(item), "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": columns, "rows": rows}
