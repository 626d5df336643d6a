"""Where a model fails: its highest-loss examples and the class pairs it confuses most, in pure numpy.

A reviewer who doubts a score asks which images are wrong and how: the worst examples,
with their files, show label noise, broken images and the cases the model cannot do;
the confused pairs show which classes it mixes up. Both are part of every evaluation.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

CONFUSED = 10  # the most confused class pairs listed in an evaluation


def worst_examples(labels: np.ndarray, probs: np.ndarray, losses: np.ndarray, k: int) -> List[Dict]:
    """The `k` examples of highest loss, highest first (ties: list order), each as
    {index, label, predicted, probability (of the prediction), loss}.

    A non-finite loss ranks above every finite one (NaN last among them): such an
    example is the first thing to look at. An example without finite probabilities
    has no prediction: predicted is -1 and probability None.
    """
    order = np.argsort(-np.nan_to_num(losses, nan=np.inf, posinf=np.inf), kind="stable")[:k]
    rows = []
    for i in order:
        finite = bool(np.all(np.isfinite(probs[i])))
        predicted = int(np.argmax(probs[i])) if finite else -1
        rows.append({"index": int(i), "label": int(labels[i]), "predicted": predicted,
                     "probability": float(probs[i, predicted]) if finite else None, "loss": float(losses[i])})
    return rows


def with_paths(worst: List[Dict], paths: Sequence[str]) -> List[Dict]:
    """The worst examples, each led by its file: paths[index] (the set's files, in its order)."""
    return [{"path": paths[row["index"]], **row} for row in worst]


def confused_pairs(confusion: np.ndarray, limit: int = CONFUSED) -> List[Dict]:
    """The off-diagonal cells of the confusion matrix with the most examples: {label, predicted, count},
    most first (ties: by label, then prediction), up to `limit`."""
    off = np.array(confusion, dtype=np.int64)
    np.fill_diagonal(off, 0)
    cells = sorted(((-int(off[a, b]), a, b) for a, b in zip(*np.nonzero(off))))[:limit]
    return [{"label": int(a), "predicted": int(b), "count": -count} for count, a, b in cells]
