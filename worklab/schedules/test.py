"""schedule=test: evaluate one checkpoint of a run (the seed's test script)."""
from __future__ import annotations

from typing import Dict

from worklab.schedules.loop import evaluate


def run(parts) -> Dict:
    """Restore schedule.step (default: the latest checkpoint) and test it."""
    parts.session.restore_step(parts.cfg.schedule.step)
    return evaluate(parts, "test")
