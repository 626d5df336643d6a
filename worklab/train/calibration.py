"""How sure a model is, and whether to believe it: expected calibration error and its reliability bins.

A model that says 0.9 should be right 9 times in 10. The top probabilities of the
examples are put in BINS equal-width bins of (0, 1]; in each, the gap between the mean
top probability (confidence) and the accuracy is weighed by the bin's share of the
examples, and the sum is the expected calibration error (Guo et al. 2017). The bins
themselves are the reliability diagram. Pure numpy, like worklab.train.stats.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

BINS = 15


class Reliability:
    """The reliability bins gathered batch by batch: per bin, the count of examples, the sum of their top
    probabilities and the number right (BINS values each, whatever the number of examples)."""

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.confidence = np.zeros(bins, np.float64)
        self.correct = np.zeros(bins, np.int64)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Count examples by their top probability (`confidence`, finite) and whether that prediction is right."""
        which = np.clip(np.ceil(confidence * self.bins).astype(int) - 1, 0, self.bins - 1)
        self.counts += np.bincount(which, minlength=self.bins)
        self.confidence += np.bincount(which, weights=confidence, minlength=self.bins)
        self.correct += np.bincount(which, weights=correct, minlength=self.bins).astype(np.int64)

    def rows(self) -> List[Dict]:
        """Per bin ((i/bins, (i+1)/bins], the first one closed at 0): {count, confidence, accuracy}, the mean
        top probability and the fraction right of its examples (None when it has none)."""
        return [{"count": int(n), "confidence": float(total / n) if n else None,
                 "accuracy": float(right / n) if n else None}
                for n, total, right in zip(self.counts, self.confidence, self.correct)]


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> List[Dict]:
    """The reliability bins (Reliability.rows) of a whole set: of each example's top probability and whether
    its argmax is the label. Examples without finite probabilities have no confidence and are left out."""
    finite = np.all(np.isfinite(probs), axis=1)
    gathered = Reliability(bins)
    gathered.add(probs[finite].max(axis=1), probs[finite].argmax(axis=1) == labels[finite])
    return gathered.rows()


def expected_calibration_error(bins: List[Dict]) -> Optional[float]:
    """sum over bins of count / N * |accuracy - confidence|; None when no example has finite probabilities."""
    total = sum(b["count"] for b in bins)
    if not total:
        return None
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))
