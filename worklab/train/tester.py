"""The inner test pass: `Tester.evaluate()` predicts every test example once and returns statistics.

A model that blew up (NaN or infinite outputs) is tested like any other: the statistics
describe it (a non-finite loss, its examples counted wrong), so the schedule decides.

Under a strategy of several replicas each batch is split across them (across the
workers of a cluster, each reads the whole batch and keeps its part). A batch that does
not divide (the last one) is padded to a multiple of the replica count with examples
labelled PADDING, which are dropped from the gathered results, so every example is
counted exactly once.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from worklab.train.failures import with_paths
from worklab.train.stats import cross_entropy, evaluation_statistics
from worklab.train.temperature import scaled

PADDING = -1  # the label of the examples that fill a last batch up to a multiple of the replicas


class IncompleteTestPass(RuntimeError):
    """The test pass saw a different number of examples than the test list holds."""


class Tester:
    """Runs the model in inference mode over one pass of the test set."""

    def __init__(self, model: keras.Model, dataset: tf.data.Dataset, count: int, batch_size: int,
                 top_k: int, xla: bool = False, *, strategy: tf.distribute.Strategy, worst: int = 16,
                 paths: Optional[Sequence[str]] = None):
        """Each batch is split across `strategy`'s replicas (the run's, one replica without one); `worst` is how
        many of the highest-loss examples the statistics list, named by their file in `paths` (the dataset's
        files, in its order) when given."""
        self.model = model
        self.strategy = strategy
        replicas = self.strategy.num_replicas_in_sync
        self.dataset = self.strategy.distribute_datasets_from_function(
            lambda context: dataset.map(lambda images, labels: shares(*padded(images, labels, replicas), context,
                                                                       replicas)).unbatch())
        self.count = count
        self.batches = math.ceil(count / batch_size)
        self.top_k = top_k
        self.worst = worst
        self.paths = paths
        self._predict = tf.function(self._predict_fn, jit_compile=xla, reduce_retracing=True)
        self._step = tf.function(self._step_fn, reduce_retracing=True)

    def evaluate(self, on_batch: Optional[Callable[[int], None]] = None, temperature: float = 1.0) -> Dict:
        """Loss, top-1 and top-k accuracy, confusion matrix, recall, macro F1 (and AUC for two classes),
        the worst examples with their files, the confused class pairs, ECE and its reliability bins.

        With `temperature` (schedule=calibrate's), of the probabilities softmax(logits / temperature).
        Raises IncompleteTestPass when the pass yields another number of examples than `count`.
        """
        labels, probs, log_probs = self.outputs(on_batch)
        if temperature != 1.0:
            log_probs = scaled(log_probs, temperature)
            probs = np.exp(log_probs)
        stats = evaluation_statistics(labels, probs, cross_entropy(labels, log_probs), top_k=self.top_k,
                                      worst=self.worst)
        if self.paths is not None:
            stats["worst"] = with_paths(stats["worst"], self.paths)
        return stats

    def outputs(self, on_batch: Optional[Callable[[int], None]] = None) -> Tuple[np.ndarray, ...]:
        """(labels, probabilities, log-probabilities) of every example, in the dataset's order.

        Raises IncompleteTestPass when the pass yields another number of examples than `count`.
        """
        labels, probs, log_probs = [], [], []
        for i, batch in enumerate(self.dataset):
            batch_labels, batch_probs, batch_log_probs = (t.numpy() for t in self._step(*batch))
            kept = batch_labels != PADDING
            labels.append(batch_labels[kept])
            probs.append(batch_probs[kept])
            log_probs.append(batch_log_probs[kept])
            if on_batch:
                on_batch(i + 1)
        tested = sum(len(batch) for batch in labels)
        if tested != self.count:
            raise IncompleteTestPass(f"tested {tested} of {self.count} test examples: the test set yielded "
                                     "another number than its list holds (was the list or its folder changed "
                                     "while the run was going?)")
        return tuple(np.concatenate(x) for x in (labels, probs, log_probs))

    def _step_fn(self, images, labels):
        """(labels, probabilities, log-probabilities) of one batch, every replica's slice gathered in batch order."""
        probs, log_probs = self.strategy.run(self._predict, args=(images,))
        return tuple(self.strategy.gather(x, axis=0) for x in (labels, probs, log_probs))

    def _predict_fn(self, images: tf.Tensor):
        """The probabilities and log-probabilities of a batch; the losses are taken from the latter."""
        logits = tf.cast(self.model(images, training=False), tf.float32)
        return tf.nn.softmax(logits), tf.nn.log_softmax(logits)


def shares(images: tf.Tensor, labels: tf.Tensor, context: tf.distribute.InputContext, replicas: int):
    """This input pipeline's part of a padded batch, as one share per replica it feeds: [local, n, ...].

    The pipelines (one per worker) take consecutive parts, and their replicas consecutive
    shares, so gathering the replicas' results in replica order gives the batch's order.
    """
    local = replicas // context.num_input_pipelines
    share = tf.shape(labels)[0] // replicas
    first = context.input_pipeline_id * local * share
    return tuple(tf.reshape(x[first:first + local * share], tf.concat([[local, share], tf.shape(x)[1:]], 0))
                 for x in (images, labels))


def padded(images: tf.Tensor, labels: tf.Tensor, multiple: int):
    """A batch filled up to a multiple of `multiple` examples with zero images labelled PADDING."""
    missing = -tf.shape(labels)[0] % multiple
    images = tf.concat([images, tf.zeros(tf.concat([[missing], tf.shape(images)[1:]], 0), images.dtype)], 0)
    return images, tf.concat([labels, tf.fill([missing], tf.constant(PADDING, labels.dtype))], 0)
