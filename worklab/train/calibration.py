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


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> List[Dict]:
    """Per bin ((i/bins, (i+1)/bins], the first one closed at 0): {count, confidence, accuracy}
    of the examples whose top probability falls in it (confidence and accuracy None when empty).

    Examples without finite probabilities have no confidence and are left out.
    """
    finite = np.all(np.isfinite(probs), axis=1)
    confidence = probs[finite].max(axis=1)
    correct = probs[finite].argmax(axis=1) == labels[finite]
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        rows.append({"count": count, "confidence": float(confidence[members].mean()) if count else None,
                     "accuracy": float(correct[members].mean()) if count else None})
    return rows


def expected_calibration_error(bins: List[Dict]) -> Optional[float]:
    """sum over bins of count / N * |accuracy - confidence|; None when no example has finite probabilities."""
    total = sum(b["count"] for b in bins)
    if not total:
        return None
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))
