"""worklab.train.stats.EvaluationAccumulator: a set fed in uneven batches gives evaluation_statistics' dict."""

import json

import numpy as np
import pytest

from worklab.train.failures import with_paths
from worklab.train.stats import EvaluationAccumulator, evaluation_statistics


def a_set(num_classes, n, seed):
    """Labels, probabilities with many ties, losses with ties; one row blown up, the last class never predicted."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    weights = rng.integers(1, 4, size=(n, num_classes)).astype(float)  # small ints: ties within rows
    weights[:, -1] = 0.5  # below every other weight: the last class is never the prediction
    probs = weights / weights.sum(axis=1, keepdims=True)
    probs[n // 3] = np.nan
    losses = rng.integers(0, 6, size=n) / 2.0  # ties between losses: "worst" breaks them by index
    losses[n // 3] = np.nan
    return labels, probs, losses


def in_batches(labels, probs, losses, cuts, top_k, worst, paths=None):
    """The accumulator's result, fed the set cut at `cuts`."""
    accumulator = EvaluationAccumulator(top_k, worst)
    for start, end in zip([0, *cuts], [*cuts, len(labels)]):
        accumulator.add(labels[start:end], probs[start:end], losses[start:end],
                        paths=None if paths is None else paths[start:end])
    return accumulator.result()


def assert_same(batched, whole):
    """Equal as JSON, the loss and the bins' mean confidences (sums, added in another order) to float tolerance."""
    assert list(batched) == list(whole)
    for key, value in whole.items():
        if key == "loss":
            assert batched[key] == pytest.approx(value, rel=1e-12, nan_ok=True)
        elif key == "reliability":
            assert [b["count"] for b in batched[key]] == [b["count"] for b in value]
            assert [b["accuracy"] for b in batched[key]] == [b["accuracy"] for b in value]
            assert [b["confidence"] for b in batched[key]] == [
                None if b["confidence"] is None else pytest.approx(b["confidence"], rel=1e-12) for b in value]
        elif key == "ece":
            assert batched[key] == pytest.approx(value, rel=1e-9)
        else:  # compared as written, where a NaN loss among the worst equals NaN
            assert json.dumps(batched[key]) == json.dumps(value), key


@pytest.mark.parametrize("num_classes, top_k", [(2, 1), (5, 3), (7, 10)])
def test_uneven_batches_give_the_statistics_of_the_whole_set(num_classes, top_k):
    labels, probs, losses = a_set(num_classes, 61, seed=num_classes)
    whole = evaluation_statistics(labels, probs, losses, top_k=top_k, worst=9)
    assert whole["non_finite"] == 1 and np.isnan(whole["loss"])
    assert all(row[-1] == 0 for row in whole["confusion"])  # the class never predicted
    assert len({row["loss"] for row in whole["worst"][1:]}) < 8  # tied losses among the worst
    for cuts in ([1, 2, 30, 60], [17, 17, 40], [59]):
        assert_same(in_batches(labels, probs, losses, cuts, top_k, worst=9), whole)


def test_a_finite_binary_set_in_batches_keeps_its_auc():
    labels, probs, losses = a_set(2, 40, seed=3)
    probs[13], losses[13] = [0.5, 0.5], 0.7  # no row blown up: the AUC is defined
    whole = evaluation_statistics(labels, probs, losses)
    assert whole["auc"] is not None and 0 < whole["auc"] < 1
    assert_same(in_batches(labels, probs, losses, [3, 4, 25], 5, 16), whole)


def test_batches_with_paths_name_the_worst_as_with_paths_does():
    labels, probs, losses = a_set(4, 30, seed=4)
    paths = [f"/set/{i}.png" for i in range(30)]
    whole = evaluation_statistics(labels, probs, losses, worst=5)
    batched = in_batches(labels, probs, losses, [7, 19], 5, 5, paths=paths)
    assert json.dumps(batched["worst"]) == json.dumps(with_paths(whole["worst"], paths))  # a NaN loss first


def test_indices_given_with_a_batch_name_its_examples_and_break_ties():
    accumulator = EvaluationAccumulator(worst=3)
    accumulator.add([0, 1], [[0.9, 0.1], [0.2, 0.8]], [2.0, 1.0], indices=[7, 3])
    accumulator.add([1], [[0.6, 0.4]], [2.0], indices=[5])
    assert [row["index"] for row in accumulator.result()["worst"]] == [5, 7, 3]  # loss 2.0 twice: index 5 first


def test_a_batch_with_another_number_of_classes_or_no_batch_at_all_is_refused():
    accumulator = EvaluationAccumulator()
    with pytest.raises(ValueError, match="empty test set"):
        accumulator.result()
    accumulator.add([0], [[0.5, 0.5]], [0.1])
    with pytest.raises(ValueError, match="3 classes, the batches before had 2"):
        accumulator.add([0], [[0.2, 0.3, 0.5]], [0.1])
