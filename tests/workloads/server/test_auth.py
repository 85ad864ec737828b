"""Token authentication (`--auth-tokens`) and the separate metrics port, on the real aiohttp app."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ascend_mlops.api import contract
from ascend_mlops.workloads.server import auth
from ascend_mlops.workloads.server.app import InferenceServer
from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend
from ascend_mlops.workloads.server.config import ServerConfig
from tests.workloads.server.mounted import MountedSecret
from tests.workloads.server.tinymodel import image_bytes

TOKEN = "tok-alpha-7c1e9f2b"
OTHER = "tok-bravo-3d8a6e40"
WRONG = "tok-wrong-00000000"
REALM = 'Bearer realm="ascend-mlops"'
INVALID = 'Bearer realm="ascend-mlops", error="invalid_token", error_description="the token is not valid"'
DEADLINE = 15.0  # a rotation shows within a check interval (1 s); generous for a loaded machine


@dataclass
class Running:
    server: InferenceServer
    url: str
    http: aiohttp.ClientSession

    @property
    def metrics_url(self) -> str:
        port = self.server.metrics_port or self.server.port
        return f"http://127.0.0.1:{port}{contract.METRICS_PATH}"

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        async with self.http.get(self.metrics_url) as response:
            assert response.status == 200
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(sample.value)
        return None


@pytest.fixture
async def start(tiny_version: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Running] = []

    async def _start(**overrides: Any) -> Running:
        config = ServerConfig(
            model=tiny_version, backend="tensorflow", name="flowers", host="127.0.0.1", port=0,
            termination_log=None, **overrides,
        )
        server = InferenceServer(config, TensorFlowBackend(tiny_version))
        port = await server.start()
        running = Running(server, f"http://127.0.0.1:{port}", aiohttp.ClientSession())
        started.append(running)
        await server.load()
        return running

    yield _start
    for running in started:
        await running.http.close()
        await running.server.stop()


def token_file(tmp_path: Path, *tokens: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text("".join(f"{t}\n" for t in tokens))
    return path


def _modelarts(r: Running, headers: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("images", image_bytes("green"), filename="x.jpg", content_type="image/jpeg")
    return "POST", f"{r.url}/", {"data": form, "headers": headers}


def _infer_fp32(r: Running, headers: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    pixels = np.zeros((1, 8, 8, 3), dtype=np.float32)
    pixels[..., 1] = 255
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8, 3], "data": pixels.tolist()}]}
    return "POST", f"{r.url}/v2/models/flowers/infer", {"json": body, "headers": headers}


def _infer_version_bytes(r: Running, headers: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    files = [base64.b64encode(image_bytes("green")).decode()]
    body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": files}]}
    return "POST", f"{r.url}/v2/models/flowers/versions/1/infer", {"json": body, "headers": headers}


def _metadata(r: Running, headers: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    return "GET", f"{r.url}/v2/models/flowers", {"headers": headers}


def _metadata_version(r: Running, headers: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    return "GET", f"{r.url}/v2/models/flowers/versions/1", {"headers": headers}


ROUTES = {
    "POST /": _modelarts,
    "POST /v2/models/{name}/infer": _infer_fp32,
    "POST /v2/models/{name}/versions/{version}/infer": _infer_version_bytes,
    "GET /v2/models/{name}": _metadata,
    "GET /v2/models/{name}/versions/{version}": _metadata_version,
}


async def call(r: Running, route: str, headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
    method, url, kwargs = ROUTES[route](r, headers)
    async with r.http.request(method, url, **kwargs) as response:
        return response.status, dict(response.headers), await response.json()


def answered(route: str, body: dict[str, Any]) -> bool:
    """The model's own answer for the route (a green image: class 1)."""
    if route == "POST /":
        return body.get("predicted_label") == "green"
    if route.endswith("/infer"):
        return int(np.argmax(body["outputs"][0]["data"])) == 1
    return body.get("name") == "flowers" and body["parameters"]["labels"] == ["red", "green", "blue"]


async def accepted(r: Running, token: str) -> bool:
    status, _, _ = await call(r, "POST /", {"Authorization": f"Bearer {token}"})
    assert status in (200, 401)
    return status == 200


