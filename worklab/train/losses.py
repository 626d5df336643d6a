"""What training minimises: cross-entropy with label smoothing and class weights (loss.*).

The train and test lines report the plain cross-entropy whatever the objective, so the
two stay comparable; the gradient comes from `Objective`. Under mixup or cutmix the
trainer takes both against the mixed target (worklab.train.mixing): the train loss is
then that of mixed images and labels. Class weights follow Keras' `class_weight`: each
example's loss is multiplied by its class's weight and the batch mean is taken over all
examples. `balanced` gives class c the weight N / (K * n_c) (N training images, K
classes, n_c images of class c), so the weights average to 1 over the training list.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from worklab.errors import UserError


def class_weights(setting: Any, labels: Sequence[int], num_classes: int) -> Optional[List[float]]:
    """loss.class_weight as one weight per class: None, balanced from the training labels, or the list given."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
        return [len(labels) / (num_classes * n) if n else 0.0 for n in counts]
    if len(setting) != num_classes:
        raise UserError(f"loss.class_weight has {len(setting)} values, but the run has {num_classes} classes "
                        "(classes.json): give one weight per class, in class-index order.")
    return [float(w) for w in setting]


class Objective:
    """The per-example loss training minimises: cross-entropy with label smoothing and class weights.

    With smoothing e over K classes the target is (1 - e) on the label and e / K on every
    class, so the loss is (1 - e) * cross_entropy + e * mean_k(-log p_k).
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[List[float]] = None):
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self._weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor, cross_entropy: tf.Tensor) -> tf.Tensor:
        """The loss of each example; `cross_entropy` is the plain one for these labels and logits."""
        loss = cross_entropy
        if self.label_smoothing:
            uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
            loss = (1.0 - self.label_smoothing) * cross_entropy + self.label_smoothing * uniform
        if self._weights is not None:
            loss = loss * tf.gather(self._weights, labels)
        return loss

    def describe(self) -> List[str]:
        """How it differs from the plain cross-entropy, for the log; empty when it does not."""
        return ([f"label smoothing {self.label_smoothing:g}"] if self.label_smoothing else []) + \
            ([f"class weights {', '.join(f'{w:.3g}' for w in self.class_weights)}"] if self.class_weights else [])
