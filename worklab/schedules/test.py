"""schedule=test: evaluate one checkpoint of a run (the seed's test script)."""
from __future__ import annotations

from typing import Dict

from worklab.errors import UserError
from worklab.schedules.loop import evaluate


def run(parts) -> Dict:
    """Restore schedule.step (default: the latest checkpoint) and evaluate it on schedule.split."""
    s = parts.cfg.schedule
    if s.split == "val" and not parts.inputs.has_validation:
        raise UserError(f"schedule.split=val: {parts.run_dir} has no validation set (reader.val or reader.val_split).")
    parts.restore_for_inference(s.step, default="latest")
    return evaluate(parts, s.split)
