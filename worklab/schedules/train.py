"""schedule=train: train up to schedule.steps in total, without testing (the seed's train script)."""
from __future__ import annotations

from typing import Dict

from worklab.schedules.loop import set_rate, train_until


def run(parts) -> Dict:
    """Train to schedule.steps at optimizer.lr; a rerun with a larger value continues from the last checkpoint."""
    parts.inputs.check_inputs(train=True, test=False)
    parts.restore()
    set_rate(parts, parts.cfg.optimizer.lr, "optimizer.lr")
    scalars = train_until(parts, parts.cfg.schedule.steps)
    return scalars or {"step": int(parts.step.numpy())}
