"""schedule=recalibrate: re-estimate the batch-norm statistics of a run's latest checkpoint, save, test.

The statistics become the plain average over schedule.batches training batches with
every weight fixed. The result is saved as a new checkpoint of the same step
(`ckpt-<step>_1`, which the index then names for that step), so a later test, export or
resume uses it; the checkpoint it started from stays on disk, and nothing is pruned.
The run's own settings (its schedule, restore.anyway) are not used or changed.
"""
from __future__ import annotations

from typing import Dict

from worklab.model.batchnorm import recalibrate
from worklab.schedules.loop import evaluate


def run(parts) -> Dict:
    parts.inputs.check_inputs()
    parts.session.restore_step(None)
    start = int(parts.examples.numpy())
    recalibrate(parts.model, parts.reader.train(parts.inputs.train_images, start=start), parts.bn_momentum,
                parts.cfg.schedule.batches)
    parts.session.save()
    return evaluate(parts, "test")
