"""The one asynchronous Kubernetes API client: the operator's reconcilers and the sandbox's.

Kopf watches and dispatches; the reconcilers read and write objects through this
client, authenticated with the same credentials Kopf's login produced (kubeconfig
or in-cluster service account), so there is one source of truth for "which
cluster". The sandbox's kubelet, controllers, gateway and CLI use it against the
sandbox's loopback API (no credentials). It speaks plain JSON over aiohttp:
get (whole, or metadata only), list (by labels or fields; `listing` keeps the
list's resourceVersion and takes raw selectors), create, patch (merge, JSON or
strategic), replace, delete, a pod's log, API discovery (is a kind served?), and
for the sandbox only a watch stream that resumes from the last resourceVersion
(the operator's watches are Kopf's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp

logger = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
# Metadata only (names, labels, owner references): what the API server sends for
# this Accept header, for objects whose contents the operator must not hold (Secrets).
PARTIAL_METADATA: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
DEFAULT_TIMEOUT: Final = 30.0


class ApiError(Exception):
    """A non-success answer from the API server."""

    def __init__(self, status: int, reason: str, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


def namespace_terminating(exc: BaseException) -> bool:
    """A create refused because the namespace is being deleted (admission, not RBAC)."""
    return isinstance(exc, ApiError) and exc.status == 403 and "because it is being terminated" in exc.message


class Conflict(ApiError):
    """409: the object already exists (create) or changed under us."""


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [root]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def matches_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class KubeClient:
    """JSON over HTTP to one API server. Create with `from_connection()` inside a running loop."""

    def __init__(
        self,
        server: str,
        *,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = server.rstrip("/")
        self._headers = dict(headers or {})
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._stale: list[aiohttp.ClientSession] = []  # sessions of earlier credentials, closed at close()

    @classmethod
    def from_connection(cls, info: Any) -> KubeClient:
        """Build from Kopf's `ConnectionInfo` (duck-typed: Kopf keeps it in a private module)."""
        client = cls("")
        client.configure(info)
        return client

    def configure(self, info: Any) -> None:
        """(Re)point the client at the server and credentials of a Kopf `ConnectionInfo`."""
        context: ssl.SSLContext | bool | None = None
        if str(info.server).startswith("https"):
            if info.insecure:
                context = False
            else:
                ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
                context = ssl.create_default_context(cafile=info.ca_path or None, cadata=ca_data or None)
                if info.certificate_path or info.private_key_path:
                    context.load_cert_chain(info.certificate_path, info.private_key_path)
        self.server = str(info.server).rstrip("/")
        self._headers = dict(info.as_http_headers()) if hasattr(info, "as_http_headers") else {}
        self._ssl = context
        # The next request opens a session with the new credentials.
        if self._session is not None:
            self._stale.append(self._session)
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        for session in [self._session, *self._stale]:
            if session is not None and not session.closed:
                await session.close()
        self._session, self._stale = None, []

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        decode: bool = True,
        accept: str | None = None,
    ) -> Any:
        if not self.server:
            raise ApiError(0, "NotConfigured", "the API client has no server yet (login has not happened)", method, path)
        session = self._get_session()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        if accept:
            headers["Accept"] = accept
        async with session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers=headers,
            ssl=self._ssl if self._ssl is not None else True,
        ) as response:
            text = await response.text()
            if response.status >= 400:
                reason, message = response.reason or "", text[:500]
                try:
                    payload = json.loads(text)
                    if isinstance(payload, dict):
                        reason = str(payload.get("reason") or reason)
                        message = str(payload.get("message") or message)
                except ValueError:
                    pass
                error_cls = Conflict if response.status == 409 else ApiError
                raise error_cls(response.status, reason, message, method, path)
            if not decode:
                return text
            return json.loads(text) if text else None

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result = await self.request("GET", resource_path(api_version, plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result if isinstance(result, dict) else None

    async def get_metadata(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """An object's metadata only (PartialObjectMetadata), or None if it does not exist (RBAC: get).

        For Secrets: their values are never sent. Should a server ignore the
        Accept header, everything but the metadata is dropped at once.
        """
        try:
            result = await self.request("GET", resource_path(api_version, plural, namespace, name), accept=PARTIAL_METADATA)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(result, dict):
            return None
        return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": result.get("metadata") or {}}

    async def api_resources(self, api_version: str) -> set[str]:
        """The resources (plurals) an API group version serves; empty when it is not served.

        Discovery needs no RBAC rule: every authenticated user may read it.
        """
        try:
            result = await self.request("GET", "/api/v1" if api_version == "v1" else f"/apis/{api_version}")
        except ApiError as exc:
            if exc.status in (404, 503):  # not installed, or an aggregated API that is down
                return set()
            raise
        return {str(r.get("name")) for r in (result or {}).get("resources") or [] if isinstance(r, dict)}

    async def list(
        self, api_version: str, plural: str, namespace: str | None = None, labels: Mapping[str, str] | None = None,
        *, fields: Mapping[str, str] | None = None, limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Objects with these labels (and field values: `fields`, a fieldSelector); at most `limit` of them
        where the server honours it (one page: no continuation is fetched)."""
        result = await self.listing(
            api_version, plural, namespace, label_selector=label_selector(labels or {}),
            field_selector=label_selector(fields or {}), limit=limit,  # fields: the same k=v,k=v shape
        )
        items = result.get("items") or []
        # Filtering again costs nothing and keeps us correct against servers that ignore selectors.
        return [item for item in items if isinstance(item, dict) and matches_labels(item, labels or {})]

    async def listing(
        self, api_version: str, plural: str, namespace: str | None = None,
        *, label_selector: str = "", field_selector: str = "", limit: int | None = None,
    ) -> dict[str, Any]:
        """The list object itself (its items and metadata.resourceVersion), selectors as the API writes them."""
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        if limit is not None:
            params["limit"] = str(limit)
        result = await self.request("GET", resource_path(api_version, plural, namespace), params=params or None)
        return result if isinstance(result, dict) else {"items": []}

    async def create(self, api_version: str, plural: str, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.request("POST", resource_path(api_version, plural, namespace), body=dict(body))
        return result if isinstance(result, dict) else {}

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
        *,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        """A merge patch (a mapping), or with `content_type` a JSON patch (a list of operations) or a strategic one."""
        result = await self.request(
            "PATCH",
            resource_path(api_version, plural, namespace, name, subresource),
            body=dict(body) if isinstance(body, Mapping) else body,
            content_type=content_type,
        )
        return result if isinstance(result, dict) else {}

    async def replace(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT the whole object; include metadata.resourceVersion to fail (409) on a concurrent change."""
        result = await self.request("PUT", resource_path(api_version, plural, namespace, name), body=dict(body))
        return result if isinstance(result, dict) else {}

    async def read_pod_log(
        self, namespace: str, name: str, *, container: str | None = None, tail_lines: int | None = None
    ) -> str:
        """A container's log, or its last `tail_lines` lines (plain text; RBAC: get pods/log)."""
        params = {"container": container} if container else {}
        if tail_lines is not None:
            params["tailLines"] = str(tail_lines)
        result = await self.request(
            "GET", resource_path("v1", "pods", namespace, name, "log"), params=params or None, decode=False
        )
        return str(result)

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> bool:
        """Delete in the background (children follow by owner references). False if already gone."""
        try:
            await self.request(
                "DELETE",
                resource_path(api_version, plural, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch(
        self, api_version: str, plural: str, namespace: str | None = None, *, label_selector: str = "",
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) forever: a list as ADDED events first, then the watch, resumed on drops (the sandbox's).

        After a 410 Gone the list starts over and every object is reported again
        as ADDED, so consumers must treat ADDED and MODIFIED alike.
        """
        path = resource_path(api_version, plural, namespace)
        since: str | None = None
        while True:
            try:
                if since is None:
                    listing = await self.listing(api_version, plural, namespace, label_selector=label_selector)
                    since = str(listing.get("metadata", {}).get("resourceVersion", ""))
                    for item in listing.get("items", []):
                        yield "ADDED", item
                params = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
                if label_selector:
                    params["labelSelector"] = label_selector
                async with self._get_session().get(
                    self.server + path, params=params, ssl=self._ssl if self._ssl is not None else True,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
                ) as response:
                    if response.status == 410:
                        since = None
                        continue
                    if response.status >= 400:
                        raise ApiError(response.status, response.reason or "", await response.text(), "GET", path)
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                since = None
                            break
                        since = obj.get("metadata", {}).get("resourceVersion", since)
                        if kind != "BOOKMARK":
                            yield kind, obj
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                logger.debug("watch %s dropped (%s); resuming", path, e)
                await asyncio.sleep(0.5)


async def close_quietly(client: KubeClient | None) -> None:
    if client is None:
        return
    try:
        await asyncio.shield(client.close())
    except Exception:  # closing must never mask the reason the operator stops
        logger.debug("closing the API client failed", exc_info=True)
