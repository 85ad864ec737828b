"""Fixtures for the batch tests: input folders with good and bad images, a real S3 server, the CLI runner."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ascend_mlops.api import contract
from tests.conftest import TINY_CLASSES, TINY_IMAGE_SIZE
from tests.helpers import make_dataset
from tests.s3server import S3Server, running_s3_server

# File name -> the words its FAILED line's error_message must contain.
BAD_IMAGES = {
    "bad/corrupt.jpg": "could not be decoded",
    "bad/notes.jpg": "not a JPEG, PNG or BMP",
    "bad/huge.jpg": "over the 12 MB",
    "bad/bomb.png": "pixels, more than",
}


def jpeg_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = TINY_IMAGE_SIZE) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "JPEG")
    return out.getvalue()


def write_bad_images(root: Path) -> None:
    (root / "bad").mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes()
    (root / "bad/corrupt.jpg").write_bytes(good[: len(good) // 2])  # a truncated JPEG
    (root / "bad/notes.jpg").write_text("these are my notes, not a photo\n")
    # A decodable JPEG padded past the 12 MB limit per image.
    (root / "bad/huge.jpg").write_bytes(good + b"\0" * (contract.BATCH_MAX_IMAGE_BYTES + 1 - len(good)))
    # A decompression bomb: a tiny PNG file of 8000x8000 = 64 M pixels.
    Image.new("1", (8000, 8000)).save(root / "bad/bomb.png", "PNG")


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 good images of the tiny classes in class folders, plus the four bad ones."""
    root = make_dataset(tmp_path_factory.mktemp("batch-in"), classes=TINY_CLASSES, per_class=4, size=TINY_IMAGE_SIZE, seed=7)
    write_bad_images(root)
    return root


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency")
    with running_s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
