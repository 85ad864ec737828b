"""The server under generated hostile traffic: no 5xx but 503, no crash, every JSON answer valid JSON.

Hypothesis generates raw HTTP requests (so malformed bytes are possible) for every route and method:
inference requests built from valid ones with any field replaced by any JSON value, number and nesting
mutations made in the JSON text (NaN, 1e400, a 400-digit integer, deep brackets), the binary tensor
extension with lying lengths, multipart bodies with broken part headers, bodies with and without the
Content-Encoding they claim, Content-Lengths over the limit, and junk request lines. The server is the
real app with the tiny model, in-process on its own thread.

FUZZ_REQUESTS (default 10000) sets how many requests one run sends.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ascend_mlops.workloads.server.backends.tensorflow_backend import TensorFlowBackend
from ascend_mlops.workloads.server.config import ServerConfig
from tests.workloads.server.rawhttp import Reply, ThreadedServer, request, threaded_server
from tests.workloads.server.tinymodel import image_bytes

REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "10000"))
MAX_BODY = 64 * 1024
NAME = "flowers"
ROUTES = [
    "/", "/v2", "/v2/health/live", "/v2/health/ready", "/metrics",
    f"/v2/models/{NAME}", f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}/infer",
    f"/v2/models/{NAME}/versions/1", f"/v2/models/{NAME}/versions/1/ready", f"/v2/models/{NAME}/versions/1/infer",
    "/v2/models/other/infer", f"/v2/models/{NAME}/versions/2/infer", "/no/such/route",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
IMAGES = [image_bytes("red"), image_bytes("green", fmt="PNG"), image_bytes("blue", fmt="BMP"), image_bytes("red")[:40]]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes anything JSON at all."""
    return st.one_of(valid, valid, valid, json_values)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    datatype = draw(maybe(st.sampled_from(["FP32", "BYTES"])))
    count = draw(st.integers(0, 3))
    if datatype == "BYTES":
        shape: Any = draw(st.sampled_from([[count], [count, 1], [count, 2]]))
        import base64

        data: Any = [base64.b64encode(draw(st.sampled_from(IMAGES))).decode() for _ in range(count)]
        data = draw(st.one_of(st.just(data), st.just(["not base64!"] * count)))
    else:
        shape = draw(st.sampled_from([[count, 8, 8, 3], [count, 4, 4, 3], [count, 8, 8]]))
        values = st.floats(0, 255) | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)
        size = count * 192
        data = draw(st.one_of(st.lists(values, min_size=size, max_size=size), st.lists(values, max_size=8)))
        if data and draw(st.booleans()):
            data = [data[i : i + 3] for i in range(0, len(data), 3)]  # nested, like numpy's tolist()
    tensor = {"name": draw(maybe(st.just("images"))), "datatype": datatype, "shape": draw(maybe(st.just(shape))),
              "data": draw(maybe(st.just(data)))}
    if draw(st.booleans()):
        tensor["parameters"] = draw(maybe(st.fixed_dictionaries({"binary_data_size": st.integers(-1, 4000)})))
    return tensor


@st.composite
def infer_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": draw(maybe(st.lists(tensors(), min_size=1, max_size=2)))}
    if draw(st.booleans()):
        output = st.fixed_dictionaries(
            {"name": maybe(st.just("logits"))},
            optional={"parameters": maybe(st.fixed_dictionaries(
                {}, optional={"classification": maybe(st.integers(0, 5)), "binary_data": maybe(st.booleans())}
            ))},
        )
        body["outputs"] = draw(maybe(st.lists(output, max_size=2)))
    if draw(st.booleans()):
        body["id"] = draw(maybe(st.text(max_size=8)))
    if draw(st.booleans()):
        body["parameters"] = draw(maybe(st.fixed_dictionaries({}, optional={"binary_data_output": maybe(st.booleans())})))
    return body


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    text = json.dumps(draw(infer_bodies()))
    mutation = draw(st.sampled_from(["none", "none", "number", "deep", "truncate", "bytes"]))
    if mutation == "number" and "0" in text:
        at = text.index("0")
        text = text[:at] + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "-0"])) + text[at + 1 :]
    elif mutation == "deep":
        depth = draw(st.integers(1, 3000))
        text = '{"inputs": ' + "[" * depth + "]" * draw(st.sampled_from([depth, 0])) + "}"
    elif mutation == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    raw = text.encode()
    if mutation == "bytes":
        raw = draw(st.binary(max_size=64)) + raw
    return raw


