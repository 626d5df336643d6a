"""schedule=recalibrate: re-estimate the batch-norm statistics of a run's latest checkpoint, save, test.

The statistics become the plain average over schedule.batches training batches with
every weight fixed; the checkpoint of the same step is written again with them, so a
later test or resume uses them.
"""
from __future__ import annotations

from typing import Dict

from worklab.batchnorm import recalibrate
from worklab.schedules.loop import evaluate


def run(parts) -> Dict:
    parts.check_inputs()
    start = parts.start_position  # restores the latest checkpoint
    recalibrate(parts.model, parts.reader.train(parts.train_images, start=start), parts.bn_momentum,
                parts.cfg.schedule.batches)
    parts.session.save()
    return evaluate(parts)
