"""Temperature scaling: one number T that makes a network's probabilities mean what they say.

Dividing the logits by T > 1 softens overconfident probabilities, T < 1 sharpens them;
the predicted class, and so the accuracy, never changes (Guo et al. 2017). T is the one
that minimises the negative log-likelihood of a held-out set: the validation set, never
the test set, whose score would then no longer be a test. Log-probabilities serve as
well as logits: they differ by one number per example, which the softmax ignores.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

BOUNDS = (-5.0, 5.0)  # log T: T from 1/148 to 148


def scaled(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """The log-probabilities of softmax(logits / temperature), from the log-softmax of the logits."""
    return log_softmax(np.asarray(log_probs, np.float64) / temperature, axis=1)


def nll(labels: np.ndarray, log_probs: np.ndarray) -> float:
    """The mean negative log-likelihood of the labels."""
    return float(-np.mean(np.take_along_axis(log_probs, np.asarray(labels)[:, None], axis=1)))


def fit(labels: np.ndarray, log_probs: np.ndarray) -> float:
    """The temperature that minimises the NLL of `labels` under scaled(log_probs, T).

    The NLL is convex in 1/T, so a bounded one-dimensional search over log T finds it.
    """
    search = minimize_scalar(lambda log_t: nll(labels, scaled(log_probs, np.exp(log_t))), bounds=BOUNDS,
                             method="bounded", options={"xatol": 1e-6})
    return float(np.exp(search.x))
