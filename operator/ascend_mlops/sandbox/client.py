"""A small asyncio client of the Kubernetes API for the sandbox's kubelet and CLI.

Plain JSON over aiohttp against the loopback API (no auth, no TLS), with the one
thing the operator's client does not need: watch streams that resume from the
last resourceVersion and fall back to a fresh list on 410 Gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class APIStatusError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def path_for(api_version: str, plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    parts = [f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Client:
    def __init__(self, server: str, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._get_session().request(
            method, self.server + path, data=data, params=params, headers=headers,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                reason, message = response.reason or "", text[:500]
                try:
                    payload = json.loads(text)
                    reason, message = str(payload.get("reason", reason)), str(payload.get("message", message))
                except (ValueError, AttributeError):
                    pass
                raise APIStatusError(response.status, reason, message)
            if not text:
                return None
            try:
                return json.loads(text)
            except ValueError:
                return text

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result = await self.request("GET", path_for(api_version, plural, namespace, name))
        except APIStatusError as e:
            if e.status == 404:
                return None
            raise
        return result if isinstance(result, dict) else None

    async def list(
        self, api_version: str, plural: str, namespace: str | None = None, *, label_selector: str = "", field_selector: str = "",
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        result = await self.request("GET", path_for(api_version, plural, namespace), params=params)
        return result if isinstance(result, dict) else {"items": []}

    async def create(self, api_version: str, plural: str, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.request("POST", path_for(api_version, plural, namespace), body=dict(body))
        return result if isinstance(result, dict) else {}

    async def patch(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: Any,
        *, subresource: str | None = None, content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        result = await self.request(
            "PATCH", path_for(api_version, plural, namespace, name, subresource), body=body, content_type=content_type
        )
        return result if isinstance(result, dict) else {}

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> bool:
        try:
            await self.request("DELETE", path_for(api_version, plural, namespace, name))
        except APIStatusError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def watch(
        self, api_version: str, plural: str, namespace: str | None = None, *, label_selector: str = "",
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) forever: a list as ADDED events first, then the watch, resumed on drops.

        After a 410 Gone the list starts over and every object is reported again
        as ADDED, so consumers must treat ADDED and MODIFIED alike.
        """
        path = path_for(api_version, plural, namespace)
        since: str | None = None
        while True:
            try:
                if since is None:
                    listing = await self.list(api_version, plural, namespace, label_selector=label_selector)
                    since = str(listing.get("metadata", {}).get("resourceVersion", ""))
                    for item in listing.get("items", []):
                        yield "ADDED", item
                params = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
                if label_selector:
                    params["labelSelector"] = label_selector
                async with self._get_session().get(
                    self.server + path, params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
                ) as response:
                    if response.status == 410:
                        since = None
                        continue
                    if response.status >= 400:
                        raise APIStatusError(response.status, response.reason or "", await response.text())
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
