"""Tests for worklab.train.stats against hand-computed values and brute-force loops."""

import json

import numpy as np
import pytest

from worklab.train.stats import evaluation_statistics

# Three classes, five examples; argmax per row: 0, 1, 1, 2, 0.
LABELS_3 = [0, 0, 1, 2, 2]
PROBS_3 = [
    [0.7, 0.2, 0.1],
    [0.2, 0.5, 0.3],
    [0.1, 0.8, 0.1],
    [0.3, 0.3, 0.4],
    [0.6, 0.1, 0.3],
]
LOSSES_3 = [0.1, 0.2, 0.3, 0.4, 0.5]


def test_hand_computed_three_classes():
    stats = evaluation_statistics(LABELS_3, PROBS_3, LOSSES_3, top_k=2)
    assert stats["count"] == 5
    assert stats["loss"] == pytest.approx(0.3)  # 1.5 / 5
    assert stats["accuracy"] == pytest.approx(0.6)  # rows 0, 2, 3 correct
    # Top-2 sets: {0,1} {1,2} {1,0|2 tie -> 0} {2,0|1 tie -> 0} {0,2}; row 1 (label 0) misses.
    assert stats["top_k"] == 2
    assert stats["top_k_accuracy"] == pytest.approx(0.8)
    assert stats["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert stats["recall"] == pytest.approx([0.5, 1.0, 0.5])
    # F1: class 0 2/(2+1+1) = 1/2, class 1 2/(2+1+0) = 2/3, class 2 2/(2+0+1) = 2/3.
    assert stats["f1_macro"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)  # 11/18
    assert "auc" not in stats


def test_class_without_examples_has_no_recall_and_absent_class_is_left_out_of_f1():
    # Four classes: class 2 is predicted once but never a label; class 3 never occurs at all.
    labels = [0, 1, 1]
    probs = [[0.1, 0.2, 0.6, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1]]
    stats = evaluation_statistics(labels, probs, [1.0, 2.0, 3.0])
    assert stats["confusion"] == [[0, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert stats["recall"] == [0.0, 1.0, None, None]
    # F1: class 0 0/(0+0+1) = 0, class 1 4/4 = 1, class 2 0/(0+1+0) = 0, class 3 skipped.
    assert stats["f1_macro"] == pytest.approx(1 / 3)
    assert stats["accuracy"] == pytest.approx(2 / 3)


def test_top_k_larger_than_class_count_is_clipped():
    stats = evaluation_statistics(LABELS_3, PROBS_3, LOSSES_3, top_k=10)
    assert stats["top_k"] == 3
    assert stats["top_k_accuracy"] == 1.0


def test_top_k_ties_go_to_the_lower_class_index():
    # Classes 1 and 2 tie for second place; with k=2 class 1 is in, class 2 is out.
    probs = [[0.4, 0.3, 0.3], [0.4, 0.3, 0.3]]
    stats = evaluation_statistics([1, 2], probs, [0.0, 0.0], top_k=2)
    assert stats["top_k_accuracy"] == 0.5
    # With k=1 the tie rule agrees with argmax: ties for first go to class 0.
    tied = evaluation_statistics([0, 1], [[0.5, 0.5], [0.5, 0.5]], [0.0, 0.0], top_k=1)
    assert tied["accuracy"] == tied["top_k_accuracy"] == 0.5


def test_binary_auc_with_ties():
    labels = [0, 0, 1, 1, 1, 0]
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.35, 0.8])
    probs = np.stack([1 - scores, scores], axis=1)
    stats = evaluation_statistics(labels, probs, np.zeros(6))
    # Positives 0.4, 0.8, 0.35 against negatives 0.1, 0.4, 0.8 (tie = 1/2):
    # 0.4 -> 1 + 0.5 + 0 ; 0.8 -> 1 + 1 + 0.5 ; 0.35 -> 1 + 0 + 0 ; total 5 of 9 pairs.
    assert stats["auc"] == pytest.approx(5 / 9)
    assert stats["top_k"] == 2


def test_binary_auc_is_none_when_only_one_class_is_labelled():
    stats = evaluation_statistics([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], [0.0] * 3)
    assert stats["auc"] is None
    assert stats["recall"] == [None, pytest.approx(1 / 3)]


def _brute_force(labels, probs, losses, k):
    """The statistics by plain loops, written independently of worklab.train.stats."""
    n, c = probs.shape
    confusion = [[0] * c for _ in range(c)]
    top1 = topk = 0
    for label, row in zip(labels, probs):
        pred = max(range(c), key=lambda j: row[j])  # first index of the maximum
        confusion[label][pred] += 1
        top1 += pred == label
        # Classes ranked above the label: strictly more probable, or equal with a lower index.
        above = sum(row[j] > row[label] or (row[j] == row[label] and j < label) for j in range(c))
        topk += above < k
    recall, f1s = [], []
    for i in range(c):
        tp = confusion[i][i]
        fn = sum(confusion[i]) - tp
        fp = sum(confusion[r][i] for r in range(c)) - tp
        recall.append(tp / (tp + fn) if tp + fn else None)
        if tp + fn + fp:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    expected = {
        "count": n, "loss": sum(losses) / n, "accuracy": top1 / n, "top_k": k,
        "top_k_accuracy": topk / n, "confusion": confusion, "recall": recall,
        "f1_macro": sum(f1s) / len(f1s), "non_finite": 0,
    }
    if c == 2:
        pos = [p[1] for p, y in zip(probs, labels) if y == 1]
        neg = [p[1] for p, y in zip(probs, labels) if y == 0]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
        expected["auc"] = wins / (len(pos) * len(neg)) if pos and neg else None
    return expected


@pytest.mark.parametrize("num_classes, top_k", [(2, 5), (5, 3), (7, 1)])
def test_random_predictions_match_brute_force(num_classes, top_k):
    rng = np.random.default_rng(num_classes)
    n = 37  # not a multiple of any usual batch size
    labels = rng.integers(0, num_classes, size=n)
    weights = rng.integers(1, 4, size=(n, num_classes)).astype(float)  # small ints: many ties
    probs = weights / weights.sum(axis=1, keepdims=True)
    losses = rng.uniform(0.0, 3.0, size=n)
    stats = evaluation_statistics(labels, probs, losses, top_k=top_k)
    expected = _brute_force(labels, probs, losses, min(top_k, num_classes))
    assert expected.keys() <= stats.keys()  # the failures and calibration keys: tests/test_failures.py, ..._calibration.py
    for key, value in expected.items():
        if key == "recall":
            assert stats[key] == [None if v is None else pytest.approx(v) for v in value]
        elif isinstance(value, float):
            assert stats[key] == pytest.approx(value), key
        else:
            assert stats[key] == value, key


def test_result_is_plain_json_without_numpy_types():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)
    stats = evaluation_statistics(np.array([0, 1, 1], dtype=np.int32), probs, np.ones(3, np.float32))

    def plain(value):
        if isinstance(value, list):
            return all(plain(v) for v in value)
        if isinstance(value, dict):  # a worst example, a confused pair, a reliability bin
            return all(plain(v) for v in value.values())
        return value is None or type(value) in (int, float)

    assert all(plain(v) for v in stats.values())
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats


