"""Derive the Kubernetes API permissions the operator needs from its source code.

Reads operator/ascend_mlops with `ast` (and imports each module to evaluate
the constant expressions in its calls) and collects (apiGroup, resource,
verb) triples from:

* Kopf handler decorators (`@kopf.on.*`, `@kopf.timer`, `@kopf.daemon`,
  `@kopf.index`): Kopf lists and watches the resource; change-tracking
  handlers also patch it (progress annotations, finalizers).
* Kopf's own needs, read from how the operator configures it: events
  (`kopf.event`/`info`/`warn`/`exception` and handler progress posting),
  CRD and namespace scanning unless `settings.scanning.disabled = True`,
  peering unless `settings.peering.standalone = True` (or `standalone=True`).
* Calls of the operator's API client's methods for one fixed resource
  (`<...>client.read_pod_log`: get pods/log), see CLIENT_FIXED.
* Calls of the operator's API client (`<...>client.get/list/create/patch/replace/delete`),
  whose api_version and plural arguments are evaluated; and calls of helper
  functions that pass their own api_version/plural parameters on to the
  client (found automatically, e.g. the runtime's `create_child`), evaluated
  at each call site.

A call whose resource cannot be evaluated to a constant makes the scan fail
(with file and line) rather than guess: RBAC must stay derivable.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_mlops.api import constants
from tests.helpers import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "operator" / "ascend_mlops"
# Code that never talks to the API server with the operator's credentials:
# the API client's implementation, the workloads (in pods, no token mounted),
# and the sandbox (its own embedded API server).
SKIP = ("kube.py", "__main__.py", "workloads", "sandbox", "ascend")

# KubeClient method -> RBAC verb.
CLIENT_VERBS = {
    "get": "get",
    "get_metadata": "get",  # PartialObjectMetadata: the same RBAC verb as a whole GET
    "list": "list",
    "create": "create",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
}
# KubeClient methods that always address the same resource -> what they need.
CLIENT_FIXED: dict[str, set[tuple[str, str, str]]] = {
    "read_pod_log": {("", "pods/log", "get")},
}
# KubeClient methods that make no API call of their own, or only calls every
# authenticated user may make: API discovery (the system:discovery ClusterRole).
CLIENT_LOCAL = {"configure", "close", "api_resources"}
# Cluster-scoped resources the client reads: their rules go in the ClusterRole,
# also when the operator watches only some namespaces.
CLUSTER_SCOPED = {("", "nodes")}
WATCH_ONLY = {"event", "index"}
CHANGE_HANDLERS = {"resume", "create", "update", "delete", "field", "timer", "daemon"}
EVENT_POSTERS = {"event", "info", "warn", "exception"}

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)


@dataclass
class Needs:
    namespaced: set[Permission] = field(default_factory=set)
    cluster: set[Permission] = field(default_factory=set)  # cluster-scoped resources
    clusterwide_only: set[Permission] = field(default_factory=set)  # only without watchNamespaces
    namespaced_only: set[Permission] = field(default_factory=set)  # only with watchNamespaces
    sources: dict[Permission, list[str]] = field(default_factory=dict)

    def add(self, perms: set[Permission], where: str, bucket: str = "namespaced") -> None:
        getattr(self, bucket).update(perms)
        for perm in perms:
            self.sources.setdefault(perm, []).append(where)


class ScanError(AssertionError):
    pass


def modules(package_dir: Path, package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if relative.parts[0] in SKIP or relative.name in SKIP:
            continue
        dotted = ".".join((package, *relative.with_suffix("").parts))
        yield dotted.removesuffix(".__init__"), path


class LazyGlobals(dict[str, Any]):
    """A module's globals, imported only when a call in it needs evaluating."""

    def __init__(self, module_name: str) -> None:
        super().__init__()
        self.module_name = module_name
        self.loaded = False

    def load(self) -> dict[str, Any]:
        if not self.loaded:
            self.update(vars(importlib.import_module(self.module_name)))
            self.loaded = True
        return self


def dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return dotted_name(node.func) + "()"
    return "?"


def evaluate(node: ast.AST, namespace: dict[str, Any], where: str) -> Any:
    """Evaluate a constant expression (literals, module constants, subscripts of them)."""
    try:
        scope = namespace.load() if isinstance(namespace, LazyGlobals) else namespace
        return eval(compile(ast.Expression(node), where, "eval"), dict(scope))  # noqa: S307
    except Exception as exc:  # a local variable or a call: not a constant
        raise ScanError(f"{where}: cannot evaluate `{ast.unparse(node)}` to a constant ({exc})") from None


def group_of(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def kopf_resource(call: ast.Call, namespace: dict[str, Any], where: str) -> tuple[str, str]:
    """(group, plural) of a Kopf resource selector: positional (group, version, name) / (group[/version], name) / (name)."""
    args = [evaluate(a, namespace, where) for a in call.args]
    kwargs = {k.arg: evaluate(k.value, namespace, where) for k in call.keywords if k.arg in {"group", "version", "plural", "kind"}}
    group: str | None = kwargs.get("group")
    name: str | None = kwargs.get("plural") or kwargs.get("kind")
    if len(args) == 3:
        group, name = args[0], args[2]
    elif len(args) == 2:
        first = str(args[0])
        group = "" if first == "v1" else first.split("/", 1)[0]
        name = args[1]
    elif len(args) == 1:
        name = args[0]
    if not isinstance(name, str) or not name:
        raise ScanError(f"{where}: cannot tell which resource the Kopf handler serves")
    if group is None:
        plural, _, dotted_group = name.partition(".")
        name, group = plural, dotted_group
    kinds = {k.lower(): p for k, p in constants.PLURALS.items()}
    plural = kinds.get(name.lower(), name.lower() if name[0].isupper() else name)
    if plural in constants.PLURALS.values() and not group:
        group = constants.GROUP
    if plural[0].isupper() or not plural.endswith("s"):
        plural = plural.lower() + "s"
    return group, plural


def _client_call(node: ast.AST) -> tuple[str, str] | None:
    """(receiver, verb) when `node` calls the operator's API client."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        receiver = dotted_name(node.func.value)
        if receiver.split(".")[-1] == "client":
            return receiver, node.func.attr
    return None


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = [a.arg for a in func.args.posonlyargs + func.args.args]
    return names[1:] if names[:1] == ["self"] else names


def find_helpers(trees: list[ast.Module]) -> dict[str, set[tuple[str, int, int, str | None]]]:
    """Functions that pass their own api_version/plural parameters to the client, directly or through
    another such function (found to a fixpoint).

    name -> {(verb, index of api_version parameter, index of plural parameter, subresource)}
    """
    helpers: dict[str, set[tuple[str, int, int, str | None]]] = {}
    funcs = [
        func for tree in trees for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) and func.name not in CLIENT_VERBS
    ]
    changed = True
    while changed:
        changed = False
        for func in funcs:
            params = _params(func)
            found_here: set[tuple[str, int, int, str | None]] = set()
            for node in ast.walk(func):
                if not isinstance(node, ast.Call):
                    continue
                found = _client_call(node)
                if found is not None and found[1] in CLIENT_VERBS:
                    args = node.args[:2]
                    if len(args) == 2 and all(isinstance(a, ast.Name) and a.id in params for a in args):
                        assert isinstance(args[0], ast.Name) and isinstance(args[1], ast.Name)
                        sub = next((k.value for k in node.keywords if k.arg == "subresource"), None)
                        subresource = sub.value if isinstance(sub, ast.Constant) else None
                        found_here.add((CLIENT_VERBS[found[1]], params.index(args[0].id), params.index(args[1].id), subresource))
                    continue
                callee = _callee_name(node)
                for verb, vi, pi, sub in helpers.get(callee or "", set()):
                    v, pl = _argument(node, vi), _argument(node, pi)
                    if isinstance(v, ast.Name) and isinstance(pl, ast.Name) and v.id in params and pl.id in params:
                        found_here.add((verb, params.index(v.id), params.index(pl.id), sub))
            if found_here - helpers.get(func.name, set()):
                helpers.setdefault(func.name, set()).update(found_here)
                changed = True
    return helpers


def _callee_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _argument(call: ast.Call, index: int, func_params: list[str] | None = None) -> ast.AST | None:
    if index < len(call.args):
        return call.args[index]
    return None


def scan(package_dir: Path = PACKAGE_DIR, package: str = "ascend_mlops") -> Needs:
    needs = Needs()
    scanning_disabled = False
    standalone = False
    posts_events = True  # Kopf posts handler progress events unless settings.posting.enabled = False
    parsed = [
        (module_name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for module_name, path in modules(package_dir, package)
    ]
    helpers = find_helpers([tree for _, _, tree in parsed])
    for module_name, path, tree in parsed:
        namespace = LazyGlobals(module_name)
        helper_bodies = {
            id(node)
            for func in ast.walk(tree)
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) and func.name in helpers
            for node in ast.walk(func)
        }
        for node in ast.walk(tree):
            where = f"{path.relative_to(package_dir.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    name = dotted_name(target)
                    value = node.value.value if isinstance(node.value, ast.Constant) else None
                    if name.endswith("scanning.disabled") and value is True:
                        scanning_disabled = True
                    if name.endswith("peering.standalone") and value is True:
                        standalone = True
                    if name.endswith("posting.enabled") and value is False:
                        posts_events = False
            if isinstance(node, ast.keyword) and node.arg == "standalone":
                if isinstance(node.value, ast.Constant) and node.value.value is True:
                    standalone = True
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for decorator in node.decorator_list:
                    if not isinstance(decorator, ast.Call):
                        continue
                    name = dotted_name(decorator.func)
                    if not name.startswith("kopf."):
                        continue
                    event = name.rsplit(".", 1)[1]
                    if event in WATCH_ONLY | CHANGE_HANDLERS:
                        group, plural = kopf_resource(decorator, namespace, where)
                        verbs = {"list", "watch"} | ({"patch"} if event in CHANGE_HANDLERS else set())
                        needs.add({(group, plural, v) for v in verbs}, f"{where} @{name}")
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute):
                method, receiver = node.func.attr, dotted_name(node.func.value)
            elif isinstance(node.func, ast.Name):
                method, receiver = node.func.id, ""
            else:
                continue
            client_call = _client_call(node)
            if receiver == "kopf" and method in EVENT_POSTERS:
                needs.add({("", "events", "create")}, f"{where} kopf.{method}")
            elif client_call is not None and method in CLIENT_FIXED:
                needs.add(CLIENT_FIXED[method], f"{where} {receiver}.{method}")
            elif client_call is not None and method not in CLIENT_VERBS and method not in CLIENT_LOCAL:
                raise ScanError(
                    f"{where}: client.{method}() is not a known API verb; add it to CLIENT_VERBS or CLIENT_FIXED in "
                    f"tests/chart/rbac_scan.py (raw client.request() cannot be analysed)"
                )
            elif client_call is not None and method in CLIENT_VERBS:
                if id(node) in helper_bodies and all(isinstance(a, ast.Name) for a in node.args[:2]):
                    continue  # a pass-through helper: resolved at its call sites
                if len(node.args) < 2:
                    raise ScanError(f"{where}: pass api_version and plural positionally to client.{method}")
                api_version = evaluate(node.args[0], namespace, where)
                resources = _plurals(node.args[1], namespace, where, api_version)
                subresource = next((k.value for k in node.keywords if k.arg == "subresource"), None)
                if subresource is not None:
                    sub = evaluate(subresource, namespace, where)
                    resources = {f"{r}/{sub}" for r in resources} if sub else resources
                perms = {(group_of(api_version), r, CLIENT_VERBS[method]) for r in resources}
                cluster = {p for p in perms if (p[0], p[1]) in CLUSTER_SCOPED}
                if cluster:
                    needs.add(cluster, f"{where} {receiver}.{method}", "cluster")
                if perms - cluster:
                    needs.add(perms - cluster, f"{where} {receiver}.{method}")
            elif method in helpers:
                for verb, version_index, plural_index, sub in helpers[method]:
                    version_node = _argument(node, version_index)
                    plural_node = _argument(node, plural_index)
                    if id(node) in helper_bodies and isinstance(version_node, ast.Name) and isinstance(plural_node, ast.Name):
                        continue  # a helper passing its own parameters on: resolved at its call sites
                    if version_node is None or plural_node is None:
                        raise ScanError(f"{where}: pass api_version and plural positionally to {method}()")
                    api_version = evaluate(version_node, namespace, where)
                    resources = _plurals(plural_node, namespace, where, api_version)
                    resources = {f"{r}/{sub}" for r in resources} if sub else resources
                    needs.add({(group_of(api_version), r, verb) for r in resources}, f"{where} {receiver}.{method}")
    if posts_events:
        needs.add({("", "events", "create")}, "kopf: handler progress events (settings.posting)")
    if not scanning_disabled:
        crds = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
        needs.add(crds, "kopf: resource scanning (settings.scanning)", "cluster")
        # Kopf lists namespaces to match its namespace patterns, unless cluster-wide.
        namespaces = {("", "namespaces", v) for v in ("list", "watch")}
        needs.add(namespaces, "kopf: namespace scanning when not cluster-wide", "namespaced_only")
    if not standalone:
        peering = {("kopf.dev", r, v) for r in ("kopfpeerings", "clusterkopfpeerings") for v in ("list", "watch", "patch", "get")}
        needs.add(peering, "kopf: peering (settings.peering.standalone is not set)")
    return needs


def _plurals(node: ast.AST, namespace: dict[str, Any], where: str, api_version: str) -> set[str]:
    try:
        value = evaluate(node, namespace, where)
    except ScanError:
        # `key.plural` and the like: within the operator's own API group a
        # computed plural is one of its kinds, so all three are granted.
        if api_version == constants.API_VERSION:
            return set(constants.PLURALS.values())
        raise
    return {str(value)}


def rules_yaml(perms: set[Permission]) -> str:
    """Rules in the chart's style: one rule per (apiGroup, verbs), resources listed."""
    verbs_by_resource: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in perms:
        verbs_by_resource.setdefault((group, resource), set()).add(verb)
    order = ["get", "list", "watch", "create", "update", "patch", "delete"]
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in sorted(verbs_by_resource.items()):
        key = (group, tuple(sorted(verbs, key=lambda v: order.index(v) if v in order else len(order))))
        grouped.setdefault(key, []).append(resource)
    lines = []
    for (group, verbs), resources in grouped.items():
        lines.append(f'- apiGroups: ["{group}"]')
        lines.append("  resources: [" + ", ".join(f'"{r}"' for r in resources) + "]")
        lines.append("  verbs: [" + ", ".join(f'"{v}"' for v in verbs) + "]")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m tests.chart.rbac_scan: the rules to put in charts/ascend-mlops/templates/_helpers.tpl
    found = scan()
    print("# ascend-mlops.rbac.namespacedRules\n" + rules_yaml(found.namespaced))
    print("# ascend-mlops.rbac.clusterRules (always)\n" + rules_yaml(found.cluster | found.clusterwide_only))
    print("# ascend-mlops.rbac.clusterRules (only with watchNamespaces)\n" + rules_yaml(found.namespaced_only))
