"""tf.data input: parallel decode and resize, cache, shuffle, batch, augment, prefetch.

Images are resized exactly as the server does before inference: bilinear
filtering to S x S (with antialiasing, which is what PIL's `Image.resize(...,
BILINEAR)` does when it shrinks), then rounded to 8-bit pixels, so the model
trains on the same pixels it will later be served.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
# Share of the container's memory the decoded-image cache may use.
CACHE_MEMORY_FRACTION = 0.25


def available_memory_bytes() -> int:
    """The cgroup limit if there is one (a pod's), else the machine's available memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def fits_in_memory(num_images: int, image_size: int, budget: int | None = None) -> bool:
    if budget is None:
        budget = int(available_memory_bytes() * CACHE_MEMORY_FRACTION)
    return num_images * image_size * image_size * 3 <= budget


def load_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """File -> uint8 [S, S, 3] RGB."""
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def training_dataset(
    items: Sequence[tuple[str, int]],
    image_size: int,
    batch_size: int,
    seed: int,
    cache: bool,
    crop_scale: float = 1.0,
    color_jitter: float = 0.0,
) -> tf.data.Dataset:
    """Endless, shuffled, augmented batches of (float32 [B, S, S, 3] in 0..255, int32 [B]); B = batch_size.

    Augmentation (see `augment`): random resized crops of at least `crop_scale`
    of the area (1: none), left-right flips, colour jitter of strength `color_jitter` (0: none).
    """
    paths = [p for p, _ in items]
    labels = np.array([label for _, label in items], dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    decode = lambda p, y: (load_image(p, image_size), y)  # noqa: E731
    if cache:
        # Decode once; afterwards an epoch is a shuffle of uint8 tensors in memory.
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=False).cache()
        ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    else:
        # Shuffle the (cheap) file names, not the decoded images.
        ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
    # Repeat before batching: every step gets a full batch, so the workers of
    # a multi-worker run always take the same number of steps.
    ds = ds.repeat().batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda x, y: (augment(x, crop_scale, color_jitter), y), num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    # Each worker reads the whole file list and keeps its share of the batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = False
    return ds.with_options(options).prefetch(AUTOTUNE)


# Aspect ratios of the random crops (as in Inception/ResNet training): 3:4 .. 4:3.
CROP_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


def augment(images: tf.Tensor, crop_scale: float = 1.0, color_jitter: float = 0.0) -> tf.Tensor:
    """A batch of uint8 [B, S, S, 3] -> float32 0..255, each image independently:

    - random resized crop: a box of area U(crop_scale, 1) of the image and aspect
      ratio 3:4..4:3, resized back to S x S (bilinear), when crop_scale < 1;
    - left-right flip with probability 1/2 (a flower stays what it is; upside
      down it does not, so no vertical flips);
    - colour jitter, when color_jitter > 0: brightness, contrast and saturation
      each scaled by U(1 - j, 1 + j) (no hue shift: colour is what tells a
      dandelion from a daisy).
    """
    x = tf.cast(images, tf.float32)
    size = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    n = tf.shape(x)[0]
    if crop_scale < 1.0:
        area = tf.random.uniform([n], crop_scale, 1.0)
        ratio = tf.exp(tf.random.uniform([n], *CROP_LOG_RATIO))
        width = tf.minimum(tf.sqrt(area * ratio), 1.0)
        height = tf.minimum(tf.sqrt(area / ratio), 1.0)
        top = tf.random.uniform([n]) * (1.0 - height)
        left = tf.random.uniform([n]) * (1.0 - width)
        boxes = tf.stack([top, left, top + height, left + width], axis=1)
        # Box corners are pixel centres: (0, 0)-(1, 1) is the whole image.
        x = tf.image.crop_and_resize(x, boxes, tf.range(n), [size, size], method="bilinear")
    x = tf.image.random_flip_left_right(x)
    if color_jitter > 0.0:

        def factor() -> tf.Tensor:
            return tf.random.uniform([n, 1, 1, 1], 1.0 - color_jitter, 1.0 + color_jitter)

        x = x * factor()
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * factor() + mean
        grey = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        x = (x - grey) * factor() + grey
        x = tf.clip_by_value(x, 0.0, 255.0)
    return x


def evaluation_dataset(items: Sequence[tuple[str, int]], image_size: int, batch_size: int, cache: bool) -> tf.data.Dataset:
    """The validation split in a fixed order, float32 0..255, not augmented."""
    paths = [p for p, _ in items]
    labels = np.array([label for _, label in items], dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: (load_image(p, image_size), y), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(AUTOTUNE)



def calibration_batches(items: Sequence[tuple[str, int]], image_size: int, batch_size: int, max_images: int) -> tf.data.Dataset:
    """Images only, float32 0..255, from the first `max_images` of a fixed shuffle of `items`."""
    order = np.random.default_rng(0).permutation(len(items))[:max_images]
    paths = [items[i][0] for i in order]
    ds = tf.data.Dataset.from_tensor_slices(paths)
    ds = ds.map(lambda p: load_image(p, image_size), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).map(lambda x: tf.cast(x, tf.float32)).prefetch(AUTOTUNE)
