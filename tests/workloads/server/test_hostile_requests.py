"""Issue 15: each class of hostile request that used to get a 500 (or a 200 with invalid JSON), one test each.

Every answer is a 4xx with a JSON `{"error": ...}` body, and none of them reaches the model.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend
from ascend_mlops.workloads.server.config import ServerConfig
from ascend_mlops.workloads.server.parsing import MAX_JSON_DEPTH
from tests.helpers import wait_for
from tests.workloads.server.rawhttp import (
    Reply,
    ThreadedServer,
    parse_reply,
    request,
    threaded_server,
)
from tests.workloads.server.tinymodel import image_bytes

INFER = "/v2/models/flowers/infer"
MAX_BODY = 64 * 1024
BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture(scope="module")
def server(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    config = ServerConfig(
        model=tiny_version, backend="tensorflow", name="flowers", host="127.0.0.1", port=0,
        max_body_bytes=MAX_BODY, max_batch_delay_ms=0,
        termination_log=str(tmp_path_factory.mktemp("log") / "termination-log"),
    )
    with threaded_server(config, TensorFlowBackend(tiny_version)) as running:
        yield running


def pixels_request(data: object, outputs: object = None, shape: list[int] | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": shape or [1, 8, 8, 3], "data": data}]
    }
    if outputs is not None:
        body["outputs"] = outputs
    return body


def infer(server: ThreadedServer, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    return server.exchange(request("POST", INFER, body, {"Content-Type": "application/json", **(headers or {})}))


def assert_client_error(reply: Reply, status: int, *words: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    message = reply.json()["error"]
    for word in words:
        assert word in message, message


def inferences(server: ThreadedServer) -> float:
    return server.metric("ascend_mlops_server_batch_size_count")


def test_deeply_nested_json_is_400_not_a_recursion_error(server: ThreadedServer) -> None:
    assert_client_error(infer(server, b"[" * 5000), 400, "5000 levels deep", f"at most {MAX_JSON_DEPTH}")
    deep_id = {"id": "x", **pixels_request([0.0] * 192), "parameters": {"p": json.loads("[" * 40 + "]" * 40)}}
    assert_client_error(infer(server, json.dumps(deep_id).encode()), 400, "levels deep")
    # Brackets inside strings do not count.
    ok = {**pixels_request([0.0] * 192), "id": "[" * 5000}
    reply = infer(server, json.dumps(ok).encode())
    assert reply.status == 200 and reply.json()["id"] == "[" * 5000


@pytest.mark.parametrize(
    "part_headers",
    [
        pytest.param(b"this line has no colon\r\n", id="no-colon"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(200)), id="over-128-headers"),
        pytest.param(b"X-Long: " + b"a" * 20000 + b"\r\n", id="header-over-the-line-limit"),
    ],
)
def test_malformed_multipart_part_headers_are_400(server: ThreadedServer, part_headers: bytes) -> None:
    body = (
        f"--{BOUNDARY}\r\n".encode() + part_headers
        + b'Content-Disposition: form-data; name="images"; filename="x.jpg"\r\n\r\n'
        + image_bytes("red") + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    reply = server.exchange(request("POST", "/", body, {"Content-Type": MULTIPART}))
    assert_client_error(reply, 400, "malformed multipart/form-data")


def test_a_first_line_over_the_limit_is_400(server: ThreadedServer) -> None:
    body = b"--" + b"x" * 20000 + b"\r\n\r\n"
    reply = server.exchange(request("POST", "/", body, {"Content-Type": MULTIPART}))
    assert_client_error(reply, 400, "malformed multipart/form-data")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("path", ["/", INFER])
def test_a_body_not_valid_in_its_content_encoding_is_400(
    server: ThreadedServer, encoding: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    content_type = MULTIPART if path == "/" else "application/json"
    with caplog.at_level(logging.INFO):
        reply = server.exchange(
            request("POST", path, b"this is not " + encoding.encode(), {"Content-Type": content_type, "Content-Encoding": encoding})
        )
    assert_client_error(reply, 400, f"content-encoding: {encoding}")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no error with a traceback is logged"
    # A valid gzip body still works: the encoding is honoured, not refused.
    valid = gzip.compress(json.dumps(pixels_request([0.0] * 192)).encode())
    assert infer(server, valid, {"Content-Encoding": "gzip"}).status == 200


def test_a_number_too_large_for_a_float_is_400(server: ThreadedServer) -> None:
    before = inferences(server)
    text = json.dumps(pixels_request([0] * 192)).replace("[0,", "[1" + "0" * 400 + ",", 1)
    assert_client_error(infer(server, text.encode()), 400, "inputs[0].data")
    text = json.dumps(pixels_request([0] * 192)).replace("[0,", "[1e400,", 1)  # parses as a float: inf
    assert_client_error(infer(server, text.encode()), 400, "finite pixel values", "inf")
    assert_client_error(infer(server, json.dumps(pixels_request([1e39] + [0] * 191)).encode()), 400, "finite")
    assert inferences(server) == before


@pytest.mark.parametrize(
    "outputs, words",
    [
        ([{"name": "logits", "parameters": [1]}], "outputs[0].parameters must be a JSON object"),
        ([{"name": "logits", "parameters": {"classification": "three"}}], "classification must be a non-negative integer"),
        ([{"name": "logits", "parameters": {"classification": -1}}], "classification must be a non-negative integer"),
        ([{"name": "logits", "parameters": {"binary_data": "yes"}}], "binary_data must be true or false"),
        ([{"name": "logits"}, {"name": "logits"}], "a second time"),
        ([{"name": "probabilities"}], "unknown output"),
        ({"name": "logits"}, '"outputs" must be a list'),
    ],
)
def test_outputs_of_the_wrong_type_are_400_before_inference(server: ThreadedServer, outputs: object, words: str) -> None:
    before = inferences(server)
    assert_client_error(infer(server, json.dumps(pixels_request([0.0] * 192, outputs)).encode()), 400, words)
    assert inferences(server) == before, "the model ran for a request that was refused"


def test_a_client_that_hangs_up_mid_upload_is_499_and_one_info_line(
    server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    def errors_5xx() -> float:
        return sum(server.metric("ascend_mlops_server_requests_total", {"code": code}) for code in ("500", "502", "504"))

    before = server.metric("ascend_mlops_server_requests_total", {"code": "499"})
    with caplog.at_level(logging.INFO):
        for path, content_type in ((INFER, "application/json"), ("/", MULTIPART)):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: 50000\r\n\r\n".encode()
                    + f"--{BOUNDARY}\r\n".encode() + b"x" * 100
                )
        wait_for(
            lambda: server.metric("ascend_mlops_server_requests_total", {"code": "499"}) == before + 2,
            timeout=30, what="both hang-ups counted as 499",
        )
    assert errors_5xx() == 0
    closed = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert len(closed) == 2 and all(r.levelno == logging.INFO and r.exc_info is None for r in closed)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_nan_and_infinity_inputs_are_400_never_nan_in_the_answer(server: ThreadedServer) -> None:
    before = inferences(server)
    for constant in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(pixels_request([0] * 192)).replace("[0,", f"[{constant},", 1)
        assert_client_error(infer(server, text.encode()), 400, f"{constant} is not a JSON number")
    # Binary FP32 data can carry NaN without any JSON constant.
    pixels = np.zeros((1, 8, 8, 3), dtype="<f4")
    pixels[0, 0, 0, 0] = np.nan
    header = json.dumps(
        {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8, 3], "parameters": {"binary_data_size": pixels.nbytes}}]}
    ).encode()
    reply = infer(server, header + pixels.tobytes(), {"Inference-Header-Content-Length": str(len(header))})
    assert_client_error(reply, 400, "finite pixel values", "nan")
    assert_client_error(infer(server, json.dumps(pixels_request([-1.0] + [0] * 191)).encode()), 400, "[0, 255]")
    assert inferences(server) == before


def test_a_huge_content_length_on_infer_is_413_before_the_body(server: ThreadedServer) -> None:
    for path, content_type in ((INFER, "application/json"), ("/", MULTIPART)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: 99999999999\r\n\r\n{{".encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        reply = parse_reply(answer)
        assert_client_error(reply, 413, "99999999999 bytes", f"{MAX_BODY}-byte limit")
        assert reply.headers.get("connection") == "close"
        assert time.monotonic() - started < 5


def test_bytes_inputs_and_ids_are_checked_too(server: ThreadedServer) -> None:
    files = [base64.b64encode(image_bytes("blue")).decode()]
    body = {"id": 7, "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": files}]}
    assert_client_error(infer(server, json.dumps(body).encode()), 400, '"id" must be a string')
    body["id"] = "7"
    reply = infer(server, json.dumps(body).encode())
    assert reply.status == 200 and reply.json()["id"] == "7"
