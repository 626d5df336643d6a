"""Evaluation statistics computed from one pass over a test set, in pure numpy.

The evaluator gathers every example's label, class probabilities and loss, then
calls `evaluation_statistics` once. Keeping this module free of TensorFlow lets
it be tested on hand-made predictions and keeps the package import fast.
"""

import numpy as np

from worklab.train.calibration import expected_calibration_error, reliability
from worklab.train.failures import confused_pairs, worst_examples


def evaluation_statistics(labels, probs, losses, top_k=5, worst=16):
    """Return loss, accuracy, top-k accuracy, confusion matrix, recall, macro F1, (binary) AUC, where the
    model fails and how well calibrated it is.

    labels: int array (N,) of true classes in [0, C); probs: float array (N, C)
    of predicted probabilities; losses: float array (N,) of per-example losses;
    top_k: int >= 1, clipped to C (the value used is reported as "top_k");
    worst: int >= 0, how many of the highest-loss examples "worst" lists.

    "worst" and "confused" are worklab.train.failures' (examples by their index
    in the set, classes by index); "ece" and "reliability" are
    worklab.train.calibration's, over the examples with finite probabilities.

    Ties between equal probabilities go to the lower class index, both for the
    top-1 prediction (np.argmax) and for top-k membership (a stable argsort of
    -probs), so top-1 accuracy equals top-k accuracy when k == 1.

    "recall" holds one value per class, None for a class with no examples.
    "f1_macro" averages the per-class F1 = 2TP / (2TP + FP + FN) over the
    classes that occur in the labels or the predictions; a class absent from
    both has no defined F1 and is left out of the mean.
    "auc" is present only when C == 2: the ROC AUC of probs[:, 1] for class 1
    by the rank (Mann-Whitney) formula, ties sharing their average rank; it is
    None when the labels contain only one of the two classes.

    A blown-up model is described, not refused, so a schedule can see the blow-up:
    "loss" is the plain mean, NaN or infinite when a loss is; an example whose
    probabilities are not all finite has no prediction, so it counts as wrong for
    accuracy, top-k accuracy, recall and F1 (a false negative of its class), is
    left out of the confusion matrix (whose rows then sum to fewer than the class
    counts) and is counted in "non_finite"; "auc" is None when there is any.

    The result holds only python ints, floats, lists and None, so it can be
    written with json.dump; a non-finite loss is written as NaN or Infinity (as
    json.dumps does by default; json.loads reads them back). Raises ValueError
    when the shapes disagree, N == 0, a label is out of range, top_k < 1 or worst < 0.
    """
    labels, probs, losses = _checked_arrays(labels, probs, losses, top_k, worst)
    num_classes = probs.shape[1]
    k = min(int(top_k), num_classes)
    finite = np.all(np.isfinite(probs), axis=1)
    predicted = np.where(finite, np.argmax(np.where(finite[:, None], probs, 0.0), axis=1), -1)
    confusion = _confusion_matrix(labels[finite], predicted[finite], num_classes)
    class_counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore"):  # inf - inf: the mean is NaN, which is what it should say
        loss = float(np.mean(losses))
    stats = {
        "count": int(labels.shape[0]),
        "loss": loss,
        "accuracy": float(np.mean(predicted == labels)),
        "top_k": k,
        "top_k_accuracy": _top_k_accuracy(labels, probs, k, finite),
        "confusion": confusion.tolist(),
        "recall": _per_class_recall(confusion, class_counts),
        "f1_macro": _macro_f1(confusion, class_counts),
        "non_finite": int(np.sum(~finite)),
        "worst": worst_examples(labels, probs, losses, worst),
        "confused": confused_pairs(confusion),
    }
    stats["reliability"] = reliability(labels, probs)
    stats["ece"] = expected_calibration_error(stats["reliability"])
    if num_classes == 2:
        stats["auc"] = _binary_auc(labels == 1, probs[:, 1]) if np.all(finite) else None
    return stats