def test_non_finite_predictions_count_as_wrong_and_the_loss_is_their_mean():
    nan = float("nan")
    # Row 1 (label 1) blew up; the others are predicted right.
    probs = [[0.7, 0.2, 0.1], [nan, nan, nan], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]]
    stats = evaluation_statistics([0, 1, 2, 1], probs, [0.1, nan, 0.2, 0.3], top_k=2)
    assert np.isnan(stats["loss"])
    assert stats["count"] == 4 and stats["non_finite"] == 1
    assert stats["accuracy"] == 0.75 and stats["top_k_accuracy"] == 0.75
    assert stats["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # the blown-up row has no predicted class
    assert stats["recall"] == [1.0, 0.5, 1.0]  # ... but it is a false negative of class 1
    # F1: class 0 2/(1+1) = 1, class 1 2/(1 predicted + 2 labelled) = 2/3, class 2 1.
    assert stats["f1_macro"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    text = json.dumps(stats)
    assert '"loss": NaN' in text and np.isnan(json.loads(text)["loss"])
    with pytest.raises(ValueError):
        json.dumps(stats, allow_nan=False)  # NaN is Python's JSON extension, not strict JSON


def test_every_prediction_non_finite_and_an_infinite_loss():
    inf = float("inf")
    stats = evaluation_statistics([0, 1, 1], np.full((3, 2), np.nan), [1.0, inf, 2.0])
    assert stats["loss"] == inf and json.loads(json.dumps(stats))["loss"] == inf  # written as Infinity
    assert stats["accuracy"] == stats["top_k_accuracy"] == stats["f1_macro"] == 0.0
    assert stats["recall"] == [0.0, 0.0] and stats["confusion"] == [[0, 0], [0, 0]]
    assert stats["non_finite"] == 3 and stats["auc"] is None


def test_a_finite_pass_keeps_its_auc_and_counts_no_non_finite_rows():
    stats = evaluation_statistics([0, 1], [[0.8, 0.2], [0.3, 0.7]], [0.2, 0.4])
    assert stats["non_finite"] == 0 and stats["auc"] == 1.0


@pytest.mark.parametrize(
    "labels, probs, losses, top_k, message",
    [
        ([0, 1], [[0.5, 0.5]], [0.1, 0.2], 5, "disagree"),
        ([0], [[0.5, 0.5]], [0.1, 0.2], 5, "disagree"),
        ([0], [0.5, 0.5], [0.1], 5, "shapes"),
        ([[0]], [[0.5, 0.5]], [0.1], 5, "shapes"),
        ([], np.zeros((0, 3)), [], 5, "empty"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], [0.1, 0.2], 5, r"\[0, 2\)"),
        ([0.0], [[0.5, 0.5]], [0.1], 5, "integer"),
        ([0], [[0.5, 0.5]], [0.1], 0, "top_k"),
    ],
)
def test_invalid_input_raises_value_error(labels, probs, losses, top_k, message):
    with pytest.raises(ValueError, match=message):
        evaluation_statistics(labels, probs, losses, top_k=top_k)
