"""Each exported file checked against the SavedModel on labelled images: the numbers export.json records.

A quantized file that "always predicts the same class", or loses much of its accuracy,
is found here at export time rather than in production: every written file is loaded
as predict loads it (worklab.serve.formats) and run on the same resized 0-255 images as
the SavedModel's serving_resized signature. The images come in batches, so the check
holds one batch in memory whatever the size of the set.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

import numpy as np


class Tally:
    """One format's running comparison with the reference: top-1 agreements, correct answers, largest difference."""

    def __init__(self):
        self.count = self.agree = self.correct = 0
        self.max_abs_diff = 0.0

    def add(self, reference: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> None:
        top = probabilities.argmax(1)
        self.count += len(labels)
        self.agree += int((top == reference.argmax(1)).sum())
        self.correct += int((top == labels).sum())
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(probabilities - reference).max()))

    def record(self, split: str) -> Dict:
        """export.json's entry: agreement (top-1, with the SavedModel), accuracy, max_abs_diff, set, count."""
        return {"agreement": self.agree / self.count, "accuracy": self.correct / self.count,
                "max_abs_diff": self.max_abs_diff, "set": split, "count": self.count}


def compare(reference, models: Dict[str, object], batches: Iterable[Tuple[np.ndarray, np.ndarray]],
            split: str) -> Dict[str, Dict]:
    """Each model's Tally.record against `reference` over `batches` of (0-255 pixels [N, S, S, 3], labels [N])."""
    tallies = {name: Tally() for name in models}
    for pixels, labels in batches:
        expected = reference(pixels)
        for name, model in models.items():
            tallies[name].add(expected, model(pixels), labels)
    assert all(t.count for t in tallies.values()), f"the {split} set gave no images"  # image lists are never empty
    return {name: tally.record(split) for name, tally in tallies.items()}
