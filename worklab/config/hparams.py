"""The run's settings as TensorBoard's HParams dashboard takes them: one scalar per key.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Dict

from worklab.config.schedules import schedule_kind

if TYPE_CHECKING:
    from worklab.config.root import Config


def hparams(cfg: Config) -> Dict[str, Any]:
    """The settings that tell runs apart, flattened to scalars for TensorBoard's HParams dashboard."""
    values = {"seed": cfg.seed, "schedule": schedule_kind(cfg.schedule).name,
              "reader.batch_size": cfg.reader.batch_size, "reader.image_size": cfg.reader.image_size}
    for section in ("network", "optimizer", "loss", "schedule"):
        for key, value in asdict(getattr(cfg, section)).items():
            values[f"{section}.{key}"] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return values
