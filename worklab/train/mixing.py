"""Mixup and CutMix (reader.augment.mixup, cutmix, mix_prob): a training batch mixed in pairs of neighbours.

Each example is mixed with its partner, its neighbour in the training stream (examples
0 and 1 of a batch are partners, 2 and 3, and so on; the stream is shuffled, so these
are random pairs), and trained towards `weights` of its label and the rest of its
partner's. Mixup blends the two images with a weight drawn from Beta(alpha, alpha);
CutMix pastes a box of the partner whose area is drawn the same way, clipped to the
image, and the weight is the exact fraction of the image left. With both on, each batch
uses one of the two, with even odds. Every draw is a stateless function of the run seed
and the stream position of the global batch's first example, so a resumed run mixes
exactly as an uninterrupted one, and replicas that each hold an even share of the
global batch mix it exactly as one device does. Mixing acts on whole batches, so it
runs in the training step, not in the reader.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import tensorflow as tf

from worklab.config.reader import AugmentConfig

MIX_STREAM = 1  # folded into (seed, position), which also seeds the augmentation of the example at position

Mixed = Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]


def mix(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> Mixed:
    """(images, labels, partners, weights) for a batch of float images (batch, height, width, channels).

    `partners` are the labels of each example's neighbour (see `neighbours`); `weights`
    (float32, one per example, in [0, 1]) is the share of `labels` in each example's
    target. With mixup and cutmix both 0 the images come back unchanged with weights 1.
    """
    order = neighbours(tf.size(labels))
    partners = tf.gather(labels, order)
    ones = tf.ones(tf.shape(labels), tf.float32)
    if not (cfg.mixup or cfg.cutmix):
        return images, labels, partners, ones
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    others = tf.gather(images, order)
    kinds = [_mixup(images, others, _beta(cfg.mixup, seeds[1]))] if cfg.mixup else []
    kinds += [_cutmix(images, others, _beta(cfg.cutmix, seeds[1]), seeds[2:4])] if cfg.cutmix else []
    mixed, weight = kinds[0]
    if len(kinds) == 2:  # one of the two, with even odds
        cut = tf.random.stateless_uniform([], seeds[0]) < 0.5
        mixed, weight = (tf.where(cut, c, m) for m, c in zip(*kinds))
    if cfg.mix_prob < 1:
        chosen = tf.random.stateless_uniform([], seeds[4]) < cfg.mix_prob
        mixed, weight = tf.where(chosen, mixed, images), tf.where(chosen, weight, 1.0)
    return mixed, labels, partners, weight * ones


def neighbours(size: tf.Tensor) -> tf.Tensor:
    """Each example's partner in a batch of `size`: [1, 0, 3, 2, ...]; the last of an odd batch is its own."""
    return tf.minimum(tf.bitwise.bitwise_xor(tf.range(size), 1), size - 1)


def _beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One draw of Beta(alpha, alpha), as X / (X + Y) of two Gamma(alpha) draws (0 if both underflow to 0)."""
    x = tf.random.stateless_gamma([2], seed, alpha)
    return tf.math.divide_no_nan(x[0], x[0] + x[1])


def _mixup(images: tf.Tensor, others: tf.Tensor, weight: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    return weight * images + (1.0 - weight) * others, weight


def _cutmix(images: tf.Tensor, others: tf.Tensor, weight: tf.Tensor, seeds: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Paste a box of `others` covering about 1 - weight of the image; return the fraction really left."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    side = tf.sqrt(1.0 - weight)
    rows = _span(height, side, seeds[0])
    cols = _span(width, side, seeds[1])
    box = rows[:, None] & cols[None, :]
    area = tf.reduce_sum(tf.cast(box, tf.float32))
    left = 1.0 - area / tf.cast(height * width, tf.float32)
    return tf.where(box[None, :, :, None], others, images), left


def _span(size: tf.Tensor, fraction: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A mask over range(size): a run of round(size * fraction) around a uniform centre, clipped to the edges."""
    length = tf.cast(tf.round(tf.cast(size, tf.float32) * fraction), tf.int32)
    centre = tf.random.stateless_uniform([], seed, 0, size, dtype=tf.int32)
    start = centre - length // 2
    at = tf.range(size)
    return (at >= start) & (at < start + length)


class Mixing:
    """The mixing of one run: reader.augment's settings and the run seed."""

    def __init__(self, cfg: AugmentConfig, seed: int):
        self.cfg = cfg
        self.seed = seed

    def __call__(self, images: tf.Tensor, labels: tf.Tensor, position: tf.Tensor) -> Mixed:
        """Mix a batch, or a replica's share of it, whose global batch starts at `position` of the training
        stream (see `mix`)."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(position, tf.int64)])
        return mix(images, labels, tf.random.experimental.stateless_fold_in(seed, MIX_STREAM), self.cfg)

    def describe(self) -> str:
        """What the log says, e.g. `mixup (alpha 0.2) or cutmix (alpha 1), one per batch, on 50% of the batches`."""
        parts = [f"{name} (alpha {alpha:g})" for name, alpha in (("mixup", self.cfg.mixup), ("cutmix", self.cfg.cutmix))
                 if alpha]
        text = " or ".join(parts) + (", one per batch" if len(parts) == 2 else "")
        return text + (f", on {self.cfg.mix_prob:.0%} of the batches" if self.cfg.mix_prob < 1 else "")


def batch_mixing(cfg: AugmentConfig, seed: int) -> Optional[Mixing]:
    """The run's Mixing, or None when reader.augment mixes nothing (the training step then has no mixing ops)."""
    return Mixing(cfg, seed) if cfg.mixup or cfg.cutmix else None


def against_target(per_label: Callable[[tf.Tensor], tf.Tensor], labels: tf.Tensor,
                   partners: Optional[tf.Tensor] = None, weights: Optional[tf.Tensor] = None):
    """A per-example value against the (mixed) target: per_label(labels), or with partners
    weights * per_label(labels) + (1 - weights) * per_label(partners).

    per_label may return a tuple of per-example tensors (e.g. a loss and a hit); each is mixed.
    """
    if partners is None:
        return per_label(labels)
    return tf.nest.map_structure(lambda own, other: weights * own + (1.0 - weights) * other,
                                 per_label(labels), per_label(partners))
