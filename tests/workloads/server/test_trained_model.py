"""The server on the real artifacts: the trainer's frozen graph (tensorflow backend) and the
ATC simulator's conversion of it (acl backend on the pyACL simulator)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from ascend_mlops.api import contract
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.workloads.server.process import ServerProcess, post_image

NAME = "flowers"


@pytest.fixture(scope="module")
def servers(trained_model: Path, converted_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("serve-logs")
    tf_server = ServerProcess([
        contract.FLAG_MODEL, str(trained_model / contract.FROZEN_GRAPH_DIR), contract.FLAG_BACKEND, "tensorflow",
        contract.FLAG_NAME, NAME, contract.FLAG_TERMINATION_LOG, str(logs / "tf"),
    ])
    acl_server = ServerProcess(
        [contract.FLAG_MODEL, str(converted_model), contract.FLAG_BACKEND, "acl", contract.FLAG_NAME, NAME,
         contract.FLAG_TERMINATION_LOG, str(logs / "acl")],
        env={contract.ENV_SIMULATOR: "1"},
    )
    with tf_server, acl_server:
        tf_server.wait_ready()
        acl_server.wait_ready()
        yield {"tensorflow": tf_server, "acl": acl_server}
        assert tf_server.terminate() == 0
        assert acl_server.terminate() == 0


def test_both_backends_give_the_same_predicted_label(servers: dict[str, ServerProcess], tiny_dataset: Path) -> None:
    images = [sorted((tiny_dataset / cls).iterdir())[0] for cls in TINY_CLASSES]
    for path in images:
        answers = {}
        for backend, server in servers.items():
            status, headers, body = post_image(server.url, path.read_bytes(), path.name)
            assert status == 200, body
            answers[backend] = json.loads(body)
        assert answers["tensorflow"]["predicted_label"] == answers["acl"]["predicted_label"], answers
        assert answers["acl"]["predicted_label"] in TINY_CLASSES  # names from the trainer's labels.txt
        tf_scores = dict(answers["tensorflow"]["scores"])
        acl_scores = dict(answers["acl"]["scores"])
        assert tf_scores.keys() == acl_scores.keys() == set(TINY_CLASSES)
        for label in TINY_CLASSES:
            assert acl_scores[label] == pytest.approx(tf_scores[label], abs=1e-3)
    assert "SIMULATOR" in servers["acl"].log and "SIMULATOR" not in servers["tensorflow"].log


def test_open_inference_protocol_with_tritonclient(servers: dict[str, ServerProcess], tiny_dataset: Path) -> None:
    server = servers["acl"]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    assert client.get_server_metadata()["name"] == "ascend-mlops"
    meta = client.get_model_metadata(NAME)
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, len(TINY_CLASSES)]}]
    assert meta["parameters"]["simulated"] is True and meta["parameters"]["labels"] == list(TINY_CLASSES)

    path = sorted((tiny_dataset / TINY_CLASSES[1]).iterdir())[0]
    pixels = np.asarray(
        Image.open(path).convert("RGB").resize((TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )[None]
    _, _, body = post_image(server.url, path.read_bytes(), path.name)
    expected = json.loads(body)["predicted_label"]

    for binary in (True, False):  # binary tensor extension and plain JSON
        tensor = triton.InferInput("images", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        result = client.infer(NAME, [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)])
        logits = result.as_numpy("logits")
        assert logits.shape == (1, len(TINY_CLASSES))
        assert TINY_CLASSES[int(np.argmax(logits[0]))] == expected

    files = np.array([path.read_bytes(), path.read_bytes()], dtype=np.object_)
    tensor = triton.InferInput("images", [2], "BYTES")
    tensor.set_data_from_numpy(files)
    result = client.infer(NAME, [tensor], outputs=[triton.InferRequestedOutput("logits", class_count=2)])
    top = result.as_numpy("logits")
    assert top.shape == (2, 2) and top[0][0].decode().endswith(f":{expected}")

    result = client.infer(NAME, [tensor])  # no outputs named: all of them, binary
    assert result.as_numpy("logits").shape == (2, len(TINY_CLASSES))

    with pytest.raises(triton.InferenceServerException, match="not served here"):
        client.get_model_metadata("other")
    client.close()