async def eventually(r: Running, token: str, expected: bool) -> None:
    """Poll until `token` is accepted (or refused): the source is re-checked at most once a second."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while await accepted(r, token) != expected:
        assert loop.time() < deadline, f"token {'never' if expected else 'still'} accepted after {DEADLINE}s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("route", list(ROUTES))
async def test_each_protected_route_needs_a_valid_token(start: Callable[..., Any], tmp_path: Path, route: str) -> None:
    r = await start(auth_tokens=token_file(tmp_path, TOKEN, OTHER))

    status, headers, body = await call(r, route, {})
    assert status == 401 and headers["WWW-Authenticate"] == REALM
    assert headers["Content-Type"].startswith("application/json")
    assert list(body) == ["error"] and "needs a token" in body["error"] and "Authorization: Bearer" in body["error"]

    for wrong in (
        {"Authorization": f"Bearer {WRONG}"},
        {"X-Auth-Token": WRONG},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
    ):
        status, headers, body = await call(r, route, wrong)
        assert status == 401 and headers["WWW-Authenticate"] == INVALID, wrong
        assert list(body) == ["error"] and "not valid" in body["error"]
        assert WRONG not in json.dumps(body) and TOKEN not in json.dumps(body)

    # Another scheme carries no bearer token: "missing", not "invalid".
    status, headers, _ = await call(r, route, {"Authorization": f"Basic {base64.b64encode(TOKEN.encode()).decode()}"})
    assert status == 401 and headers["WWW-Authenticate"] == REALM

    for good in (
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"bearer  {OTHER} "},  # the scheme is case-insensitive; both tokens are valid
        {"X-Auth-Token": TOKEN},  # ModelArts' header
    ):
        status, headers, body = await call(r, route, good)
        assert status == 200 and answered(route, body), (good, body)
        assert "WWW-Authenticate" not in headers


async def test_health_server_metadata_and_the_page_stay_open(start: Callable[..., Any], tmp_path: Path) -> None:
    r = await start(auth_tokens=token_file(tmp_path, TOKEN))
    for path in (contract.HEALTH_LIVE_PATH, contract.HEALTH_READY_PATH, "/v2/models/flowers/ready", "/v2",
                 contract.METRICS_PATH):
        async with r.http.get(r.url + path) as response:
            assert response.status == 200, path
    async with r.http.get(r.url + "/") as response:
        page = await response.text()
    assert response.status == 200 and 'id="token"' in page and 'data-auth="required"' in page
    assert "green" not in page  # the label names are model metadata: they need a token


async def test_without_auth_tokens_nothing_needs_a_token(start: Callable[..., Any]) -> None:
    r = await start()
    for route in ROUTES:
        status, _, body = await call(r, route, {})
        assert status == 200 and answered(route, body), route
    async with r.http.get(r.url + "/") as response:
        page = await response.text()
    assert 'id="token"' not in page and 'data-auth="off"' in page and "red, green, blue" in page
    assert await r.metric("ascend_mlops_server_auth_requests_total") is None


async def test_outcomes_are_counted_without_the_token(start: Callable[..., Any], tmp_path: Path) -> None:
    r = await start(auth_tokens=token_file(tmp_path, TOKEN))
    name = "ascend_mlops_server_auth_requests_total"
    assert [await r.metric(name, {"outcome": o}) for o in ("ok", "missing", "invalid")] == [0, 0, 0]
    await call(r, "POST /", {"Authorization": f"Bearer {TOKEN}"})
    await call(r, "GET /v2/models/{name}", {"X-Auth-Token": TOKEN})
    await call(r, "POST /v2/models/{name}/infer", {})
    for _ in range(3):
        await call(r, "POST /", {"X-Auth-Token": WRONG})
    async with r.http.get(r.url + contract.HEALTH_READY_PATH):
        pass  # open routes are not counted
    assert await r.metric(name, {"outcome": "ok"}) == 2
    assert await r.metric(name, {"outcome": "missing"}) == 1
    assert await r.metric(name, {"outcome": "invalid"}) == 3
    assert await r.metric("ascend_mlops_server_requests_total", {"route": "/", "code": "401"}) == 3
    async with r.http.get(r.metrics_url) as response:
        text = await response.text()
    assert TOKEN not in text and WRONG not in text
    # A refused request never counts as in flight (the autoscaling metric).
    assert await r.metric(contract.METRIC_INFLIGHT) == 0


async def test_every_token_is_compared_with_compare_digest(
    start: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [TOKEN, OTHER, "tok-charlie-5b", "a-much-longer-token-than-the-others-0123456789abcdef"]
    r = await start(auth_tokens=token_file(tmp_path, *tokens))
    calls: list[tuple[bytes, bytes, bool]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        result = real(a, b)
        calls.append((a, b, result))
        return result

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for presented, expected in [(tokens[0], 200), (tokens[-1], 200), (WRONG, 401), ("x", 401)]:
        calls.clear()
        status, _, _ = await call(r, "POST /", {"Authorization": f"Bearer {presented}"})
        assert status == expected
        # One comparison per valid token, also after the match (no short-circuit), all of equal length.
        assert len(calls) == len(tokens)
        assert len({b for _, b, _ in calls}) == len(tokens)
        assert {len(a) for a, _, _ in calls} == {len(b) for _, b, _ in calls} == {32}
        assert sum(result for _, _, result in calls) == (1 if expected == 200 else 0)
        assert all(presented.encode() not in (a, b) for a, b, _ in calls)  # digests, not the tokens


async def test_rotation_by_rewriting_the_token_file(start: Callable[..., Any], tmp_path: Path) -> None:
    path = token_file(tmp_path, TOKEN)
    r = await start(auth_tokens=path)
    assert await accepted(r, TOKEN) and not await accepted(r, OTHER)

    path.write_text(f"{TOKEN}\n{OTHER}\n")  # both valid while clients move over
    await eventually(r, OTHER, True)
    assert await accepted(r, TOKEN)

    path.write_text(f"{OTHER}\n")  # the old one revoked
    await eventually(r, TOKEN, False)
    assert await accepted(r, OTHER)

    replacement = tmp_path / "tokens.new"  # an atomic rename over the file (editors, ConfigMap tools)
    replacement.write_text(f"{WRONG}\n")
    os.replace(replacement, path)
    await eventually(r, WRONG, True)
    assert not await accepted(r, OTHER)


async def test_rotation_by_a_kubelet_data_swap(start: Callable[..., Any], tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path / "auth", {"current": f"{TOKEN}\n"})
    (secret.root / ".hidden").write_text(f"{WRONG}\n")  # dot-names are the kubelet's, never tokens
    r = await start(auth_tokens=secret.root)
    assert await accepted(r, TOKEN) and not await accepted(r, WRONG)

    secret.update({"current": f"{OTHER}\n", "previous": f"{TOKEN}\n"})  # a key added in the same swap
    await eventually(r, OTHER, True)
    assert await accepted(r, TOKEN)

    secret.update({"current": f"{OTHER}\n"})  # a key removed, the old generation deleted
    await eventually(r, TOKEN, False)
    assert await accepted(r, OTHER) and not await accepted(r, WRONG)
    assert r.server.auth is not None and r.server.auth.count == 1


async def test_a_source_that_loses_its_tokens_refuses_everyone(
    start: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = token_file(tmp_path, TOKEN)
    r = await start(auth_tokens=path)
    assert await accepted(r, TOKEN)
    path.write_text("\n   \n")
    await eventually(r, TOKEN, False)
    assert "no token in 1 file(s)" in caplog.text and "every request is refused" in caplog.text
    path.unlink()
    assert not await accepted(r, TOKEN)
    path.write_text(f"{TOKEN}\n")
    await eventually(r, TOKEN, True)


async def test_no_token_in_any_log_line(start: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = MountedSecret(tmp_path / "auth", {"a": f"{TOKEN}\n", "b": f"{OTHER}\r\n\r\n"})
    r = await start(auth_tokens=secret.root)
    for route in ROUTES:
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"X-Auth-Token": OTHER}, {"X-Auth-Token": WRONG}, {}):
            await call(r, route, headers)
    secret.update({"a": f"{WRONG}\n"})
    await eventually(r, WRONG, True)
    secret.update({"a": "\n"})
    await eventually(r, WRONG, False)
    secret.update({"a": f"{TOKEN}\n"})
    await eventually(r, TOKEN, True)
    await r.server.stop()

    lines = [record.getMessage() for record in caplog.records] + [caplog.text]
    assert any("authentication on: 2 token(s)" in line for line in lines)
    assert any("tokens reloaded" in line for line in lines) and any("every request is refused" in line for line in lines)
    for token in (TOKEN, OTHER, WRONG):
        assert not any(token in line for line in lines), token


def test_the_source_is_stat_checked_at_most_once_per_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = token_file(tmp_path, TOKEN)
    past = 1_000_000_000
    os.utime(path, ns=(past, past))  # an old file: its timestamps can be trusted (not "racy")
    now = [100.0]
    source = auth.TokenSource(path, check_interval=1.0, clock=lambda: now[0])
    reads: list[Path] = []
    stats: list[object] = []
    real_read, real_stat = Path.read_bytes, os.stat
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real_read(self))
    monkeypatch.setattr(auth.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))

    assert source.check(TOKEN) and source.check(TOKEN)
    assert stats == [] and reads == []  # within the interval: not even a stat
    now[0] += 1.0
    assert source.check(TOKEN) and stats and reads == []  # unchanged: stat calls, no read

    assert len(OTHER) == len(TOKEN)
    path.write_text(f"{OTHER}\n")  # the same size: only the timestamps tell
    assert source.check(TOKEN) and not source.check(OTHER)  # not re-checked yet
    now[0] += 0.5
    assert source.check(TOKEN) and not source.check(OTHER)
    now[0] += 0.5
    assert source.check(OTHER) and not source.check(TOKEN) and reads == [path]


@pytest.mark.parametrize("case", ["missing", "empty-file", "empty-dir", "only-dot-names", "blank-keys"])
def test_an_unusable_source_is_an_error_at_startup(tmp_path: Path, tiny_version: Path, case: str) -> None:
    path = tmp_path / "auth"
    if case == "empty-file":
        path.write_text("\n  \n")
    elif case == "empty-dir":
        path.mkdir()
    elif case == "only-dot-names":
        path.mkdir()
        (path / ".token").write_text(f"{TOKEN}\n")
    elif case == "blank-keys":
        MountedSecret(path, {"a": "", "b": "\n"})
    config = ServerConfig(model=tiny_version, backend="tensorflow", auth_tokens=path, termination_log=None)
    with pytest.raises(auth.TokenSourceError, match=contract.FLAG_AUTH_TOKENS) as error:
        InferenceServer(config, TensorFlowBackend(tiny_version))
    assert str(path) in str(error.value) and TOKEN not in str(error.value)


async def test_metrics_port_serves_metrics_alone(start: Callable[..., Any], tmp_path: Path) -> None:
    r = await start(metrics_port=0, auth_tokens=token_file(tmp_path, TOKEN))
    assert r.server.metrics_port and r.server.metrics_port != r.server.port
    async with r.http.get(r.url + contract.METRICS_PATH) as response:
        assert response.status == 404 and "error" in await response.json()
    status, _, _ = await call(r, "POST /", {"X-Auth-Token": TOKEN})
    assert status == 200
    assert await r.metric("ascend_mlops_server_requests_total", {"route": "/", "code": "200"}) == 1
    assert await r.metric("ascend_mlops_server_auth_requests_total", {"outcome": "ok"}) == 1
    metrics_root = f"http://127.0.0.1:{r.server.metrics_port}"
    for path in ("/", contract.HEALTH_READY_PATH, "/v2/models/flowers"):
        async with r.http.get(metrics_root + path) as response:
            assert response.status == 404, path  # nothing but /metrics there
    async with r.http.get(r.url + contract.HEALTH_READY_PATH) as response:
        assert response.status == 200
    await r.server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with r.http.get(r.metrics_url):
            pass


def test_metrics_port_must_differ_from_the_port(tiny_version: Path) -> None:
    config = ServerConfig(model=tiny_version, backend="tensorflow", port=8080, metrics_port=8080)
    with pytest.raises(ValueError, match=contract.FLAG_METRICS_PORT):
        config.validate()
    ServerConfig(model=tiny_version, backend="tensorflow", port=0, metrics_port=0).validate()
