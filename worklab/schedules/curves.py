"""Learning-rate curves: the rate of each training step as a function of the global step alone.

A curve gives the rate the update from step `s` to `s + 1` trains at (s counts from 0).
Because it depends on nothing but the step and the config, a resumed run goes on exactly
on the curve, and a changed optimizer.lr changes the curve from the resume step on.
"""
from __future__ import annotations

import math
from typing import Callable

Curve = Callable[[int], float]


def linear_warmup(rate: float, warmup_steps: int) -> Curve:
    """rate * (s + 1) / warmup_steps for the first warmup_steps steps, then `rate`."""
    return lambda s: rate * min(s + 1, warmup_steps) / warmup_steps if warmup_steps else rate


def warmup_cosine(peak: float, floor: float, warmup_steps: int, steps: int) -> Curve:
    """A linear warmup to `peak`, then half a cosine from `peak` down to `floor` at step `steps`."""
    warmup = linear_warmup(peak, warmup_steps)

    def rate(s: int) -> float:
        if s < warmup_steps:
            return warmup(s)
        progress = min(s - warmup_steps, steps - warmup_steps) / (steps - warmup_steps)
        return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))

    return rate
