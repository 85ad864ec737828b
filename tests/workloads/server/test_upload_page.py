"""The upload page in headless Chromium, driven over the DevTools protocol: upload an image,
press Predict, read the predicted label and the top-5 bars from the page."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ascend_mlops.workloads.server.app import InferenceServer
from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend
from ascend_mlops.workloads.server.config import ServerConfig
from tests.workloads.server.tinymodel import image_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
]

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("Debian's chromium package is missing: .ci/run installs it (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        await self.ws.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), 60)
            if message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert loop.time() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[DevTools]:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert loop.time() < deadline, "chromium never opened its DevTools port"
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = json.loads(await response.text())
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


async def test_upload_page_shows_the_predicted_label_and_top_scores(
    browser: DevTools, tiny_version: Path, tmp_path: Path
) -> None:
    config = ServerConfig(model=tiny_version, backend="tensorflow", name="flowers", host="127.0.0.1", port=0, termination_log=None)
    server = InferenceServer(config, TensorFlowBackend(tiny_version))
    port = await server.start()
    await server.load()
    try:
        photo = tmp_path / "photo.png"
        photo.write_bytes(image_bytes("blue", size=48, fmt="PNG"))

        await browser.send("Page.enable")
        await browser.send("Page.navigate", url=f"http://127.0.0.1:{port}/")
        await browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
        assert await browser.evaluate("document.title") == "flowers · ascend-mlops"

        document = await browser.send("DOM.getDocument")
        node = await browser.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file")
        await browser.send("DOM.setFileInputFiles", files=[str(photo)], nodeId=node["nodeId"])
        await browser.evaluate("document.getElementById('predict').click()")

        state = await browser.wait_for(
            "['done', 'error'].includes(document.getElementById('result').dataset.state) && "
            "document.getElementById('result').dataset.state"
        )
        error = await browser.evaluate("document.getElementById('error').textContent")
        assert state == "done", error
        assert await browser.evaluate("document.getElementById('predicted-label').textContent") == "blue"
        bars = await browser.evaluate(
            "[...document.querySelectorAll('#scores li')].map(li => [li.children[0].textContent, li.querySelector('.bar span').style.width])"
        )
        assert [name for name, _ in bars] == ["blue", "green", "red"] or [name for name, _ in bars] == ["blue", "red", "green"]
        assert float(bars[0][1].rstrip("%")) > 90
        assert await browser.evaluate("document.querySelector('img#preview').style.display") == "block"
    finally:
        await server.stop()


async def test_upload_page_asks_for_the_token_when_the_server_needs_one(
    browser: DevTools, tiny_version: Path, tmp_path: Path
) -> None:
    token = "page-token-4f0c2a91"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{token}\n")
    config = ServerConfig(
        model=tiny_version, backend="tensorflow", name="flowers", host="127.0.0.1", port=0, termination_log=None,
        auth_tokens=tokens,
    )
    server = InferenceServer(config, TensorFlowBackend(tiny_version))
    port = await server.start()
    await server.load()
    try:
        photo = tmp_path / "photo.png"
        photo.write_bytes(image_bytes("red", size=48, fmt="PNG"))
        await browser.send("Page.enable")
        await browser.send("Network.enable")
        await browser.send("Page.navigate", url=f"http://127.0.0.1:{port}/")
        await browser.wait_for("document.readyState === 'complete' && !!document.getElementById('token')")
        assert await browser.evaluate("document.getElementById('token').type") == "password"
        document = await browser.send("DOM.getDocument")
        node = await browser.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file")
        await browser.send("DOM.setFileInputFiles", files=[str(photo)], nodeId=node["nodeId"])

        async def predict(value: str) -> tuple[str, str]:
            await browser.evaluate(
                f"document.getElementById('result').dataset.state = 'idle';"
                f"document.getElementById('token').value = {json.dumps(value)};"
                "document.getElementById('predict').click()"
            )
            state = await browser.wait_for(
                "['done', 'error', 'unauthorized'].includes(document.getElementById('result').dataset.state) && "
                "document.getElementById('result').dataset.state"
            )
            return state, await browser.evaluate("document.getElementById('error').textContent")

        state, message = await predict("")  # not even sent
        assert state == "error" and "needs a token" in message
        state, message = await predict("not-the-token")
        assert state == "unauthorized" and "401" in message and "refused the token" in message
        assert await browser.evaluate("document.getElementById('predicted-label').textContent") == ""
        state, message = await predict(token)
        assert state == "done", message
        assert await browser.evaluate("document.getElementById('predicted-label').textContent") == "red"

        # What the browser sent: the token as a bearer header on POST / (and only there).
        sent = [
            e["params"]["request"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent" and e["params"]["request"]["method"] == "POST"
        ]
        assert [r["headers"].get("Authorization") for r in sent] == ["Bearer not-the-token", f"Bearer {token}"]
    finally:
        await server.stop()
