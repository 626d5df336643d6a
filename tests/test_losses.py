"""loss.label_smoothing, loss.class_weight, optimizer.clip_norm: what the gradient comes from, what is reported."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import compose
from worklab.config.network import LrRule
from worklab.config.training import OptimizerConfig
from worklab.errors import UserError
from worklab.model.rules import lr_multipliers
from worklab.train.losses import Objective, class_weights
from worklab.train.trainer import OptimizerGroups, Trainer

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 4)).astype("float32") * 3
LABELS = np.array([0, 1, 2, 3, 1, 0], dtype="int32")


def cross_entropy(labels=LABELS, logits=LOGITS):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def test_no_smoothing_and_no_weights_is_the_plain_cross_entropy():
    np.testing.assert_array_equal(Objective()(LABELS, LOGITS, cross_entropy()), cross_entropy())


def test_label_smoothing_is_keras_categorical_crossentropy_with_it():
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
    expected = keras_loss(tf.one_hot(LABELS, 4), LOGITS)
    np.testing.assert_allclose(Objective(0.1)(LABELS, LOGITS, cross_entropy()), expected, rtol=1e-5)


def test_balanced_weights_are_inverse_class_frequency_and_a_list_must_fit_the_classes():
    assert class_weights("balanced", [0, 0, 0, 1], 3) == pytest.approx([4 / 9, 4 / 3, 0.0])
    assert class_weights([1, 2.5], [0, 1], 2) == [1.0, 2.5]
    assert class_weights(None, [0, 1], 2) is None
    with pytest.raises(UserError, match="loss.class_weight has 2 values, but the run has 3 classes"):
        class_weights([1, 2], [0, 1, 2], 3)


def dense_model(labels=LABELS, scale=1.0):
    """A dense head, the same for every call, and its fixed inputs."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(hidden))
    return model, np.random.default_rng(1).normal(size=(len(labels), 5)).astype("float32") * scale


def step_change(class_weight=None, clip_norm=None, rules=(), labels=LABELS, scale=1.0):
    """One plain-SGD step (lr 1) of a dense head on fixed data: (the change of each variable, reported scalars)."""
    model, images = dense_model(labels, scale)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    plan = lr_multipliers(list(rules), [v.path for v in model.variables])
    lr = tf.Variable(1.0)
    groups = OptimizerGroups(OptimizerConfig(name="sgd", lr=1.0), model, plan, lr)
    before = {v.path: v.numpy().copy() for v in model.variables}
    expected_loss = float(tf.reduce_mean(cross_entropy(labels, model(images))))
    trainer = Trainer(model, groups, data, tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64), lr,
                      0.0, tf.distribute.get_strategy(), objective=Objective(0.1, class_weight), clip_norm=clip_norm)
    scalars = trainer.train(1)
    assert scalars["loss"] == pytest.approx(expected_loss, rel=1e-5)  # the plain cross-entropy, not the objective
    return {v.path: v.numpy() - before[v.path] for v in model.variables}, plan


def test_class_weights_scale_the_gradient_of_each_example_by_its_class():
    """Weights that differ by class on a batch of every class: the step is -gradient of the batch mean of each
    example's smoothed loss times its class's weight, computed here by hand; no factor over the whole batch
    (a weight of the batch's mean, or of its first label, say) gives it."""
    weights = [1.0, 3.0, 0.0, 0.5]  # LABELS hold every class, two of them twice
    change, _ = step_change(weights)
    model, images = dense_model()
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
    with tf.GradientTape() as tape:
        per_example = smoothed(tf.one_hot(LABELS, 4), model(images)) * tf.gather(weights, LABELS)
        loss = tf.reduce_mean(per_example)
    expected = dict(zip([v.path for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))
    for path in change:
        np.testing.assert_allclose(change[path], -expected[path].numpy(), rtol=1e-4, atol=1e-6, err_msg=path)
    plain, _ = step_change()
    ratio = change["head/kernel"] / plain["head/kernel"]
    assert np.ptp(ratio) > 0.1  # not the unweighted step times one factor
    ignored, _ = step_change([0.0, 1.0, 1.0, 1.0], labels=np.zeros(6, dtype="int32"))
    assert all(not change.any() for change in ignored.values())  # every example has weight 0: no update


def test_clipping_bounds_the_global_norm_over_every_multiplier_group():
    rules = [LrRule(pattern="^a/", mult=0.5)]
    free, plan = step_change(rules=rules, scale=50.0)
    clipped, _ = step_change(rules=rules, scale=50.0, clip_norm=0.01)

    def norm(changes):  # the gradient is -change / (lr * mult) under plain SGD at lr 1
        return np.sqrt(sum(np.sum((c / plan[p].lr) ** 2) for p, c in changes.items()))

    assert norm(free) > 1.0
    assert norm(clipped) == pytest.approx(0.01, rel=1e-4)
    for path in free:  # the same direction, one factor for both groups (atol: a change read as w_new - w in float32)
        np.testing.assert_allclose(clipped[path], free[path] * 0.01 / norm(free), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("override, message", [
    ("loss.label_smoothing=1", r"loss.label_smoothing=1.0 must be in \[0, 1\)"),
    ("loss.class_weight=[1,-1]", "the weights must be finite, >= 0, and not all 0"),
    ("loss.class_weight=inverse", "must be null, balanced, or a list of numbers"),
    ("optimizer.clip_norm=0", "optimizer.clip_norm=0.0 must be a finite number greater than 0"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, data_dir, override, message):
    with pytest.raises(UserError, match=message):
        compose([override], tmp_path / "run", data_dir)
