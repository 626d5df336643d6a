"""Evaluation statistics over a test set, gathered batch by batch, in pure numpy.

`EvaluationAccumulator` takes each batch's labels, class probabilities and losses as
they come (`add`) and keeps only what the statistics are made of: counts, a confusion
matrix, sums, the reliability bins, the highest-loss examples and, for two classes, what
the rank AUC needs. `evaluation_statistics` is that accumulator fed a whole set at once,
which the Tester calls; predict feeds it as images are classified, so its memory does not
grow with the number of images. Keeping this module free of TensorFlow lets it be tested
on hand-made predictions and keeps the package import fast.
"""

import numpy as np

from worklab.train.calibration import Reliability, expected_calibration_error
from worklab.train.failures import WorstExamples, confused_pairs


def evaluation_statistics(labels, probs, losses, top_k=5, worst=16):
    """Return loss, accuracy, top-k accuracy, confusion matrix, recall, macro F1, (binary) AUC, where the
    model fails and how well calibrated it is: `EvaluationAccumulator`'s result for one batch of the whole set.

    labels: int array (N,) of true classes in [0, C); probs: float array (N, C)
    of predicted probabilities; losses: float array (N,) of per-example losses;
    top_k: int >= 1, clipped to C (the value used is reported as "top_k");
    worst: int >= 0, how many of the highest-loss examples "worst" lists.

    "worst" and "confused" are worklab.train.failures' (examples by their index
    in the set, classes by index); "ece" and "reliability" are
    worklab.train.calibration's, over the examples with finite probabilities.

    Ties between equal probabilities go to the lower class index, both for the
    top-1 prediction (np.argmax) and for top-k membership (the label is in the
    top k when fewer than k classes rank above it, a class ranking above it when
    more probable, or as probable with a lower index: the order of a stable
    argsort of -probs), so top-1 accuracy equals top-k accuracy when k == 1.

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
    when top_k < 1, worst < 0, the shapes disagree, a label is out of range or N == 0.
    """
    accumulator = EvaluationAccumulator(top_k, worst)
    accumulator.add(labels, probs, losses)
    return accumulator.result()


