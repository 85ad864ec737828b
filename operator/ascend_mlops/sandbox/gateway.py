"""HTTPRoutes on local ports: the sandbox's Gateway (an L7 proxy, as Envoy is for a Gateway API implementation).

Every HTTPRoute (gateway.networking.k8s.io/v1) that names a Gateway in its
`parentRefs` gets an HTTP listener on 127.0.0.1 and a free port, written on the
route as the annotation `ascend.mlops.dev/sandbox-url`. The sandbox plays every
Gateway: it does not check that the parent exists. Each route has its own port,
so `hostnames` are not matched.

Per REQUEST (not per connection, which is what the Service proxy does):

1. the rule: the best match of the request's path (`Exact` before `PathPrefix`,
   longer prefixes first; `RegularExpression` last) and `method`; a rule with
   no `matches` matches every path; no rule matches: 404;
2. the backend: among the rule's `backendRefs` with weight > 0, by smooth
   weighted round robin (nginx's): over every run of `sum(weights)` requests
   each backend gets exactly its weight, interleaved (80/20 is 4 stable, 1
   canary, in every 5). The route is re-read on each request, so a weight
   change applies to the next request;
3. the endpoint: one ready pod of that Service (round robin), the same ready
   endpoints the Service proxy uses: a pod being deleted is out of them from
   the moment of the deletion, before its SIGTERM;
4. the request goes there: method, path, query, headers (less the hop-by-hop
   ones, plus `X-Forwarded-For` / `-Proto`) and the body, streamed; the
   response is streamed back. Connections to the pods are kept alive.

A chosen backend with no ready endpoint (not started, crash-looping, scaled to
zero, Service missing) is skipped for the other backends of the rule that have
one, in proportion to their weights, so a canary that is down costs no
request; a connection that cannot be opened is retried on the next endpoint,
then on the other backends. With nowhere to go the answer is 503 with a JSON
body (Envoy's "no healthy upstream"); backendRefs to anything but a core
Service, or a rule whose weights are all 0, answer 500 as the Gateway API
specifies.

The route's status is written as a Gateway controller does: one
`status.parents[]` entry per parentRef with controllerName
`ascend.mlops.dev/sandbox-gateway` and the conditions `Accepted` and
`ResolvedRefs` (False with `BackendNotFound` / `InvalidKind` when a backend is
missing or not a Service).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ascend_mlops.api import constants
from ascend_mlops.kube import ApiError
from ascend_mlops.sandbox.objects import now_rfc3339

if TYPE_CHECKING:
    from ascend_mlops.sandbox.kubelet import Kubelet

logger = logging.getLogger(__name__)

CONTROLLER_NAME = "ascend.mlops.dev/sandbox-gateway"
GATEWAY_GROUP = "gateway.networking.k8s.io"
NOT_FOUND_RETRY = 2.0  # seconds between looks for the HTTPRoute CRD when the API does not serve it (yet)
# RFC 9110 7.6.1 and the usual proxy ones: about one connection, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})


@dataclass(frozen=True)
class BackendRef:
    name: str
    namespace: str
    port: int | None
    weight: int
    kind_ok: bool  # a core Service (group "" and kind Service): the only backends the sandbox routes to


def backend_refs(rule: Mapping[str, Any], namespace: str) -> list[BackendRef]:
    refs = []
    for ref in rule.get("backendRefs") or []:
        port = ref.get("port")
        refs.append(BackendRef(
            name=str(ref.get("name", "")),
            namespace=str(ref.get("namespace") or namespace),
            port=int(port) if port is not None else None,
            weight=max(int(ref.get("weight", 1)), 0),
            kind_ok=(ref.get("group") or "") == "" and (ref.get("kind") or "Service") == "Service",
        ))
    return refs


def _match_score(match: Mapping[str, Any], method: str, path: str) -> tuple[int, int] | None:
    """How well one HTTPRouteMatch fits (higher is more specific), or None."""
    wanted_method = match.get("method")
    if wanted_method and str(wanted_method).upper() != method.upper():
        return None
    spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = str(spec.get("type", "PathPrefix")), str(spec.get("value", "/"))
    if kind == "Exact":
        return (3, len(value)) if path == value else None
    if kind == "RegularExpression":
        try:
            return (1, len(value)) if re.fullmatch(value, path) else None
        except re.error:
            return None
    prefix = value.rstrip("/")
    if not prefix or path == prefix or path.startswith(prefix + "/"):
        return (2, len(prefix))
    return None


def select_rule(rules: Sequence[Mapping[str, Any]], method: str, path: str) -> int | None:
    """Index of the rule the request goes to (the most specific match; the first rule on a tie)."""
    best: tuple[tuple[int, int], int] | None = None
    for index, rule in enumerate(rules):
        matches = rule.get("matches") or [{}]
        scores = [s for s in (_match_score(m, method, path) for m in matches) if s is not None]
        if scores and (best is None or max(scores) > best[0]):
            best = (max(scores), index)
    return best[1] if best else None


class SmoothWeighted:
    """nginx's smooth weighted round robin: exact shares over every sum(weights) picks, spread out."""

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = tuple(weights)
        self.current = [0] * len(self.weights)

    def pick(self) -> int:
        total = sum(self.weights)
        best = -1
        for index, weight in enumerate(self.weights):
            self.current[index] += weight
            if weight > 0 and (best < 0 or self.current[index] > self.current[best]):
                best = index
        self.current[best] -= total
        return best


