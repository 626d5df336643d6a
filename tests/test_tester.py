"""The test pass: every example once, statistics equal to numpy on known predictions, blow-ups described."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from conftest import one_device
import tensorflow as tf

from worklab.train import tester

N, C, BATCH = 37, 4, 8  # 37 is not a multiple of 8: the last batch holds 5


def identity_model() -> keras.Model:
    """A model whose logits are its inputs, so the predictions are known in advance."""
    inputs = keras.Input((C,))
    dense = keras.layers.Dense(C, use_bias=False, kernel_initializer="identity")
    return keras.Model(inputs, dense(inputs))


def test_statistics_match_numpy_on_known_predictions():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(N, C)).astype("float32")
    labels = rng.integers(0, C, size=N).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((logits, labels)).batch(BATCH)
    seen = []
    stats = tester.Tester(identity_model(), dataset, N, BATCH, top_k=2,
                          strategy=one_device()).evaluate(on_batch=seen.append)

    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    losses = -np.log(probs[np.arange(N), labels])
    predicted = logits.argmax(1)
    confusion = np.zeros((C, C), int)
    np.add.at(confusion, (labels, predicted), 1)
    top2 = np.argsort(-logits, axis=1)[:, :2]

    assert seen == [1, 2, 3, 4, 5]  # ceil(37 / 8) batches, each reported
    assert stats["count"] == N
    np.testing.assert_allclose(stats["loss"], losses.mean(), rtol=1e-5)
    assert stats["accuracy"] == np.mean(predicted == labels)
    assert stats["top_k"] == 2
    assert stats["top_k_accuracy"] == np.mean([labels[i] in top2[i] for i in range(N)])
    assert stats["confusion"] == confusion.tolist()
    recall = [confusion[c, c] / confusion[c].sum() for c in range(C)]
    np.testing.assert_allclose(stats["recall"], recall)
    assert "auc" not in stats


def test_a_model_that_outputs_nan_gives_a_non_finite_loss_instead_of_raising():
    logits = np.tile(np.eye(C, dtype="float32") * 5, (2, 1))  # 8 rows, each predicting its label
    labels = np.tile(np.arange(C, dtype="int32"), 2)
    logits[[1, 6]] = np.nan  # two examples blew up
    dataset = tf.data.Dataset.from_tensor_slices((logits, labels)).batch(BATCH)
    stats = tester.Tester(identity_model(), dataset, 8, BATCH, top_k=2, strategy=one_device()).evaluate()
    assert math.isnan(stats["loss"])
    assert stats["non_finite"] == 2 and stats["accuracy"] == 6 / 8 and stats["top_k_accuracy"] == 6 / 8
    assert sum(map(sum, stats["confusion"])) == 6


@pytest.mark.parametrize("seen, count", [(N, N - 1), (N, N + 3), (0, N)])
def test_a_pass_over_another_number_of_examples_than_the_list_is_an_error(seen, count):
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((N, C), "float32"), np.zeros(N, "int32")))
    with pytest.raises(tester.IncompleteTestPass, match=f"tested {seen} of {count} test examples"):
        tester.Tester(identity_model(), dataset.take(seen).batch(BATCH), count, BATCH, top_k=2,
                      strategy=one_device()).evaluate()
