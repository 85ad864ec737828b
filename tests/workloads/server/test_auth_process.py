"""`ascend-mlops serve --auth-tokens ... --metrics-port ...` as a process: the real tritonclient with
and without a bearer token, the metrics port, rotation of a mounted Secret, startup errors, DEBUG logs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from ascend_mlops.api import contract
from tests.helpers import run_cli, wait_for
from tests.workloads.server.mounted import MountedSecret
from tests.workloads.server.process import ServerProcess, post_image
from tests.workloads.server.tinymodel import image_bytes

NAME = "flowers"
TOKEN = "proc-token-alpha-51c0de"
OTHER = "proc-token-bravo-9e77aa"
NEW = "proc-token-charlie-0b5f1"
WRONG = "proc-token-wrong-000000"
ALL_TOKENS = (TOKEN, OTHER, NEW, WRONG)


@pytest.fixture(scope="module")
def served(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, MountedSecret]]:
    root = tmp_path_factory.mktemp("auth-process")
    secret = MountedSecret(root / "secret", {"tokens": f"{TOKEN}\n{OTHER}\n"})
    args = [
        contract.FLAG_MODEL, str(tiny_version / contract.FROZEN_GRAPH_DIR), contract.FLAG_BACKEND, "tensorflow",
        contract.FLAG_NAME, NAME, contract.FLAG_AUTH_TOKENS, str(secret.root), contract.FLAG_METRICS_PORT, "0",
        contract.FLAG_TERMINATION_LOG, str(root / "termination-log"), "--log-level", "DEBUG",
    ]
    with ServerProcess(args) as server:
        server.wait_ready()
        yield server, secret
        assert server.terminate() == 0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_tritonclient_needs_the_bearer_header(served: tuple[ServerProcess, MountedSecret]) -> None:
    server, _ = served
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    # Health and server metadata stay open (probes, discovery).
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    assert client.get_server_metadata()["name"] == "ascend-mlops"

    meta = client.get_model_metadata(NAME, headers=bearer(TOKEN))
    assert meta["parameters"]["labels"] == ["red", "green", "blue"]
    pixels = np.zeros((2, 8, 8, 3), dtype=np.float32)
    pixels[0, ..., 2] = 255
    pixels[1, ..., 0] = 255
    for headers in (bearer(TOKEN), bearer(OTHER), {"X-Auth-Token": TOKEN}):
        for binary in (True, False):
            tensor = triton.InferInput("images", list(pixels.shape), "FP32")
            tensor.set_data_from_numpy(pixels, binary_data=binary)
            # A fresh dict per call: tritonclient adds Inference-Header-Content-Length into the one it is given.
            result = client.infer(
                NAME, [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)], headers=dict(headers)
            )
            assert list(np.argmax(result.as_numpy("logits"), axis=1)) == [2, 0]
    files = np.array([image_bytes("green")], dtype=np.object_)
    tensor = triton.InferInput("images", [1], "BYTES")
    tensor.set_data_from_numpy(files)
    result = client.infer(NAME, [tensor], outputs=[triton.InferRequestedOutput("logits", class_count=1)], headers=bearer(TOKEN))
    assert result.as_numpy("logits")[0][0].decode().endswith(":1:green")

    tensor = triton.InferInput("images", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    with pytest.raises(triton.InferenceServerException) as missing:
        client.infer(NAME, [tensor])
    assert missing.value.status() == "401" and "needs a token" in missing.value.message()
    with pytest.raises(triton.InferenceServerException) as invalid:
        client.infer(NAME, [tensor], headers=bearer(WRONG))
    assert invalid.value.status() == "401" and "not valid" in invalid.value.message()
    with pytest.raises(triton.InferenceServerException) as metadata:
        client.get_model_metadata(NAME)
    assert metadata.value.status() == "401"
    client.close()


def test_metrics_only_on_the_metrics_port(served: tuple[ServerProcess, MountedSecret]) -> None:
    server, _ = served
    assert server.metrics_port and server.metrics_port != server.port
    status, body = get(server.url + contract.METRICS_PATH)
    assert status == 404 and "error" in json.loads(body)
    assert post_image(server.url, image_bytes("red"), headers={"X-Auth-Token": OTHER})[0] == 200
    assert post_image(server.url, image_bytes("red"))[0] == 401
    status, text = get(f"http://127.0.0.1:{server.metrics_port}{contract.METRICS_PATH}")
    assert status == 200
    assert 'ascend_mlops_server_auth_requests_total{outcome="ok"}' in text
    assert 'ascend_mlops_server_auth_requests_total{outcome="missing"}' in text
    assert contract.METRIC_INFLIGHT in text
    assert not any(token in text for token in ALL_TOKENS)
    assert get(f"http://127.0.0.1:{server.metrics_port}/")[0] == 404


def test_a_secret_update_is_picked_up_without_a_restart(served: tuple[ServerProcess, MountedSecret]) -> None:
    server, secret = served
    status, headers, body = post_image(server.url, image_bytes("blue"), headers=bearer(NEW))
    assert status == 401 and "invalid_token" in headers["WWW-Authenticate"] and b"predicted_label" not in body
    secret.update({"tokens": f"{NEW}\n", "old": f"{TOKEN}\n"})
    wait_for(lambda: post_image(server.url, image_bytes("blue"), headers=bearer(NEW))[0] == 200, timeout=15,
             what="the new token accepted")
    assert post_image(server.url, image_bytes("blue"), headers=bearer(TOKEN))[0] == 200
    assert post_image(server.url, image_bytes("blue"), headers=bearer(OTHER))[0] == 401  # dropped from the Secret
    secret.update({"tokens": f"{TOKEN}\n{OTHER}\n"})  # as the fixture made it
    wait_for(lambda: post_image(server.url, image_bytes("blue"), headers=bearer(NEW))[0] == 401, timeout=15,
             what="the removed token refused")
    assert server.process.poll() is None


def test_no_token_in_the_debug_log(served: tuple[ServerProcess, MountedSecret]) -> None:
    server, _ = served
    for headers in (bearer(TOKEN), {"X-Auth-Token": OTHER}, bearer(WRONG), {"X-Auth-Token": WRONG}):
        post_image(server.url, image_bytes("red"), headers=headers)
    log = server.log
    assert " DEBUG " in log and "authentication on: 2 token(s)" in log
    assert not any(token in log for token in ALL_TOKENS)


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_an_unusable_token_source_stops_the_server_with_exit_2(tiny_version: Path, tmp_path: Path, case: str) -> None:
    tokens = tmp_path / "tokens"
    if case == "empty":
        tokens.mkdir()
        MountedSecret(tokens, {"token": "\n"})
    log = tmp_path / "termination-log"
    result = run_cli(
        [contract.CMD_SERVE, contract.FLAG_MODEL, str(tiny_version / contract.FROZEN_GRAPH_DIR),
         contract.FLAG_BACKEND, "tensorflow", contract.FLAG_PORT, "0", contract.FLAG_AUTH_TOKENS, str(tokens),
         contract.FLAG_TERMINATION_LOG, str(log)],
        timeout=120,
    )
    assert result.returncode == contract.EXIT_USAGE, result.stderr
    assert "listening on" not in result.stderr  # refused before the port opened
    summary = json.loads(log.read_text())
    assert summary[contract.SUMMARY_EXIT_CODE] == contract.EXIT_USAGE
    assert contract.FLAG_AUTH_TOKENS in summary[contract.SUMMARY_ERROR] and str(tokens) in summary[contract.SUMMARY_ERROR]
    assert ("no such file" if case == "missing" else "no token in 1 file(s)") in summary[contract.SUMMARY_ERROR]
