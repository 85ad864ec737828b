"""tf.data input: parallel decode and resize, cache, shuffle, batch, augment, prefetch.

Images are resized exactly as the server does before inference: bilinear
filtering to S x S (with antialiasing, which is what PIL's `Image.resize(...,
BILINEAR)` does when it shrinks), then rounded to 8-bit pixels, so the model
trains on the same pixels it will later be served.
"""

from __future__ import annotations

import logging
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
) -> tf.data.Dataset:
    """Endless, shuffled batches of (float32 [B, S, S, 3] in 0..255, int32 [B]); B = batch_size."""
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
    ds = ds.map(_augment, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    # Each worker reads the whole file list and keeps its share of the batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = False
    return ds.with_options(options).prefetch(AUTOTUNE)


def _augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    # Left-right flips only: a flower (or most photographed objects) stays what it is.
    images = tf.image.random_flip_left_right(tf.cast(images, tf.float32))
    return images, labels


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
