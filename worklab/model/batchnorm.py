"""Batch-norm care, the seed's 'potential problem' and a bug it had itself.

- Frozen batch norm: a layer an lr_mult rule freezes runs in inference mode, using its
  moving statistics and leaving them unchanged (the seed normalised frozen layers with
  batch statistics and kept updating their averages). Keras puts a layer in inference
  mode through `trainable = False`, which would also freeze its gamma and beta; those
  still train at their rule's rate (`training_variables`), so `bn: frozen` with a
  multiplier above 0 freezes the statistics only.
- Momentum warm-up: statistics that were not restored start at 0 and 1 and take long to
  settle at a momentum near 1; a lower momentum for the first steps fixes that.
- Recalibration: re-estimate the moving statistics as the plain average over N training
  batches with the weights fixed, e.g. after restoring or before a final test.

Every batch-norm layer reads its momentum from one shared variable, so warm-up and
recalibration change it without retracing the compiled step.
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import keras
import tensorflow as tf

from worklab.compat import batch_norm_settings, flatten_layers
from worklab.config.network import LrRule, NetworkConfig
from worklab.model.rules import frozen_batch_norm

log = logging.getLogger(__name__)

_FROZEN_STATISTICS = "_worklab_frozen_statistics"  # set by prepare on the layers whose statistics it froze


def batch_norm_layers(model: keras.Model) -> List[keras.layers.BatchNormalization]:
    """Every batch-norm layer of a model, nested ones included (Keras' own walk over its layers)."""
    return [layer for layer in flatten_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def layer_path(layer: keras.layers.BatchNormalization) -> str:
    """A batch-norm layer's place in the variable names, e.g. stage1/block1/bn1."""
    return layer.moving_mean.path.rsplit("/", 1)[0]


class Momentum:
    """The momentum variable every batch-norm layer of a model reads, and its warm-up."""

    def __init__(self, cfg: NetworkConfig):
        self.target = cfg.bn_momentum
        self.warmup_steps = cfg.bn_warmup_steps
        self.warmup = cfg.bn_warmup_momentum
        self.variable = tf.Variable(self.target, trainable=False, name="bn_momentum")

    def follow(self, step: tf.Variable) -> None:
        """Set the momentum for the coming step: the warm-up value before warmup_steps, then the target."""
        self.variable.assign(tf.where(step < self.warmup_steps, self.warmup, self.target))


def prepare(model: keras.Model, rules: Sequence[LrRule], momentum: Momentum, replicas: int = 1) -> List[str]:
    """Point every batch-norm layer at the shared momentum and freeze those the rules freeze; return those.

    With several replicas the layers that train normalise with the statistics of the whole
    global batch (Keras' `synchronized`), so every replica moves the same moving statistics.
    """
    layers = batch_norm_layers(model)
    frozen = set(frozen_batch_norm([layer_path(layer) for layer in layers], rules))
    for layer in layers:
        batch_norm_settings(layer, momentum.variable, synchronized=replicas > 1)
        if layer_path(layer) in frozen:
            layer.trainable = False
            setattr(layer, _FROZEN_STATISTICS, True)
    return sorted(frozen)


def training_variables(model: keras.Model) -> List:
    """The variables training may update: the trainable ones, and gamma and beta of layers `prepare` froze."""
    affine = [v for layer in batch_norm_layers(model) if getattr(layer, _FROZEN_STATISTICS, False)
              for v in (layer.gamma, layer.beta) if v is not None]
    return list(model.trainable_variables) + affine


def recalibrate(model: keras.Model, dataset: tf.data.Dataset, momentum: Momentum, batches: int) -> None:
    """Replace the moving statistics of the training batch-norm layers by their average over `batches` batches."""
    forward = tf.function(lambda images: model(images, training=True))
    iterator = iter(dataset)
    for i in range(batches):
        momentum.variable.assign(i / (i + 1))  # batch i weighs 1 / (i + 1): a running average
        images, _ = next(iterator)
        forward(images)
    momentum.variable.assign(momentum.target)
    log.info("batch-norm statistics re-estimated over %d training batches", batches)
