"""Pre- and post-processing: image bytes -> the model's input, logits -> labelled scores.

The trainer's graph takes `images` as float32 NHWC RGB pixel values in [0, 255]
and normalises inside the graph, so pre-processing is only decode, RGB,
bilinear resize to the model's input size and a float32 cast. EXIF orientation
is deliberately not applied: the trainer decodes its images without it, and a
model sees the best accuracy on inputs prepared the way it was trained.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ascend_mlops.api import contract
from ascend_mlops.workloads.server.errors import InvalidInput, ModelLoadError

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("JPEG", "PNG", "BMP")
MAX_IMAGE_PIXELS = 40_000_000  # well above any photo; stops decompression bombs
DEFAULT_TOP_K = 5
LABEL_SEARCH_DEPTH = 3  # <version>/om/model/model.om -> <version>/labels.txt is 3 levels up


def decode(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Decode JPEG/PNG/BMP bytes to an RGB image; `size` is the model's (height, width).

    JPEG is decoded in draft mode, at 1/2, 1/4 or 1/8 scale when the result
    still covers the target size: far less work for a big photo.
    """
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InvalidInput(
                f"the image is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} allowed; send a smaller image"
            )
        if image.format == "JPEG":
            image.draft("RGB", (size[1], size[0]))
        return image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise InvalidInput(f"the data is not a JPEG, PNG or BMP image ({len(data)} bytes)") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Truncated or corrupt files fail while decoding, after the header parsed.
        raise InvalidInput(f"the image could not be decoded: {exc}") from exc


def to_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (height, width) and float32 HWC RGB in [0, 255]."""
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def prepare(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """decode + to_input: image bytes -> the model's float32 HWC input (InvalidInput for a bad image)."""
    return to_input(decode(data, size), size)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / np.sum(exp, axis=-1, keepdims=True)
    return result


def top_k(probabilities: np.ndarray, labels: list[str], k: int = DEFAULT_TOP_K) -> list[tuple[str, float]]:
    """The k most probable classes of one image, most probable first."""
    k = max(1, min(k, probabilities.shape[-1]))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(labels[i], float(probabilities[i])) for i in order]


def classification(logits: np.ndarray, labels: list[str], k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """One image's logits -> the ModelArts answer of `POST /` (and of a batch `<image>_result.txt`):
    {"predicted_label": label, "scores": [[label, probability], ...]} with the k most probable first."""
    scores = top_k(softmax(logits), labels, k)
    return {"predicted_label": scores[0][0], "scores": [[label, score] for label, score in scores]}


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------
def find_labels(model: Path) -> Path | None:
    """labels.txt beside the model or up to three folders above it.

    The trainer writes <version>/labels.txt and the conversion writes
    <version>/om/model/model.om, so both backends find the same file.
    """
    folder = model if model.is_dir() else model.parent
    for _ in range(LABEL_SEARCH_DEPTH + 1):
        candidate = folder / contract.LABELS_FILE
        if candidate.is_file():
            return candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"--labels {path}: cannot read the labels file: {exc}") from exc
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise ModelLoadError(f"--labels {path}: the labels file is empty; write one class name per line")
    return labels


def resolve_labels(explicit: Path | None, model: Path, classes: int) -> tuple[list[str], Path | None]:
    """Labels for `classes` outputs: the given file, one found near the model, or class indices."""
    path = explicit if explicit is not None else find_labels(model)
    if path is None:
        log.warning("no %s beside or above %s: answering with class indices", contract.LABELS_FILE, model)
        return [str(i) for i in range(classes)], None
    labels = read_labels(path)
    if len(labels) != classes:
        raise ModelLoadError(
            f"--labels {path}: {len(labels)} labels but the model has {classes} classes; "
            "use the labels.txt written with this model"
        )
    return labels, path
