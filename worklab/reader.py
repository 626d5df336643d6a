"""tf.data pipelines from checked image lists: an endless, resumable training stream and one test pass.

Training draws a fresh permutation of the list every epoch from (seed, epoch), so the
example at any position of the stream is known without replaying it: `train(start)`
begins at example `start`, which is how a resumed run sees exactly the examples an
uninterrupted run would have seen. Reading and decoding run in parallel; batches are
prefetched.
"""
from __future__ import annotations

import logging
from typing import List

import numpy as np
import tensorflow as tf

from worklab.augment import augment
from worklab.config import ReaderConfig
from worklab.imagelist import ImageList

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
ENDLESS = np.iinfo(np.int64).max


def decode(contents: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG, BMP or GIF (first frame) bytes -> uint8 (h, w, 3); grey and RGBA become RGB."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


class Reader:
    """Turns an ImageList into batches of normalised float images and int labels."""

    def __init__(self, cfg: ReaderConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.size = cfg.image_size
        self._mean = tf.constant(cfg.mean, tf.float32)
        self._std = tf.constant(cfg.std, tf.float32)

    def train(self, images: ImageList, start: int = 0) -> tf.data.Dataset:
        """Endless augmented batches (drop_remainder, so every step has the same shape) from example `start`."""
        n = len(images)
        load = self._loader(images)
        labels = tf.constant(images.labels, tf.int32)
        first_epoch, offset = divmod(start, n)
        seed = tf.constant(self.seed, tf.int64)
        order = tf.data.Dataset.range(first_epoch, ENDLESS).flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))))
        stream = tf.data.Dataset.zip(tf.data.Dataset.range(start, ENDLESS), order.skip(offset))

        def example(position, index):
            image = augment(load(index), tf.stack([tf.cast(self.seed, tf.int64), position]), self.cfg.augment)
            return self.normalise(image), labels[index]

        return (stream.map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(self.cfg.batch_size, drop_remainder=True).prefetch(AUTOTUNE))

    def test(self, images: ImageList) -> tf.data.Dataset:
        """Every example exactly once, in list order, the last partial batch included."""
        load = self._loader(images)
        labels = tf.constant(images.labels, tf.int32)
        batch = self.cfg.test_batch_size or self.cfg.batch_size
        return (tf.data.Dataset.range(len(images))
                .map(lambda i: (self.normalise(load(i)), labels[i]), num_parallel_calls=AUTOTUNE)
                .batch(batch).prefetch(AUTOTUNE))

    def normalise(self, image: tf.Tensor) -> tf.Tensor:
        return (image - self._mean) / self._std

    def _loader(self, images: ImageList):
        """index -> float image in [0, 1] at image_size: read from disk, or gathered from memory with cache."""
        paths = tf.constant(images.paths)
        if not self.cfg.cache:
            return lambda i: self._read(paths[i])
        cached = tf.Variable(self._read_all(images.paths), trainable=False, name="image_cache")
        return lambda i: tf.cast(cached[i], tf.float32) / 255.0

    def _read(self, path: tf.Tensor) -> tf.Tensor:
        image = tf.image.resize(decode(tf.io.read_file(path)), [self.size, self.size], antialias=True)
        return tf.clip_by_value(image / 255.0, 0.0, 1.0)

    def _read_all(self, paths: List[str]) -> np.ndarray:
        log.info("caching %d images of %d px in memory", len(paths), self.size)
        images = (tf.data.Dataset.from_tensor_slices(paths)
                  .map(lambda p: tf.cast(tf.round(self._read(p) * 255.0), tf.uint8), num_parallel_calls=AUTOTUNE)
                  .batch(256))
        return np.concatenate(list(images.as_numpy_iterator()))


def find_undecodable(paths: List[str]) -> List[str]:
    """The paths TensorFlow cannot decode, found by decoding every one (used to name the file after a failure)."""
    files = tf.constant(paths)
    decoded = (tf.data.Dataset.range(len(paths))
               .map(lambda i: (i, tf.shape(decode(tf.io.read_file(files[i])))[0]), num_parallel_calls=AUTOTUNE)
               .ignore_errors().batch(1024))
    good = {int(i) for batch, _ in decoded.as_numpy_iterator() for i in batch}
    return [p for i, p in enumerate(paths) if i not in good]
