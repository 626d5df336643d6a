"""Build the parts of a run from a plain config and dispatch on the schedule once.

`run(cfg)` is the whole program behind run.py and can be called without Hydra.
TensorFlow is configured (threads, oneDNN, precision) before it is first imported, so
the modules that import it are imported inside `run`.
"""
from __future__ import annotations

import logging
from typing import Dict

from worklab import runtime
from worklab.config import (Config, FixedSchedule, HyperSchedule, InspectSchedule, PatienceSchedule,
                            RecalibrateSchedule, TestSchedule, TrainSchedule, WatchSchedule, hparams, saved_overrides)
from worklab.errors import UserError
from worklab.summary import Summary, tracked
from worklab.interrupt import StopRequest

log = logging.getLogger("worklab")



def run(cfg: Config) -> Dict:
    """Run the configured schedule in cfg.run_dir and return its final metrics."""
    tf = runtime.configure(cfg.runtime, cfg.seed)
    from worklab.parts import Parts
    from worklab.schedules import fixed, hyper, inspect, patience, recalibrate, test, train, watch

    schedule = {TrainSchedule: train, TestSchedule: test, FixedSchedule: fixed, PatienceSchedule: patience,
                HyperSchedule: hyper, WatchSchedule: watch, InspectSchedule: inspect,
                RecalibrateSchedule: recalibrate}[type(cfg.schedule)]
    log.info("run folder: %s", cfg.run_dir)
    with StopRequest() as stop:
        parts = Parts(cfg, stop)
        # the schedules that train own their run folder's summary; test and watch only read runs
        if schedule in (fixed, train, patience, hyper):
            name = schedule.__name__.rsplit(".", 1)[1]
            parts.summary = Summary(parts.run_dir, name, saved_overrides(parts.run_dir))
            parts.writer.hparams(hparams(cfg))
        with tracked(parts.summary):
            try:
                result = schedule.run(parts)
            except tf.errors.OpError as error:
                _name_bad_images(parts, error)
                raise
        best = parts.summary and parts.summary.data["best"]
        if best:
            parts.writer.final(parts.summary.data["step"], best)
        return result


def _name_bad_images(parts, error: Exception) -> None:
    """After a TensorFlow failure, find images that do not decode and name them if there are any."""
    from worklab.reader import find_undecodable

    bad = [p for images in parts.loaded_image_lists() for p in find_undecodable(images.paths)]
    if bad:
        raise UserError(f"{len(bad)} image(s) cannot be decoded: {', '.join(bad[:5])}. "
                        "Fix or remove them from the list.") from error
