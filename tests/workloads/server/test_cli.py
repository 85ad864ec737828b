"""`ascend-mlops serve` as a process: load failures, termination log, SIGTERM draining."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ascend_mlops.api import contract
from tests.helpers import run_cli, wait_for
from tests.workloads.server.process import ServerProcess, post_image
from tests.workloads.server.tinymodel import image_bytes

SIM = {contract.ENV_SIMULATOR: "1"}


def _real_acl_installed() -> bool:
    try:
        import acl  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_real_acl_installed(), reason="the real pyACL is installed here")
def test_acl_without_pyacl_and_without_the_simulator_exits_6(tiny_om: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    result = run_cli(
        [contract.CMD_SERVE, contract.FLAG_MODEL, str(tiny_om), contract.FLAG_BACKEND, "acl",
         contract.FLAG_PORT, "0", contract.FLAG_TERMINATION_LOG, str(log)],
        env={contract.ENV_SIMULATOR: "0"},
        timeout=120,
    )
    assert result.returncode == contract.EXIT_TOOLKIT_MISSING, result.stderr
    summary = json.loads(log.read_text())
    assert summary[contract.SUMMARY_EXIT_CODE] == contract.EXIT_TOOLKIT_MISSING
    assert "pyACL" in summary[contract.SUMMARY_ERROR] and contract.ENV_SIMULATOR in summary[contract.SUMMARY_ERROR]


@pytest.mark.parametrize("case", ["missing", "not-a-model", "labels-mismatch"])
def test_an_unloadable_model_exits_5_with_the_reason_in_the_termination_log(
    case: str, tiny_om: Path, tmp_path: Path
) -> None:
    args = [contract.FLAG_BACKEND, "acl"]
    if case == "missing":
        args += [contract.FLAG_MODEL, str(tmp_path / "nothing-here")]
        expected = "no such file"
    elif case == "not-a-model":
        bad = tmp_path / "model.om"
        bad.write_bytes(b"\x00" * 128)
        args += [contract.FLAG_MODEL, str(tmp_path)]
        expected = "ACL_ERROR_PARSE_MODEL"
    else:
        labels = tmp_path / "labels.txt"
        labels.write_text("only\ntwo\n")
        args += [contract.FLAG_MODEL, str(tiny_om), contract.FLAG_LABELS, str(labels)]
        expected = "2 labels but the model has 3 classes"
    log = tmp_path / "termination-log"
    with ServerProcess([*args, contract.FLAG_TERMINATION_LOG, str(log)], env=SIM) as server:
        code = server.wait_exit()
    assert code == contract.EXIT_INVALID_MODEL, server.log[-2000:]
    summary = json.loads(log.read_text())
    assert expected in summary[contract.SUMMARY_ERROR] and summary[contract.SUMMARY_SIMULATED] is True
    assert expected in server.log


def test_bad_option_values_are_usage_errors(tiny_om: Path) -> None:
    result = run_cli([contract.CMD_SERVE, contract.FLAG_MODEL, str(tiny_om), contract.FLAG_BACKEND, "acl",
                      contract.FLAG_MAX_BATCH_SIZE, "0"], timeout=60)
    assert result.returncode == contract.EXIT_USAGE and contract.FLAG_MAX_BATCH_SIZE in result.stderr


def test_sigterm_finishes_requests_in_flight_then_releases_acl(tiny_dynamic_om: Path, tmp_path: Path) -> None:
    """Request A is still uploading and request B waits in the batch queue (a long batching
    delay and A in flight keep it there) when SIGTERM arrives: both must be answered."""
    args = [contract.FLAG_MODEL, str(tiny_dynamic_om), contract.FLAG_BACKEND, "acl",
            contract.FLAG_MAX_BATCH_SIZE, "8", contract.FLAG_MAX_BATCH_DELAY_MS, "600000",
            contract.FLAG_TERMINATION_LOG, str(tmp_path / "termination-log")]
    with ServerProcess(args, env=SIM) as server:
        server.wait_ready()
        boundary = "b0undary"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n\r\n"
        ).encode() + image_bytes("red") + f"\r\n--{boundary}--\r\n".encode()
        slow = socket.create_connection(("127.0.0.1", server.port or 0), timeout=60)
        slow.sendall(
            f"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode() + body[:40]
        )

        def metric(line: str) -> bool:
            with urllib.request.urlopen(server.url + contract.METRICS_PATH, timeout=10) as response:
                return line in response.read().decode()

        wait_for(lambda: metric("ascend_mlops_server_inflight_requests 1.0"), timeout=60, what="request A in flight")
        answer: dict[str, object] = {}
        client = threading.Thread(target=lambda: answer.update(result=post_image(server.url, image_bytes("green"))))
        client.start()
        wait_for(lambda: metric("ascend_mlops_server_queue_depth 1.0"), timeout=60, what="request B queued")

        server.process.send_signal(signal.SIGTERM)
        client.join(60)
        status, _, reply = answer["result"]  # type: ignore[misc]
        assert status == 200 and json.loads(reply)["predicted_label"] == "green"
        slow.sendall(body[40:])  # A finishes uploading after SIGTERM
        response = b""
        while chunk := slow.recv(65536):
            response += chunk
        slow.close()
        code = server.wait_exit()
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["predicted_label"] == "red"
    assert code == 0, server.log[-2000:]
    assert "released all ACL resources" in server.log
    assert "teardown:" not in server.log  # every release call succeeded


def test_sigterm_answers_a_connection_whose_headers_were_still_arriving(tiny_version: Path, tmp_path: Path) -> None:
    """A client connected and sent half its headers when SIGTERM arrives: it is answered (200) once it
    finishes, a new connection is refused meanwhile, and the server exits 0 without waiting out the budget."""
    budget = 60.0
    args = [contract.FLAG_MODEL, str(tiny_version), contract.FLAG_BACKEND, "tensorflow",
            contract.FLAG_METRICS_PORT, "0",  # so that reading the metrics is not itself a connection on the port
            "--shutdown-timeout", str(budget), contract.FLAG_TERMINATION_LOG, str(tmp_path / "termination-log")]
    with ServerProcess(args) as server:
        server.wait_ready()

        def metric(line: str) -> bool:
            url = f"http://127.0.0.1:{server.metrics_port}{contract.METRICS_PATH}"
            with urllib.request.urlopen(url, timeout=10) as response:
                return line in response.read().decode()

        boundary = "b0undary"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n\r\n"
        ).encode() + image_bytes("blue") + f"\r\n--{boundary}--\r\n".encode()
        head = (
            f"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        slow = socket.create_connection(("127.0.0.1", server.port or 0), timeout=60)
        slow.sendall(head[:30])  # "POST / HTTP/1.1\r\nHost: x\r\nCon"
        wait_for(lambda: metric("ascend_mlops_server_open_connections 1.0"), timeout=60, what="the slow client accepted")

        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "answering 1 connection(s)" in server.log, timeout=60, what="the drain started")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port or 0), timeout=10).close()

        slow.sendall(head[30:] + body)  # the client finishes sending after SIGTERM
        answered = time.monotonic()
        response = b""
        while chunk := slow.recv(65536):
            response += chunk
        slow.close()
        code = server.wait_exit()
        exited = time.monotonic() - answered
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["predicted_label"] == "blue"
    assert code == 0, server.log[-2000:]
    assert exited < budget / 2, f"exited {exited:.1f}s after the answer: it waited out the budget"
    assert "still unanswered" not in server.log