class EvaluationAccumulator:
    """evaluation_statistics over a set that comes in batches: `add` each batch, then `result()`.

    The result is evaluation_statistics' dict for all the batches taken as one set in the
    order added (the loss and the reliability bins' confidences are sums, which may differ
    from one pass over the whole set in the last bits of a float). Kept between batches:
    the counts, the C x C confusion matrix, the reliability bins, the `worst` highest-loss
    examples and, only when C == 2, every example's probability of class 1 and whether it
    is labelled 1 (O(N) floats, what the rank AUC needs; let go once a non-finite example
    makes the AUC None). Nothing else grows with the number of examples.
    """

    def __init__(self, top_k=5, worst=16):
        """top_k >= 1 (clipped to the number of classes) and worst >= 0, as evaluation_statistics takes them;
        ValueError otherwise."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if worst < 0:
            raise ValueError(f"worst must be 0 or more, got {worst}")
        self.top_k = int(top_k)
        self.num_classes = None  # set by the first batch
        self.count = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.top_k_correct = 0
        self.non_finite = 0
        self.worst = WorstExamples(int(worst))
        self.reliability = Reliability()
        self.confusion = self.class_counts = self._auc = None

    def add(self, labels, probs, losses, indices=None, paths=None):
        """Take one batch: labels (B,), probs (B, C) and losses (B,) as evaluation_statistics takes them, C the same
        for every batch. `indices`, each example's index in the set ("worst" names it), count on from the
        examples added before when not given; `paths`, each example's file, lead its row in "worst" (pass them
        with every batch or none). ValueError for what evaluation_statistics refuses, naming it."""
        labels, probs, losses = _checked_arrays(labels, probs, losses, self.num_classes)
        if self.num_classes is None:
            self._start(probs.shape[1])
        if labels.shape[0] == 0:
            return
        indices = np.arange(self.count, self.count + labels.shape[0]) if indices is None else np.asarray(indices)
        finite = np.all(np.isfinite(probs), axis=1)
        predicted = np.where(finite, np.argmax(np.where(finite[:, None], probs, 0.0), axis=1), -1)
        self.count += int(labels.shape[0])
        with np.errstate(invalid="ignore"):  # inf - inf: the sum is NaN, which is what the mean should say
            self.loss_sum += float(np.sum(losses, dtype=np.float64))
        self.correct += int(np.sum(predicted == labels))
        self.top_k_correct += int(np.sum(_in_top_k(labels, probs, min(self.top_k, self.num_classes)) & finite))
        self.non_finite += int(np.sum(~finite))
        np.add.at(self.confusion, (labels[finite], predicted[finite]), 1)
        self.class_counts += np.bincount(labels, minlength=self.num_classes)
        probability = probs[np.arange(labels.shape[0]), np.maximum(predicted, 0)]
        self.worst.add(indices, labels, predicted, probability, losses, paths)
        self.reliability.add(probability[finite], predicted[finite] == labels[finite])
        if self._auc is not None and np.all(finite):
            self._auc.append((labels == 1, probs[:, 1].copy()))
        elif self._auc is not None:
            self._auc = None

    def result(self):
        """evaluation_statistics' dict for every example added; ValueError when there is none."""
        if self.count == 0:
            raise ValueError("cannot compute evaluation statistics on an empty test set (N == 0)")
        stats = {
            "count": self.count,
            "loss": self.loss_sum / self.count,
            "accuracy": self.correct / self.count,
            "top_k": min(self.top_k, self.num_classes),
            "top_k_accuracy": self.top_k_correct / self.count,
            "confusion": self.confusion.tolist(),
            "recall": _per_class_recall(self.confusion, self.class_counts),
            "f1_macro": _macro_f1(self.confusion, self.class_counts),
            "non_finite": self.non_finite,
            "worst": self.worst.rows(),
            "confused": confused_pairs(self.confusion),
        }
        stats["reliability"] = self.reliability.rows()
        stats["ece"] = expected_calibration_error(stats["reliability"])
        if self.num_classes == 2:
            stats["auc"] = None if self._auc is None else _binary_auc(
                *(np.concatenate(parts) for parts in zip(*self._auc)))
        return stats

    def _start(self, num_classes):
        """Size what is kept per class by the first batch's number of classes."""
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.class_counts = np.zeros(num_classes, dtype=np.int64)
        self._auc = [] if num_classes == 2 else None


def cross_entropy(labels, log_probabilities):
    """Each example's loss, -log p(label), read from its log-probabilities (the log-softmax of the logits).

    labels: int array (N,) in [0, C); log_probabilities: float array (N, C). The Tester
    and predict both take their losses from here. Not from probabilities: a confidently
    wrong prediction's probability underflows to 0 in float32, while its log-probability
    stays finite and accurate.
    """
    labels, log_probabilities = np.asarray(labels), np.asarray(log_probabilities)
    return -np.take_along_axis(log_probabilities, labels[:, None], axis=1)[:, 0]


def _checked_arrays(labels, probs, losses, num_classes=None):
    """Convert a batch to numpy arrays and reject anything the statistics cannot describe.

    Checks run shape-first so that a mismatch is reported as such rather than
    as a confusing error from the arithmetic further on; `num_classes`, the
    earlier batches' C, when there were any. An empty batch passes (the empty
    set is refused by `result`).
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
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(f"probs has {probs.shape[1]} classes, the batches before had {num_classes}")
    if labels.shape[0] == 0:
        return labels, probs, losses
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {probs.shape[1]}) for probs with {probs.shape[1]} "
            f"classes, got values from {labels.min()} to {labels.max()}"
        )
    return labels, probs, losses


def _in_top_k(labels, probs, k):
    """Whether each example's label is among its k most probable classes (meaningless for a non-finite row).

    Fewer than k classes rank above the label: those more probable, and those as
    probable with a lower index. That is the label's place in a stable argsort of
    -probs, so membership is deterministic and agrees with np.argmax for k == 1.
    """
    own = np.take_along_axis(probs, labels[:, None], axis=1)
    above = (probs > own) | ((probs == own) & (np.arange(probs.shape[1]) < labels[:, None]))
    return np.sum(above, axis=1) < k


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
