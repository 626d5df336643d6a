"""Where a model fails: its highest-loss examples and the class pairs it confuses most, in pure numpy.

A reviewer who doubts a score asks which images are wrong and how: the worst examples,
with their files, show label noise, broken images and the cases the model cannot do;
the confused pairs show which classes it mixes up. Both are part of every evaluation.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

CONFUSED = 10  # the most confused class pairs listed in an evaluation


class WorstExamples:
    """The `k` examples of highest loss among those added so far, batch by batch, in at most k + one batch of
    memory; `rows()` lists them highest first (ties: by index), each as {index, label, predicted, probability
    (of the prediction), loss}, led by its path when the batches came with paths.

    A NaN or infinite loss ranks above every finite one (a NaN and an infinity tie, so their index decides;
    a loss of -infinity ranks last): such an example is the first thing to look at. An example without
    finite probabilities has no prediction: its predicted is -1 and its probability None.
    """

    def __init__(self, k: int):
        self.k = k
        self._kept: Dict[str, np.ndarray] = {}

    def add(self, indices: np.ndarray, labels: np.ndarray, predicted: np.ndarray, probability: np.ndarray,
            losses: np.ndarray, paths: Optional[Sequence[str]] = None) -> None:
        """Consider a batch: each example's index, label, predicted class (-1: none), probability of that
        prediction (ignored where there is none), loss and, optionally, path."""
        batch = {"rank": -np.nan_to_num(np.asarray(losses, np.float64), nan=np.inf, posinf=np.inf),
                 "index": np.asarray(indices, np.int64), "label": labels, "predicted": predicted,
                 "probability": probability, "loss": losses}
        if paths is not None:
            batch["path"] = np.array(paths, dtype=object)
        both = {key: np.concatenate([self._kept[key], value]) if self._kept else value
                for key, value in batch.items()}
        order = np.lexsort((both["index"], both["rank"]))[:self.k]
        self._kept = {key: value[order] for key, value in both.items()}

    def rows(self) -> List[Dict]:
        """The kept examples, highest loss first."""
        kept = self._kept
        return [{**({"path": kept["path"][i]} if "path" in kept else {}), "index": int(kept["index"][i]),
                 "label": int(kept["label"][i]), "predicted": int(kept["predicted"][i]),
                 "probability": float(kept["probability"][i]) if kept["predicted"][i] >= 0 else None,
                 "loss": float(kept["loss"][i])}
                for i in range(len(kept.get("index", ())))]


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
