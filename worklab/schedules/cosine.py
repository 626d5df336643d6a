"""schedule=cosine: a linear warmup to optimizer.lr, then cosine decay to schedule.min_lr at schedule.steps.

The rate of every step is a function of the global step (worklab.schedules.curves), so
a resumed run continues exactly on the curve. The run is tested every eval_every steps
and at the end (on the validation set when there is one, with the test set once at the
end, reported apart); like the fixed schedule, its state is the global step alone, and
a test counts as done when its evaluation file exists.
"""
from __future__ import annotations

import logging
from typing import Dict

from worklab.schedules.curves import warmup_cosine
from worklab.schedules.loop import evaluate, report_test, train_until

log = logging.getLogger("worklab")


def run(parts) -> Dict:
    """Train along the curve to schedule.steps, testing on the way; return the last test's statistics."""
    s = parts.cfg.schedule
    parts.inputs.check_inputs(train=True, test=True)
    parts.restore()
    curve = warmup_cosine(parts.cfg.optimizer.lr, s.min_lr, s.warmup_steps, s.steps)
    log.info("learning rate: warmup to %g over %d steps, cosine to %g at step %d (optimizer.lr, schedule.*)",
             parts.cfg.optimizer.lr, s.warmup_steps, s.min_lr, s.steps)
    ends = [*range(s.eval_every, s.steps, s.eval_every), s.steps]
    results = {}
    for end in ends:
        results = parts.writer.evaluated(end, parts.inputs.decision_split)
        if results is None:
            train_until(parts, end, curve=curve)
            results = evaluate(parts)
    return report_test(parts, s.steps) or results