def cross_entropy(labels, log_probabilities):
    """Each example's loss, -log p(label), read from its log-probabilities (the log-softmax of the logits).

    labels: int array (N,) in [0, C); log_probabilities: float array (N, C). The Tester
    and predict both take their losses from here. Not from probabilities: a confidently
    wrong prediction's probability underflows to 0 in float32, while its log-probability
    stays finite and accurate.
    """
    labels, log_probabilities = np.asarray(labels), np.asarray(log_probabilities)
    return -np.take_along_axis(log_probabilities, labels[:, None], axis=1)[:, 0]


def _checked_arrays(labels, probs, losses, top_k, worst):
    """Convert the inputs to numpy arrays and reject anything the statistics cannot describe.

    Checks run shape-first so that a mismatch is reported as such rather than
    as a confusing error from the arithmetic further on.
    """
    labels, probs, losses = np.asarray(labels), np.asarray(probs), np.asarray(losses)
    if labels.ndim != 1 or probs.ndim != 2 or losses.ndim != 1:
        raise ValueError(
            f"expected labels (N,), probs (N, C) and losses (N,), got shapes "
            f"{labels.shape}, {probs.shape} and {losses.shape}"
        )
    if not labels.shape[0] == probs.shape[0] == losses.shape[0]:
        raise ValueError(
            f"labels, probs and losses disagree on the number of examples: "
            f"{labels.shape[0]}, {probs.shape[0]} and {losses.shape[0]}"
        )
    if labels.shape[0] == 0:
        raise ValueError("cannot compute evaluation statistics on an empty test set (N == 0)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {probs.shape[1]}) for probs with {probs.shape[1]} "
            f"classes, got values from {labels.min()} to {labels.max()}"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if worst < 0:
        raise ValueError(f"worst must be 0 or more, got {worst}")
    return labels, probs, losses


def _confusion_matrix(labels, predicted, num_classes):
    """Count examples per (true class, predicted class): rows are true, columns predicted."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def _top_k_accuracy(labels, probs, k, finite):
    """Fraction of examples whose label is among the k most probable classes (never for a non-finite row).

    A stable argsort of -probs ranks tied classes by ascending index, which
    makes membership deterministic and agrees with np.argmax for k == 1.
    """
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1) & finite))


def _per_class_recall(confusion, class_counts):
    """Recall TP / (TP + FN) per class, None where the class has no examples.

    The class counts come from the labels, not the confusion rows, so an example
    without a prediction (non-finite probabilities) is a false negative.
    """
    hits = np.diag(confusion)
    return [float(h / t) if t else None for h, t in zip(hits, class_counts)]


def _macro_f1(confusion, class_counts):
    """Mean F1 = 2TP / (2TP + FP + FN) over classes present in the labels or predictions.

    2TP + FP + FN is the number predicted plus the number labelled. It is zero
    exactly for a class absent from both, whose F1 is undefined; those classes
    are skipped rather than counted as 0 or 1.
    """
    tp = np.diag(confusion)
    denominators = confusion.sum(axis=0) + class_counts
    present = denominators > 0
    return float(np.mean(2 * tp[present] / denominators[present]))


def _binary_auc(is_positive, scores):
    """ROC AUC by the Mann-Whitney rank formula, None unless both classes occur.

    AUC = (sum of positive ranks - P(P+1)/2) / (P * N), with tied scores given
    their average rank, equals the probability that a random positive scores
    above a random negative, counting ties as one half.
    """
    num_pos = int(np.sum(is_positive))
    num_neg = is_positive.shape[0] - num_pos
    if num_pos == 0 or num_neg == 0:
        return None
    rank_sum = float(np.sum(_average_ranks(scores)[is_positive]))
    return (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)


def _average_ranks(values):
    """1-based ranks of values in ascending order, tied values sharing the mean of their ranks.

    A group of `count` equal values ending at cumulative position `end` spans
    ranks end - count + 1 .. end, whose mean is end - (count - 1) / 2.
    """
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[group.reshape(-1)]
