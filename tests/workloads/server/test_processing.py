"""Decoding, resizing, softmax/top-k and labels discovery."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ascend_mlops.workloads.server import processing
from ascend_mlops.workloads.server.errors import InvalidInput, ModelLoadError
from tests.workloads.server.tinymodel import image_bytes


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_decode_and_resize_give_float32_rgb_at_the_model_size(fmt: str) -> None:
    image = processing.decode(image_bytes("green", size=40, fmt=fmt), (8, 8))
    array = processing.to_input(image, (8, 8))
    assert array.shape == (8, 8, 3) and array.dtype == np.float32
    assert 200 < array[..., 1].mean() <= 255 and array[..., 0].mean() < 50


def test_grayscale_and_rgba_become_rgb() -> None:
    for mode in ("L", "RGBA", "P"):
        buf = io.BytesIO()
        Image.new(mode, (10, 10)).save(buf, "PNG")
        assert processing.decode(buf.getvalue(), (4, 4)).mode == "RGB"


def test_jpeg_is_decoded_at_reduced_size_when_the_target_is_small() -> None:
    big = image_bytes("red", size=800)
    image = processing.decode(big, (32, 32))
    assert image.size == (100, 100)  # decoded at 1/8 scale: still covers 32x32, 1/64 of the pixels
    assert processing.decode(big, (600, 600)).size == (800, 800)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a JPEG, PNG or BMP"),
        (image_bytes("red", size=64)[:200], "could not be decoded"),
    ],
)
def test_bad_images_raise_invalid_input(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        processing.decode(data, (8, 8))


def test_gif_is_not_accepted() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "GIF")
    with pytest.raises(InvalidInput, match="not a JPEG, PNG or BMP"):
        processing.decode(buf.getvalue(), (8, 8))


def test_softmax_and_top_k() -> None:
    probabilities = processing.softmax(np.array([1.0, 3.0, 2.0, 1000.0]))
    assert probabilities.sum() == pytest.approx(1.0) and np.isfinite(probabilities).all()
    top = processing.top_k(processing.softmax(np.array([1.0, 3.0, 2.0])), ["a", "b", "c"], 5)
    assert [label for label, _ in top] == ["b", "c", "a"]
    assert top[0][1] > top[1][1] > top[2][1]
    assert len(processing.top_k(np.ones(10) / 10, [str(i) for i in range(10)], 5)) == 5


def test_labels_are_found_beside_or_above_the_model(tmp_path: Path) -> None:
    om = tmp_path / "V001" / "om" / "model" / "model.om"
    om.parent.mkdir(parents=True)
    om.write_bytes(b"x")
    assert processing.resolve_labels(None, om, 2) == (["0", "1"], None)
    (tmp_path / "V001" / "labels.txt").write_text("daisy\nroses\n\n")
    assert processing.resolve_labels(None, om, 2) == (["daisy", "roses"], tmp_path / "V001" / "labels.txt")
    with pytest.raises(ModelLoadError, match="2 labels but the model has 3 classes"):
        processing.resolve_labels(None, om, 3)
    explicit = tmp_path / "mine.txt"
    explicit.write_text("a\nb\n")
    assert processing.resolve_labels(explicit, om, 2)[0] == ["a", "b"]
    with pytest.raises(ModelLoadError, match="--labels"):
        processing.resolve_labels(tmp_path / "missing.txt", om, 2)
