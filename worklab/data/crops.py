"""Crop windows: where in an image the training crop and the test-time centre crop lie.

A window is an int32 tensor [y, x, height, width] in the upright image of `shape`
(height, width). Only the window is computed here, not the pixels, so the reader can
decode just that part of a JPEG (worklab.data.reader.scaled_window). The training windows
are drawn from the crop seeds of worklab.data.augment.draws, stateless functions of
(run seed, stream position), so a resumed run cuts the same windows.
"""
from __future__ import annotations

import math
from typing import List

import tensorflow as tf

ATTEMPTS = 10  # random_resized: draws tried before the centre-crop fallback


def whole(shape: tf.Tensor) -> tf.Tensor:
    """The window covering the whole image."""
    return tf.concat([[0, 0], tf.cast(shape, tf.int32)], 0)


def centre_square(shape: tf.Tensor, fraction: float) -> tf.Tensor:
    """The centred square whose side is `fraction` of the shorter side (at least 1 pixel).

    Cutting it and resizing it to S equals resizing the shorter side to S / fraction and
    taking the centred S x S, up to rounding the square to whole pixels.
    """
    shape = tf.cast(shape, tf.int32)
    side = tf.maximum(tf.cast(tf.round(tf.cast(tf.reduce_min(shape), tf.float32) * fraction), tf.int32), 1)
    return tf.concat([(shape - side) // 2, [side, side]], 0)


def zoom(base: tf.Tensor, zoom_range: float, seeds: tf.Tensor) -> tf.Tensor:
    """A window of 1/scale of `base`'s height and width, scale ~ U[1, 1 + zoom_range), at a uniform place in it.

    `base` is the window reader.resize would show (the whole image, or its centre square),
    so the result, resized to image_size, is that image zoomed in by `scale` and cropped.
    """
    if zoom_range == 0:
        return base
    scale = tf.random.stateless_uniform([], seeds[0], 1.0, 1.0 + zoom_range)
    size = tf.maximum(tf.cast(tf.round(tf.cast(base[2:], tf.float32) / scale), tf.int32), 1)
    return tf.concat([base[:2] + _place(base[2:] - size, seeds[1]), size], 0)


def random_resized(shape: tf.Tensor, scale: List[float], ratio: List[float], seeds: tf.Tensor) -> tf.Tensor:
    """Inception's crop: area fraction ~ U(scale), aspect ratio (width/height) log-uniform in `ratio`.

    ATTEMPTS windows are drawn at once; the first that fits in the image is taken. When
    none fits (a long, thin image with a large scale), the fallback is the largest
    centred window whose aspect ratio is within `ratio` (the whole image when its own is).
    """
    shape = tf.cast(shape, tf.float32)
    u = tf.random.stateless_uniform([2, ATTEMPTS], seeds[0])
    area = (scale[0] + u[0] * (scale[1] - scale[0])) * shape[0] * shape[1]
    aspect = tf.exp(math.log(ratio[0]) + u[1] * (math.log(ratio[1]) - math.log(ratio[0])))
    sizes = tf.stack([tf.round(tf.sqrt(area / aspect)), tf.round(tf.sqrt(area * aspect))], 1)  # height, width
    fits = tf.reduce_all((sizes >= 1) & (sizes <= shape), axis=1)
    own = shape[1] / shape[0]
    fallback = tf.where(own < ratio[0], tf.stack([tf.round(shape[1] / ratio[0]), shape[1]]),
                        tf.where(own > ratio[1], tf.stack([shape[0], tf.round(shape[0] * ratio[1])]), shape))
    chosen = tf.concat([tf.boolean_mask(sizes, fits), [tf.maximum(fallback, 1.0)]], 0)[0]
    size, room = tf.cast(chosen, tf.int32), tf.cast(shape - chosen, tf.int32)
    offset = tf.where(tf.reduce_any(fits), _place(room, seeds[1]), room // 2)
    return tf.concat([offset, size], 0)


def _place(room: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uniform integer offset in [0, room] per axis."""
    return tf.random.stateless_uniform([2], seed, 0, 2 ** 31 - 1, dtype=tf.int32) % (room + 1)
