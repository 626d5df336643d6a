"""An exponential moving average of the weights (network.ema), the weights tests and exports use.

After every applied training step each averaged variable moves towards the trained one:
`average = d * average + (1 - d) * weight`, with `d = min(decay, (1 + t) / (10 + t))` at
step t (TensorFlow Model Garden's dynamic decay), so early averages are not dominated by
the starting weights and a short fine-tune still averages over its own steps. The
average covers every variable that training changes: the trained weights and the moving
statistics of batch norms that train, which are averaged like the weights (as timm's
ModelEmaV2 does), so the statistics belong to averaged weights rather than to the last
step's. Frozen variables never change and are not copied.

The averages live in tf.Variables that the checkpoint holds beside the model, so a resumed
run continues the same average. `swapped()` puts them into the model for an evaluation
and the trained weights back after; `apply()` puts them in for good (export, predict).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List

import keras
import tensorflow as tf

from worklab.model.batchnorm import batch_norm_layers, training_variables

WARMUP = 10.0  # d = (1 + t) / (WARMUP + t) until that is above the decay


def changing_variables(model: keras.Model, trained: Callable[[str], bool]) -> List[tf.Variable]:
    """The variables training changes: those `trained` (by path), and the statistics of batch norms that train."""
    statistics = [v for layer in batch_norm_layers(model) if layer.trainable
                  for v in (layer.moving_mean, layer.moving_variance)]
    return [*(v for v in training_variables(model) if trained(v.path)), *statistics]


class WeightAverage:
    """The averaged copies of `variables` (see changing_variables), keyed by variable path."""

    def __init__(self, variables: List[tf.Variable], decay: float):
        self.decay = decay
        self.variables = variables
        self.averages: Dict[str, tf.Variable] = {
            v.path: tf.Variable(v.value, trainable=False, name=f"average/{v.path.replace('/', '_')}")
            for v in self.variables}

    def reset(self) -> None:
        """Start the average at the current weights (a run that did not restore averages of its own)."""
        for variable in self.variables:
            self.averages[variable.path].assign(variable)

    def update(self, step: tf.Tensor) -> None:
        """Move every average towards its variable after the update of global step `step` (0-based)."""
        t = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (WARMUP + t))
        for variable in self.variables:
            average = self.averages[variable.path]
            average.assign(decay * average + (1.0 - decay) * tf.cast(variable, average.dtype))

    def apply(self) -> None:
        """Put the averages into the model (for inference from here on)."""
        for variable in self.variables:
            variable.assign(self.averages[variable.path])

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The averages in the model inside the block, the trained weights back after it."""
        trained = [tf.identity(v) for v in self.variables]
        self.apply()
        try:
            yield
        finally:
            for variable, value in zip(self.variables, trained):
                variable.assign(value)
