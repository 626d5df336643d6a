"""The seed's training augmentations as stateless TensorFlow ops.

Each image gets a seed made of the run seed and its position in the training stream,
so the augmentation of every example is a function of (seed, position): a resumed run
draws exactly what an uninterrupted one would have, with no random state to save.
"""
from __future__ import annotations

import tensorflow as tf

from worklab.config import AugmentConfig


def augment(image: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Augment one float image in [0, 255] of shape (size, size, 3); the result has the same shape."""
    size = tf.shape(image)[0]
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    if cfg.zoom > 0:
        scale = tf.random.stateless_uniform([], seeds[0], 1.0, 1.0 + cfg.zoom)
        zoomed = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
        image = tf.image.resize(image, tf.stack([zoomed, zoomed]))
        image = tf.image.stateless_random_crop(image, tf.stack([size, size, 3]), seeds[1])
    if cfg.shift > 0:
        pad = tf.cast(tf.round(tf.cast(size, tf.float32) * cfg.shift), tf.int32)
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(image, tf.stack([size, size, 3]), seeds[2])
    if cfg.brightness > 0:
        image = tf.image.stateless_random_brightness(image, cfg.brightness * 255.0, seeds[3])
    if cfg.contrast > 0:
        image = tf.image.stateless_random_contrast(image, 1 - cfg.contrast, 1 + cfg.contrast, seeds[4])
    if cfg.rotate90:
        turns = tf.random.stateless_uniform([], seeds[5], 0, 4, dtype=tf.int32)
        image = tf.image.rot90(image, turns)
    if cfg.flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[5][::-1])
    return tf.clip_by_value(image, 0.0, 255.0)