@st.composite
def valid_infer(draw: st.DrawFn) -> bytes:
    """A request that must work (200), with the outputs in every form the server offers."""
    count = draw(st.integers(1, 3))
    if draw(st.booleans()):
        images = draw(st.lists(st.sampled_from(IMAGES[:3]), min_size=count, max_size=count))
        import base64

        tensor = {"name": "images", "datatype": "BYTES", "shape": [count], "data": [base64.b64encode(i).decode() for i in images]}
    else:
        pixels = draw(st.lists(st.floats(0, 255, width=32), min_size=count * 192, max_size=count * 192))
        tensor = {"name": "images", "datatype": "FP32", "shape": [count, 8, 8, 3], "data": pixels}
    output = {"name": "logits", "parameters": {"classification": draw(st.integers(0, 4)), "binary_data": draw(st.booleans())}}
    return json.dumps({"id": draw(st.text(max_size=8)), "inputs": [tensor], "outputs": [output]}).encode()


@st.composite
def binary_infer(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    payload = draw(st.one_of(st.binary(max_size=1000), st.just(b"\0" * 768)))
    tensor = {"name": "images", "datatype": draw(st.sampled_from(["FP32", "BYTES"])), "shape": [1, 8, 8, 3],
              "parameters": {"binary_data_size": draw(st.sampled_from([len(payload), len(payload) + 1, 0]))}}
    if tensor["datatype"] == "BYTES":
        tensor["shape"] = [1]
    header = json.dumps({"inputs": [tensor]}).encode()
    length = draw(st.sampled_from([str(len(header)), str(len(header) + 3), "0", "-5", "x", str(10**30)]))
    return header + payload, {"Inference-Header-Content-Length": length}


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    boundary = "fuzzb"
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        lines = [draw(st.sampled_from([
            'Content-Disposition: form-data; name="images"; filename="x.jpg"',
            'Content-Disposition: form-data; name="other"',
            "Content-Type: image/jpeg", "Content-Transfer-Encoding: base64", "Content-Type: text/plain; charset=nope",
        ])) for _ in range(draw(st.integers(0, 3)))]
        junk = draw(st.sampled_from(["", "no colon here", "X: " + "a" * 9000, "\n".join(f"X-{i}: v" for i in range(130))]))
        if junk:
            lines.append(junk)
        lines += [f"X-Fuzz: {draw(st.text(max_size=20)).encode('utf-8', 'replace').decode('latin-1')}"] if draw(st.booleans()) else []
        content = draw(st.one_of(st.sampled_from(IMAGES), st.binary(max_size=200)))
        parts.append(f"--{boundary}\r\n".encode() + "\r\n".join(lines).replace("\n", "\r\n").replace("\r\r", "\r").encode("latin-1")
                     + b"\r\n\r\n" + content + b"\r\n")
    body = b"".join(parts) + draw(st.sampled_from([f"--{boundary}--\r\n".encode(), b"", b"--wrong--\r\n"]))
    content_type = draw(st.sampled_from([
        f"multipart/form-data; boundary={boundary}", "multipart/form-data", "multipart/form-data; boundary=" + "x" * 100,
        "multipart/mixed; boundary=fuzzb", "text/plain",
    ]))
    return body, {"Content-Type": content_type}


def encode(body: bytes, encoding: str) -> bytes:
    return {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding](body)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(the bytes, whether the request is well framed, so that it must get an answer)."""
    kind = draw(st.sampled_from(["valid", "infer", "infer", "binary", "multipart", "multipart", "any", "junk"]))
    if kind == "junk":
        line = draw(st.binary(min_size=1, max_size=200)).replace(b"\r", b"").replace(b"\n", b"")
        return line + b"\r\n" + draw(st.sampled_from([b"", b"Host: x\r\n", b"Content-Length: -1\r\n", b"Bad Header\r\n"])) + b"\r\n", False
    headers: dict[str, str] = {}
    if kind == "valid":
        path = draw(st.sampled_from([f"/v2/models/{NAME}/infer", f"/v2/models/{NAME}/versions/1/infer"]))
        method, body = "POST", draw(valid_infer())
        headers["Content-Type"] = "application/json"
    elif kind == "infer":
        method, path, body = "POST", draw(st.sampled_from([r for r in ROUTES if r.endswith("/infer")])), draw(json_texts())
        headers["Content-Type"] = "application/json"
    elif kind == "binary":
        method, path = "POST", f"/v2/models/{NAME}/infer"
        body, headers = draw(binary_infer())
    elif kind == "multipart":
        method, path = "POST", "/" + draw(st.sampled_from(["", "?top_k=1", "?top_k=0", "?top_k=abc", "?top_k=" + "9" * 5000]))
        body, headers = draw(multipart())
    else:
        method = draw(st.sampled_from(METHODS) | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8))
        path = draw(st.sampled_from(ROUTES) | st.text(max_size=30).map(lambda t: "/" + t.encode("utf-8").hex()))
        body = draw(st.binary(max_size=300))
    encoding = draw(st.sampled_from(["", "", "", "gzip", "deflate", "br", "identity", "zstd"]))
    if encoding:
        headers["Content-Encoding"] = encoding
        if encoding in ("gzip", "deflate", "br") and draw(st.booleans()):
            body = encode(body, encoding)
    if draw(st.integers(0, 19)) == 0:
        # Over --max-body-bytes: refused from the Content-Length alone, so the body need not follow.
        return request(method, path, body, {**headers, "Content-Length": str(MAX_BODY + 1 + len(body))}), True
    return request(method, path, body, headers), True


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.started = time.monotonic()


@pytest.fixture(scope="module")
def server(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    config = ServerConfig(
        model=tiny_version, backend="tensorflow", name=NAME, host="127.0.0.1", port=0,
        max_body_bytes=MAX_BODY, max_batch_delay_ms=0, max_queue=4,
        termination_log=str(tmp_path_factory.mktemp("log") / "termination-log"),
    )
    with threaded_server(config, TensorFlowBackend(tiny_version)) as running:
        yield running


def check(reply: Reply, data: bytes) -> None:
    shown = data[:300]
    assert reply.status < 500 or reply.status == 503, (reply.status, reply.body[:300], shown)
    if reply.headers.get("content-type", "").startswith("application/json") and not data.startswith(b"HEAD "):
        value = reply.json()  # strict: NaN or Infinity would fail
        if reply.status >= 400:
            assert isinstance(value, dict) and isinstance(value.get("error"), str), (reply.body[:300], shown)


def test_generated_requests_never_get_a_5xx_but_503(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally()

    @settings(
        max_examples=REQUESTS, deadline=None, database=None, derandomize=False, print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(generated: tuple[bytes, bool]) -> None:
        data, framed = generated
        tally.sent += 1
        try:
            reply = server.exchange(data, timeout=10 if framed else 2)
        except TimeoutError:
            assert not framed, f"no answer within 10 s to a well-framed request: {data[:300]!r}"
            return
        if framed:
            assert reply.status, f"the connection closed without an answer: {data[:300]!r}"
        tally.statuses[reply.status] = tally.statuses.get(reply.status, 0) + 1
        check(reply, data)

    one()
    elapsed = time.monotonic() - tally.started
    with capsys.disabled():
        print(f"\nfuzz: {tally.sent} requests in {elapsed:.1f}s, statuses {dict(sorted(tally.statuses.items()))}")
    assert tally.sent >= REQUESTS
    # The server is still up and well, and it never counted a 5xx but 503.
    assert server.exchange(request("GET", "/v2/health/live")).status == 200
    assert server.exchange(request("GET", "/v2/health/ready")).status == 200
    for code in ("500", "501", "502", "504"):
        assert server.metric("ascend_mlops_server_requests_total", {"code": code}) == 0
    assert server.server.connections.owed <= 1  # only the /metrics request being answered, nothing left hanging
    statuses = set(tally.statuses)
    assert {200, 400, 404, 405, 413} <= statuses, statuses  # the generator reached every kind of answer
