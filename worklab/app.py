"""Build the parts of a run from a plain config and dispatch on the schedule once.

`run(cfg)` is the whole program behind run.py and can be called without Hydra.
TensorFlow is configured (threads, oneDNN, precision) before it is first imported, so
the modules that import it are imported inside `run`. A schedule that writes the run
folder (train, fixed, patience, hyper, recalibrate) holds its lock for the run; test,
watch, inspect, export and predict only read. Only the schedule that runs is imported.
In a multi-worker cluster the chief holds the lock and writes; the other workers train
beside it, and a schedule that reads a run runs on the chief alone.
"""
from __future__ import annotations

import importlib
import logging
from typing import Dict

from worklab import cluster, runtime
from worklab.command import saved_overrides
from worklab.config import (WRITERS, BitSchedule, Config, CosineSchedule, ExportSchedule, FixedSchedule,
                            HyperSchedule, InspectSchedule, PatienceSchedule, PredictSchedule, RecalibrateSchedule,
                            TestSchedule, TrainSchedule, WatchSchedule, hparams)
from worklab.errors import RunFailed
from worklab.interrupt import StopRequest
from worklab.run import runfolder
from worklab.run.summary import Summary, tracked

log = logging.getLogger("worklab")

SCHEDULES = {TrainSchedule: "train", TestSchedule: "test", FixedSchedule: "fixed", CosineSchedule: "cosine",
             BitSchedule: "bit",
             PatienceSchedule: "patience", HyperSchedule: "hyper", WatchSchedule: "watch", InspectSchedule: "inspect",
             RecalibrateSchedule: "recalibrate", ExportSchedule: "export", PredictSchedule: "predict"}
# They own summary.json (bit too: `settle` makes its schedule a fixed one).
SUMMARISED = (TrainSchedule, FixedSchedule, CosineSchedule, PatienceSchedule, HyperSchedule)


def run(cfg: Config) -> Dict:
    """Run the configured schedule in cfg.run_dir and return its final metrics."""
    trains, chief = isinstance(cfg.schedule, WRITERS), cluster.is_chief(cfg.runtime.strategy)
    if not (trains or chief):
        log.info("%s: schedule=%s reads a run on the chief alone; nothing to do here", cluster.task().describe(),
                 SCHEDULES[type(cfg.schedule)])
        return {}
    if trains and chief:
        runfolder.lock(cfg.run_dir)
        runfolder.check_writable(cfg.run_dir)
    tf = runtime.configure(cfg.runtime, cfg.seed)
    from worklab import distribute
    from worklab.run.parts import Parts

    strategy = distribute.build(cfg.runtime, cfg.reader.batch_size, trains)

    name = SCHEDULES[type(cfg.schedule)]
    schedule = importlib.import_module(f"worklab.schedules.{name}")
    log.info("run folder: %s", cfg.run_dir)
    with StopRequest() as signals, strategy.scope():  # every part is built and run under the strategy
        stop = distribute.agreed(signals, strategy)
        if hasattr(schedule, "settle"):  # a schedule that chooses settings from the data (bit)
            cfg = schedule.settle(cfg, stop)
        parts = Parts(cfg, stop)
        if isinstance(cfg.schedule, SUMMARISED) and parts.chief:
            parts.summary = Summary(parts.run_dir, name, saved_overrides(parts.run_dir))
        with tracked(parts.summary):
            if parts.summary:
                parts.writer.hparams({**hparams(cfg), "schedule": name})  # bit, not the fixed it runs as
            try:
                result = schedule.run(parts)
            except tf.errors.ResourceExhaustedError as error:
                raise RunFailed(f"out of memory at reader.image_size={cfg.reader.image_size} and "
                                f"reader.batch_size={cfg.reader.batch_size}: lower one of them "
                                f"({str(error).strip().splitlines()[0][:200]})") from None
            except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
                if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                    raise
                raise RunFailed(f"lost contact with another worker of the cluster ({type(error).__name__}). Start "
                                "every worker again with the same command: the run resumes from its last "
                                f"checkpoint in {cfg.run_dir}/checkpoints.") from None
            except tf.errors.InvalidArgumentError as error:
                _name_bad_images(parts, error)
                raise
        best = parts.summary and parts.summary.data["best"]
        if best:
            parts.writer.final(parts.summary.data["step"], best)
        return result


def _name_bad_images(parts, error: Exception) -> None:
    """After a decoding failure in TensorFlow, find the images that do not decode and name them.

    Every listed image is decoded before the first step, so this only runs when a file
    changed during the run, and only for errors that come from decoding an image.
    """
    if not any(word in str(error) for word in ("decode", "Decode", "image", "JPEG", "PNG")):
        return
    from worklab.data.reader import find_undecodable

    bad = [p for images in parts.loaded_image_lists() for p in find_undecodable(images.paths)]
    if bad:
        raise RunFailed(f"{len(bad)} image(s) cannot be decoded any more (changed during the run?): "
                        f"{', '.join(bad[:5])}. Fix or remove them, then resume.") from error
