"""schedule=calibrate: fit a temperature for a run's probabilities on its validation set; write calibration.json.

    python run.py schedule=calibrate resume=RUN [schedule.step=N]

The weights are those test, export and predict use (`Parts.restore_for_inference`:
schedule.step, else the best step, else the latest). The temperature is fitted on the
run's validation set (reader.val, or the images reader.val_split held out); a run
without one is refused, since the test set must never fit anything. It holds the run's
lock like a schedule that trains, so a run still being trained is refused, and it writes
one file, calibration.json: the temperature, the ECE and NLL before and after, the set,
its size and the step.
"""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from worklab.errors import UserError
from worklab.train import temperature
from worklab.train.calibration import expected_calibration_error, reliability

log = logging.getLogger("worklab")


def run(parts) -> Dict:
    if not parts.inputs.has_validation:
        raise UserError(f"schedule=calibrate fits a temperature on the run's validation set, and {parts.run_dir} has "
                        "none (reader.val and reader.val_split are unset); the test set never fits anything. Train "
                        "a run with reader.val_split=0.1 or reader.val=PATH, or pass reader.val=PATH here.")
    step = parts.restore_for_inference(parts.cfg.schedule.step)
    labels, probs, log_probs = parts.validator.outputs()
    fitted = temperature.fit(labels, log_probs)
    after = temperature.scaled(log_probs, fitted)
    record = {"temperature": fitted, "ece_before": ece(labels, probs), "ece_after": ece(labels, np.exp(after)),
              "nll_before": temperature.nll(labels, log_probs), "nll_after": temperature.nll(labels, after),
              "set": "val", "source": parts.inputs.val_images.source, "count": int(len(labels)), "step": step}
    parts.folder.write("calibration.json", record)
    log.info("step %d: temperature %.3f fitted on %d validation images: ECE %.4f -> %.4f, NLL %.4f -> %.4f; "
             "see calibration.json", step, fitted, record["count"], record["ece_before"], record["ece_after"],
             record["nll_before"], record["nll_after"])
    return record


def ece(labels: np.ndarray, probs: np.ndarray) -> float:
    return expected_calibration_error(reliability(labels, probs))