@dataclass
class RouteListener:
    uid: str
    runner: web.ServerRunner
    port: int
    pickers: dict[int, SmoothWeighted] = field(default_factory=dict)  # rule index -> its backend picker

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Gateway:
    """Listeners for the HTTPRoutes the API holds, fed by the kubelet's watch (`on_event`) and loop (`sync`)."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.routes: dict[str, dict[str, Any]] = {}  # uid -> the latest HTTPRoute
        self.listeners: dict[str, RouteListener] = {}
        self._endpoint_turns: dict[tuple[str, str, int | None], int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()  # one sync at a time: a route gets one listener

    # ------------------------------------------------------------------ watch and sync
    async def watch(self) -> None:
        """List+watch HTTPRoutes; while the API serves no HTTPRoute CRD, look again every few seconds."""
        while True:
            try:
                async for kind, route in self.kubelet.client.watch(constants.GATEWAY_API_VERSION, constants.HTTPROUTES):
                    await self.on_event(kind, route)
                    self.kubelet.wake()
            except ApiError as e:
                if e.status != 404:
                    logger.warning("sandbox gateway: watching HTTPRoutes failed: %s", e)
                await asyncio.sleep(NOT_FOUND_RETRY)

    async def on_event(self, kind: str, route: dict[str, Any]) -> None:
        """The next request reads this version of the route (weights apply at once); `sync` opens or closes listeners."""
        uid = route["metadata"]["uid"]
        if kind == "DELETED":
            self.routes.pop(uid, None)
        else:
            self.routes[uid] = route

    def attached(self, route: Mapping[str, Any]) -> bool:
        """Has a Gateway parent (any: the sandbox plays every Gateway)."""
        return any(
            (ref.get("group") or GATEWAY_GROUP) == GATEWAY_GROUP and (ref.get("kind") or "Gateway") == "Gateway"
            for ref in route.get("spec", {}).get("parentRefs") or []
        )

    async def sync(self) -> None:
        async with self._lock:
            for uid, route in list(self.routes.items()):
                if not self.attached(route):
                    continue
                if uid not in self.listeners:
                    self.listeners[uid] = await self._listen(uid)
                    meta = route["metadata"]
                    logger.info("HTTPRoute %s/%s -> %s", meta.get("namespace"), meta["name"], self.listeners[uid].url)
                await self._write(route, self.listeners[uid])
            for uid in [u for u in self.listeners if u not in self.routes or not self.attached(self.routes[u])]:
                listener = self.listeners.pop(uid)
                await listener.runner.cleanup()

    def url(self, namespace: str, name: str) -> str | None:
        for uid, route in self.routes.items():
            meta = route["metadata"]
            if meta.get("namespace", "default") == namespace and meta["name"] == name and uid in self.listeners:
                return self.listeners[uid].url
        return None

    async def stop(self) -> None:
        for listener in list(self.listeners.values()):
            with contextlib.suppress(Exception):
                await listener.runner.cleanup()
        self.listeners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _listen(self, uid: str) -> RouteListener:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self._handle(uid, request)

        runner = web.ServerRunner(web.Server(handle), handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        return RouteListener(uid=uid, runner=runner, port=port)

    # ------------------------------------------------------------------ status
    def _resolved(self, route: Mapping[str, Any]) -> tuple[bool, str, str]:
        namespace = route["metadata"].get("namespace", "default")
        for rule in route.get("spec", {}).get("rules") or []:
            for ref in backend_refs(rule, namespace):
                if not ref.kind_ok:
                    return False, "InvalidKind", f"backendRef {ref.name!r} is not a core Service; the sandbox gateway routes to Services only"
                if self.kubelet.proxy.find(ref.namespace, ref.name) is None:
                    return False, "BackendNotFound", f"Service {ref.namespace}/{ref.name} does not exist"
        return True, "ResolvedRefs", "all backendRefs are resolved"

    async def _write(self, route: Mapping[str, Any], listener: RouteListener) -> None:
        """The URL annotation and our `status.parents` entries, each only when it differs."""
        meta = route["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        resolved, reason, message = self._resolved(route)
        generation = int(meta.get("generation", 1))
        parents = (route.get("status") or {}).get("parents") or []
        ours = [p for p in parents if p.get("controllerName") == CONTROLLER_NAME]
        others = [p for p in parents if p.get("controllerName") != CONTROLLER_NAME]
        wanted = self._parents(route, resolved, reason, message, generation)
        patches: list[tuple[dict[str, Any], str | None]] = []
        if (meta.get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_URL) != listener.url:
            patches.append(({"metadata": {"annotations": {constants.ANNOTATION_SANDBOX_URL: listener.url}}}, None))
        if _without_times(ours) != _without_times(wanted):
            patches.append(({"status": {"parents": others + wanted}}, "status"))
        for body, subresource in patches:
            try:
                updated = await self.kubelet.client.patch(
                    constants.GATEWAY_API_VERSION, constants.HTTPROUTES, namespace, name, body, subresource=subresource
                )
            except (ApiError, aiohttp.ClientError) as e:
                logger.debug("sandbox gateway: HTTPRoute %s/%s not updated: %s", namespace, name, e)
                return
            if updated.get("metadata", {}).get("uid") == listener.uid and listener.uid in self.routes:
                self.routes[listener.uid] = updated

    def _parents(self, route: Mapping[str, Any], resolved: bool, reason: str, message: str, generation: int) -> list[dict[str, Any]]:
        old = {
            json.dumps(p.get("parentRef"), sort_keys=True): p
            for p in (route.get("status") or {}).get("parents") or [] if p.get("controllerName") == CONTROLLER_NAME
        }
        now = now_rfc3339()
        parents = []
        for ref in route.get("spec", {}).get("parentRefs") or []:
            before = {c.get("type"): c for c in (old.get(json.dumps(ref, sort_keys=True)) or {}).get("conditions") or []}
            conditions = []
            for kind, status, why, text in (
                ("Accepted", True, "Accepted", "accepted by the sandbox gateway (every Gateway is played by the sandbox)"),
                ("ResolvedRefs", resolved, reason, message),
            ):
                value = "True" if status else "False"
                previous = before.get(kind)
                since = previous.get("lastTransitionTime", now) if previous and previous.get("status") == value else now
                conditions.append({
                    "type": kind, "status": value, "reason": why, "message": text,
                    "observedGeneration": generation, "lastTransitionTime": since,
                })
            parents.append({"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": conditions})
        return parents

    # ------------------------------------------------------------------ requests
    def _session_for_upstreams(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=15.0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _available(self, ref: BackendRef) -> list[int]:
        """Local ports of the backend's ready endpoints, starting at its next one in turn."""
        if not ref.kind_ok:
            return []
        service = self.kubelet.proxy.find(ref.namespace, ref.name)
        if service is None:
            return []
        ports = service.get("spec", {}).get("ports") or []
        port = next((p for p in ports if ref.port is None or int(p.get("port", 0)) == ref.port), None)
        if port is None:
            return []
        found = self.kubelet.proxy.endpoint_ports(service, port)
        if not found:
            return []
        key = (ref.namespace, ref.name, ref.port)
        turn = self._endpoint_turns.get(key, 0) % len(found)
        self._endpoint_turns[key] = turn + 1
        return found[turn:] + found[:turn]

    def _order(self, listener: RouteListener, rule_index: int, refs: Sequence[BackendRef]) -> list[BackendRef]:
        """The backend for this request first, then the others (by weight) to fall back on."""
        weights = tuple(ref.weight for ref in refs)
        picker = listener.pickers.get(rule_index)
        if picker is None or picker.weights != weights:
            picker = listener.pickers[rule_index] = SmoothWeighted(weights)
        first = picker.pick()
        rest = [ref for i, ref in enumerate(refs) if i != first and ref.weight > 0]
        # The fallbacks in proportion to their weights (weighted shuffle).
        rest.sort(key=lambda ref: random.random() ** (1.0 / ref.weight), reverse=True)
        return [refs[first], *rest]

    async def _handle(self, uid: str, request: web.BaseRequest) -> web.StreamResponse:
        route = self.routes.get(uid)
        listener = self.listeners.get(uid)
        if route is None or listener is None:
            return _error(404, "route not found", "the HTTPRoute behind this port was deleted")
        meta = route["metadata"]
        where = f"HTTPRoute {meta.get('namespace', 'default')}/{meta['name']}"
        rules = route.get("spec", {}).get("rules") or [{}]
        index = select_rule(rules, request.method, request.path)
        if index is None:
            return _error(404, "route not found", f"no rule of {where} matches {request.method} {request.path}")
        refs = backend_refs(rules[index], meta.get("namespace", "default"))
        if not any(ref.weight > 0 for ref in refs):
            return _error(500, "no backend", f"rule {index} of {where} has no backendRef with a weight above 0")
        tried = []
        for ref in self._order(listener, index, refs):
            tried.append(ref.name)
            for local in self._available(ref):
                try:
                    return await self._forward(request, local)
                except aiohttp.ClientConnectorError:
                    continue  # the pod exited meanwhile: nothing was sent, the next one gets it
        if not any(ref.kind_ok for ref in refs):
            return _error(500, "invalid backend", f"the backendRefs of {where} are not core Services")
        return _error(503, "no healthy upstream", f"no ready endpoint in {', '.join(tried)} ({where})")

    async def _forward(self, request: web.BaseRequest, local: int) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        peer = request.remote or "127.0.0.1"
        forwarded_for = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        headers.setdefault("X-Forwarded-Proto", request.scheme)
        body = request.content if request.body_exists else None
        upstream = await self._session_for_upstreams().request(
            request.method, URL(f"http://127.0.0.1:{local}{request.raw_path}", encoded=True), headers=headers, data=body,
            allow_redirects=False, skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.release()


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)
