"""The inner test pass: `Tester.evaluate()` predicts every test example once and returns statistics.

A model that blew up (NaN or infinite outputs) is tested like any other: the statistics
describe it (a non-finite loss, its examples counted wrong), so the schedule decides.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from worklab.train.stats import evaluation_statistics


class IncompleteTestPass(RuntimeError):
    """The test pass saw a different number of examples than the test list holds."""


class Tester:
    """Runs the model in inference mode over one pass of the test set."""

    def __init__(self, model: keras.Model, dataset: tf.data.Dataset, count: int, batch_size: int,
                 top_k: int, xla: bool = False):
        self.model = model
        self.dataset = dataset
        self.count = count
        self.batches = math.ceil(count / batch_size)
        self.top_k = top_k
        self._predict = tf.function(self._predict_fn, jit_compile=xla, reduce_retracing=True)

    def evaluate(self, on_batch: Optional[Callable[[int], None]] = None) -> Dict:
        """Loss, top-1 and top-k accuracy, confusion matrix, recall, macro F1 (and AUC for two classes).

        Raises IncompleteTestPass when the pass yields another number of examples than `count`.
        """
        labels, probs, losses = [], [], []
        for i, (images, batch_labels) in enumerate(self.dataset):
            batch_probs, batch_losses = self._predict(images, batch_labels)
            labels.append(batch_labels.numpy())
            probs.append(batch_probs.numpy())
            losses.append(batch_losses.numpy())
            if on_batch:
                on_batch(i + 1)
        tested = sum(len(batch) for batch in labels)
        if tested != self.count:
            raise IncompleteTestPass(f"tested {tested} of {self.count} test examples: the test set yielded "
                                     "another number than its list holds (was the list or its folder changed "
                                     "while the run was going?)")
        labels, probs, losses = (np.concatenate(x) for x in (labels, probs, losses))
        return evaluation_statistics(labels, probs, losses, top_k=self.top_k)

    def _predict_fn(self, images: tf.Tensor, labels: tf.Tensor):
        logits = tf.cast(self.model(images, training=False), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return tf.nn.softmax(logits), losses
