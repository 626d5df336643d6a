"""Dynamic loss scaling for float16 training (runtime.precision=mixed_float16), one scale for every group.

float16 gradients of small losses underflow to zero. The loss is multiplied by the scale
before the backward pass and the gradients divided by it after, so they keep their
bits. When a gradient overflows (inf or NaN while the loss is finite) the step is
skipped for every variable and the scale halves, down to 1; after `growth_steps` good
steps in a row it doubles, as Keras' LossScaleOptimizer does. An overflow at a scale of 1
stops the run like a non-finite loss (the Trainer reports it). Keras' wrapper scales one
optimizer, and worklab has one per learning-rate multiplier
(worklab.train.trainer.OptimizerGroups), so the scale lives here, with the Trainer's
single decision for all of them. Its state is in the checkpoint (`loss_scale/...`); a
checkpoint written without it (float32 or bfloat16) starts the scale afresh, since the
weights themselves are float32 in both.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf

INITIAL = 2.0 ** 15  # Keras' LossScaleOptimizer's initial scale
GROWTH_STEPS = 2000  # and its dynamic_growth_steps


class LossScale:
    """The scale and the good steps since it last changed, as variables (created in the strategy's scope)."""

    def __init__(self, initial: float = INITIAL, growth_steps: int = GROWTH_STEPS):
        self.growth_steps = growth_steps
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False, name="loss_scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_scale_good_steps")

    def state(self) -> Dict[str, tf.Variable]:
        """The variables for the checkpoint."""
        return {"scale": self.scale, "good_steps": self.good_steps}

    def update(self, applied: tf.Tensor) -> None:
        """After a step: count an applied one (doubling after growth_steps of them), halve on a skipped one."""
        good = tf.where(applied, self.good_steps + 1, 0)
        grow = good >= self.growth_steps
        self.scale.assign(tf.where(applied, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))
