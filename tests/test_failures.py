"""Where a model fails: the worst examples by a loss recomputed by hand, the confused pairs, and their pictures."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import one_device
from worklab.run.figures import caption, worst_grid
from worklab.run.writer import Writer
from worklab.train.failures import confused_pairs
from worklab.train.stats import evaluation_statistics
from worklab.train.tester import Tester

N, C = 21, 3


def identity_model() -> keras.Model:
    inputs = keras.Input((C,))
    return keras.Model(inputs, keras.layers.Dense(C, use_bias=False, kernel_initializer="identity")(inputs))


def test_the_worst_examples_are_the_highest_losses_recomputed_by_hand_with_their_files():
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=3.0, size=(N, C)).astype("float32")
    labels = rng.integers(0, C, size=N).astype("int32")
    paths = [f"/set/{i}.jpg" for i in range(N)]
    tester = Tester(identity_model(), tf.data.Dataset.from_tensor_slices((logits, labels)).batch(4), N, 4,
                    top_k=1, strategy=one_device(), worst=5, paths=paths)
    worst = tester.evaluate()["worst"]

    exp = np.exp(logits.astype(np.float64))
    probs = exp / exp.sum(axis=1, keepdims=True)
    hand = -np.log(probs[np.arange(N), labels])
    expected = sorted(range(N), key=lambda i: -hand[i])[:5]
    assert [row["path"] for row in worst] == [paths[i] for i in expected]
    np.testing.assert_allclose([row["loss"] for row in worst], hand[expected], rtol=1e-5)
    assert [row["label"] for row in worst] == labels[expected].tolist()
    assert [row["predicted"] for row in worst] == probs[expected].argmax(axis=1).tolist()
    np.testing.assert_allclose([row["probability"] for row in worst], probs[expected].max(axis=1), rtol=1e-5)


def test_worst_zero_lists_none_and_a_blown_up_example_comes_first():
    probs = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]])
    losses = np.array([0.1, np.nan, 1.6])
    assert evaluation_statistics(np.array([0, 0, 0]), probs, losses, worst=0)["worst"] == []
    worst = evaluation_statistics(np.array([0, 0, 0]), probs, losses, worst=2)["worst"]
    assert [(row["index"], row["predicted"], row["probability"]) for row in worst] == [(1, -1, None), (2, 1, 0.8)]
    with pytest.raises(ValueError, match="worst must be 0 or more"):
        evaluation_statistics(np.array([0]), probs[:1], losses[:1], worst=-1)


def test_confused_pairs_are_the_largest_off_diagonal_cells():
    confusion = np.array([[5, 3, 0], [1, 4, 3], [0, 7, 2]])
    assert confused_pairs(confusion, limit=3) == [{"label": 2, "predicted": 1, "count": 7},
                                                  {"label": 0, "predicted": 1, "count": 3},
                                                  {"label": 1, "predicted": 2, "count": 3}]


def test_the_evaluation_file_and_tensorboard_get_the_worst_examples(tmp_path):
    picture = tmp_path / "ant.png"
    Image.new("RGB", (40, 30), (250, 0, 0)).save(picture)
    stats = evaluation_statistics(np.array([0, 1]), np.array([[0.07, 0.93], [0.4, 0.6]]),
                                  np.array([-np.log(0.07), -np.log(0.6)]), top_k=1, worst=1)
    stats["worst"] = [{"path": str(picture), **stats["worst"][0]}]
    Writer(tmp_path / "run").evaluation({**stats, "step": 3, "split": "test", "lr": 0.1}, ["ant", "bee"])
    saved = json.loads((tmp_path / "run" / "evaluations" / "step-000003.json").read_text())
    assert [(row["path"], row["label"], row["predicted"]) for row in saved["worst"]] == [(str(picture), 0, 1)]
    assert saved["confused"] == [{"label": 0, "predicted": 1, "count": 1}]
    tags = {value.tag for event in tf.compat.v1.train.summary_iterator(
        str(next((tmp_path / "run" / "tensorboard" / "test").iterdir())))
        for value in event.summary.value}
    assert {"worst_examples", "reliability_diagram", "ece"} <= tags


def test_the_grid_shows_each_example_captioned():
    assert caption({"label": 0, "predicted": 1, "probability": 0.934}, ["ant", "bee"]) == "ant -> bee 0.93"
    grid = worst_grid([{"path": None, "label": 0, "predicted": 1, "probability": 0.9}] * 5, ["ant", "bee"])
    assert grid.shape == (2 * (128 + 14), 4 * 128, 3)  # two rows of four tiles, each with its caption
    assert worst_grid([], ["ant", "bee"]) is None
