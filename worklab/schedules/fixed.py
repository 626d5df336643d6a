"""schedule=fixed: learning-rate stages, testing after each (the seed's train_and_test).

The state is the global step alone: the stage is the one whose step range holds it,
and a stage's test counts as done when its evaluation file exists, so a resumed run
picks up mid-stage, or tests a stage that was trained but not yet tested. With a
validation set the stages are tested on it, and the test set once at the end, reported
apart. Each stage
trains at its own rate, whatever rate the checkpoint it resumes from was saved with;
with schedule.warmup_steps, the first stage's rate rises linearly to it over those steps.
"""
from __future__ import annotations

import itertools
import logging
from typing import Dict

from worklab.model.batchnorm import recalibrate
from worklab.schedules.curves import linear_warmup
from worklab.schedules.loop import evaluate, report_test, set_rate, train_until

log = logging.getLogger("worklab")


def run(parts) -> Dict:
    """Train each stage at its rate up to its end step, then test; return the last test's statistics."""
    stages = parts.cfg.schedule.stages
    parts.inputs.check_inputs(train=True, test=True)
    parts.restore()
    ends = list(itertools.accumulate(stage.steps for stage in stages))
    results = {}
    for number, (stage, end) in enumerate(zip(stages, ends), start=1):
        results = parts.writer.evaluated(end, parts.inputs.decision_split)
        if results is not None:
            continue
        log.info("stage %d/%d: to step %d", number, len(stages), end)
        set_rate(parts, stage.lr, f"schedule.stages[{number - 1}].lr")
        warmup = number == 1 and parts.cfg.schedule.warmup_steps
        train_until(parts, end, curve=linear_warmup(stage.lr, parts.cfg.schedule.warmup_steps) if warmup else None)
        if number == len(stages) and parts.cfg.schedule.recalibrate:
            recalibrate(parts.model, parts.reader.train(parts.inputs.train_images, start=int(parts.examples.numpy())),
                        parts.bn_momentum, parts.cfg.schedule.recalibrate)
            parts.session.save()
        results = evaluate(parts)
    return report_test(parts, ends[-1]) or results
