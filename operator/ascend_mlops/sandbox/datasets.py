"""The dataset step of an example: a folder the user names, the public download, or a generated one.

A dataset is a folder of class sub-folders of images (what the trainer reads).
Order of preference: `--data DIR`; a dataset already in the sandbox; the public
archive named by the example (what a user with internet expects); and, when
that cannot be downloaded, a generated dataset drawn so that its classes are
learnable (flower-like pictures: petals, centre and colours differ by class).
"""

from __future__ import annotations

import math
import random
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DatasetError(ValueError):
    pass


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for every sub-folder that has images."""
    classes: dict[str, list[Path]] = {}
    if not root.is_dir():
        return classes
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            classes[folder.name] = images
    return classes


def check_dataset(root: Path) -> dict[str, list[Path]]:
    classes = class_folders(root)
    if len(classes) < 2:
        raise DatasetError(
            f"{root} is not a dataset: it needs at least two class sub-folders with images "
            f"(found {len(classes)}: {', '.join(classes) or 'none'}); lay it out as DIR/<class>/<image>.jpg"
        )
    return classes


def subset(source: Path, target: Path, per_class: int) -> Path:
    """A dataset of at most `per_class` images per class, as symlinks (nothing is copied)."""
    classes = check_dataset(source)
    if target.exists():
        shutil.rmtree(target)
    for name, images in classes.items():
        folder = target / name
        folder.mkdir(parents=True)
        for image in images[:per_class]:
            (folder / image.name).symlink_to(image.resolve())
    return target


def download(url: str, target: Path, archive_folder: str | None, timeout: float = 10.0,
             progress: Callable[[str], None] = print) -> Path:
    """Download and unpack an archive (tar or zip); returns the folder holding the classes."""
    target.mkdir(parents=True, exist_ok=True)
    archive = target / (url.rsplit("/", 1)[-1] or "dataset.archive")
    partial = archive.with_suffix(archive.suffix + ".part")
    progress(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            next_report = 0.1
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    progress(f"  {done / total:.0%} of {total / 1e6:.0f} MB")
                    next_report += 0.1
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"could not download {url}: {getattr(e, 'reason', e)}") from None
    partial.replace(archive)
    unpacked = target / "unpacked"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(unpacked, filter="data")
    archive.unlink()
    root = unpacked / archive_folder if archive_folder else unpacked
    check_dataset(root)
    return root


# ---------------------------------------------------------------------------
# The generated fallback: five flower-like classes.
# ---------------------------------------------------------------------------
Colour = tuple[int, int, int]

# class -> (petal colours, centre colour, petals, petal length, petal width, centre radius, shape)
FLOWER_STYLES: dict[str, tuple[Sequence[Colour], Colour, int, float, float, float, str]] = {
    "daisy": ([(250, 250, 245), (240, 240, 255)], (240, 200, 30), 18, 0.42, 0.07, 0.14, "petals"),
    "dandelion": ([(250, 215, 20), (255, 230, 60)], (235, 190, 10), 44, 0.36, 0.025, 0.10, "petals"),
    "roses": ([(200, 20, 40), (230, 60, 110), (160, 10, 30)], (120, 10, 20), 0, 0.40, 0.0, 0.0, "spiral"),
    "sunflowers": ([(250, 200, 0), (240, 170, 10)], (70, 40, 15), 22, 0.30, 0.09, 0.24, "petals"),
    "tulips": ([(230, 40, 60), (250, 120, 20), (160, 50, 170), (250, 200, 60)], (0, 0, 0), 3, 0.45, 0.22, 0.0, "cup"),
}


def _jitter(colour: Colour, rng: random.Random, amount: int = 25) -> Colour:
    r, g, b = (max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)
    return (r, g, b)


def draw_flower(kind: str, size: int, rng: random.Random) -> Image.Image:
    petals_colours, centre_colour, petals, length, width, centre, shape = FLOWER_STYLES[kind]
    background = _jitter((60 + rng.randint(0, 40), 110 + rng.randint(0, 50), 50), rng, 20)
    sky = rng.random() < 0.3
    image = Image.new("RGB", (size, size), (120, 170, 220) if sky else background)
    draw = ImageDraw.Draw(image)
    for _ in range(12):  # foliage blobs so that the background is not a give-away
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size * 0.05, size * 0.2)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter((50, 120, 45), rng, 30))
    cx, cy = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    scale = size * rng.uniform(0.75, 1.0)
    colour = _jitter(rng.choice(list(petals_colours)), rng)
    turn = rng.uniform(0, math.tau)
    if shape == "petals":
        for i in range(petals):
            angle = turn + i * math.tau / petals
            tip = (cx + math.cos(angle) * length * scale, cy + math.sin(angle) * length * scale)
            side = (math.cos(angle + math.pi / 2) * width * scale, math.sin(angle + math.pi / 2) * width * scale)
            base = (cx + math.cos(angle) * centre * scale * 0.6, cy + math.sin(angle) * centre * scale * 0.6)
            mid = ((base[0] + tip[0]) / 2, (base[1] + tip[1]) / 2)
            draw.polygon([base, (mid[0] + side[0], mid[1] + side[1]), tip, (mid[0] - side[0], mid[1] - side[1])], fill=_jitter(colour, rng, 12))
        r = max(centre * scale, 2)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(centre_colour, rng, 15))
    elif shape == "spiral":
        for step in range(9, 0, -1):
            r = length * scale * step / 9
            ox, oy = math.cos(turn + step) * r * 0.15, math.sin(turn + step) * r * 0.15
            shade = tuple(int(c * (0.6 + 0.4 * step / 9)) for c in colour)
            draw.ellipse([cx + ox - r, cy + oy - r, cx + ox + r, cy + oy + r], fill=(shade[0], shade[1], shade[2]), outline=_jitter(centre_colour, rng, 10))
    else:  # tulip: a stem and a cup of three upright petals
        draw.line([(cx, cy), (cx + rng.uniform(-4, 4), size)], fill=(40, 130, 40), width=max(size // 30, 2))
        w, h = width * scale, length * scale
        for offset in (-w * 0.7, 0.0, w * 0.7):
            draw.ellipse([cx + offset - w * 0.6, cy - h * 0.6, cx + offset + w * 0.6, cy + h * 0.2], fill=_jitter(colour, rng, 15))
    image = image.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, fillcolor=background)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
    noise = Image.effect_noise((size, size), rng.uniform(8, 20)).convert("RGB")
    return Image.blend(image, noise, 0.08)


def generate(target: Path, classes: Sequence[str] = tuple(FLOWER_STYLES), per_class: int = 60, size: int = 128, seed: int = 0) -> Path:
    """Write a flower-like dataset: `per_class` JPEGs per class, `size`x`size`."""
    if target.exists():
        shutil.rmtree(target)
    rng = random.Random(seed)
    for name in classes:
        style = name if name in FLOWER_STYLES else list(FLOWER_STYLES)[hash(name) % len(FLOWER_STYLES)]
        folder = target / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            draw_flower(style, size, rng).save(folder / f"{name}_{index:04d}.jpg", "JPEG", quality=90)
    (target / "README.txt").write_text(
        "Generated by `ascend-mlops sandbox run`: flower-like drawings, not photos. The public\n"
        "flower-photos dataset could not be downloaded; pass --data DIR to use real photos.\n"
    )
    return target
