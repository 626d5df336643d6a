"""Expected calibration error against a hand computation on a constructed set."""
from __future__ import annotations

import numpy as np
import pytest

from worklab.run.figures import reliability_diagram
from worklab.train.stats import evaluation_statistics


def test_ece_of_a_constructed_set_equals_the_hand_computation():
    # Bin 14 (confidence in (14/15, 1]): four examples at 0.95, three right -> |0.75 - 0.95| = 0.2
    # Bin 8 ((8/15, 9/15]): two examples at 0.55 and 0.59, both right -> |1 - 0.57| = 0.43
    probs = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45], [0.41, 0.59]])
    labels = np.array([0, 0, 0, 1, 0, 1])
    losses = -np.log(probs[np.arange(6), labels])
    stats = evaluation_statistics(labels, probs, losses)
    hand = 4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(1.0 - 0.57)
    assert stats["ece"] == pytest.approx(hand)
    bins = stats["reliability"]
    assert len(bins) == 15 and [b["count"] for b in bins if b["count"]] == [2, 4]
    assert bins[14]["accuracy"] == 0.75 and bins[8]["confidence"] == pytest.approx(0.57)


def test_a_confidence_on_a_bin_edge_falls_in_the_lower_bin_and_a_perfect_model_has_no_error():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4]])  # 0.6 = 9/15 exactly: bin 8, (8/15, 9/15]
    stats = evaluation_statistics(np.array([0, 1, 1]), probs, np.zeros(3))
    assert [i for i, b in enumerate(stats["reliability"]) if b["count"]] == [8, 14]
    assert stats["ece"] == pytest.approx(1 / 3 * 0.6)
    assert evaluation_statistics(np.array([0, 1]), probs[:2], np.zeros(2))["ece"] == 0.0


def test_no_finite_probability_has_no_ece_and_the_diagram_is_drawn():
    stats = evaluation_statistics(np.array([0]), np.array([[np.nan, np.nan]]), np.array([np.nan]))
    assert stats["ece"] is None
    picture = reliability_diagram(evaluation_statistics(np.array([0, 1]), np.array([[0.9, 0.1], [0.7, 0.3]]),
                                                        np.zeros(2))["reliability"])
    assert picture.shape == (256, 256, 3) and picture.min() < 0.5  # bars drawn on white
