"""Build the parts of a run from a plain config and dispatch on the schedule once.

`run(cfg)` is the whole program behind run.py and can be called without Hydra.
TensorFlow is configured (threads, oneDNN, precision) before it is first imported, so
the modules that import it are imported inside `run`. The schedule registry
(worklab.config.schedules.SCHEDULES) says how each schedule treats a run folder: one
that writes (train, fixed, cosine, bit, patience, hyper, recalibrate) holds its lock for
the run; one that reads a run named by resume= (test, inspect, export) builds its parts
on that run and writes its results into the job's own folder (cfg.run_dir), never over
the run's records. Only the schedule that runs is imported. In a multi-worker cluster the chief
holds the lock and writes; the other workers train beside it, and a schedule that reads
a run runs on the chief alone.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Dict

from worklab import cluster, runtime
from worklab.command import saved_overrides
from worklab.config.hparams import hparams
from worklab.config.root import Config
from worklab.config.schedules import schedule_kind
from worklab.errors import RunFailed
from worklab.interrupt import StopRequest
from worklab.run import runfolder
from worklab.run.summary import Summary, tracked

log = logging.getLogger("worklab")


def run(cfg: Config) -> Dict:
    """Run the configured schedule and return its final metrics."""
    kind, chief = schedule_kind(cfg.schedule), cluster.is_chief(cfg.runtime.strategy)
    if not (kind.writes or chief):
        log.info("%s: schedule=%s reads a run on the chief alone; nothing to do here", cluster.task().describe(),
                 kind.name)
        return {}
    results = Path(cfg.run_dir)
    if kind.reads == "resume" and cfg.resume:  # the run read; its results go to the job's own folder
        cfg = dataclasses.replace(cfg, run_dir=cfg.resume)
    if kind.writes and chief:
        runfolder.lock(cfg.run_dir)
        runfolder.check_writable(cfg.run_dir)
    tf = runtime.configure(cfg.runtime, cfg.seed)
    from worklab import distribute
    from worklab.run.parts import Parts

    strategy = distribute.build(cfg.runtime, cfg.reader.batch_size, kind.writes)
    schedule = importlib.import_module(kind.module)
    log.info("run folder: %s%s", cfg.run_dir, "" if results == Path(cfg.run_dir) else f"; results in {results}")
    with StopRequest() as signals, strategy.scope():  # every part is built and run under the strategy
        stop = distribute.agreed(signals, strategy)
        if hasattr(schedule, "settle"):  # a schedule that chooses settings from the data (bit)
            cfg = schedule.settle(cfg)
        parts = Parts(cfg, stop, strategy, results_dir=results)
        if kind.summarised and parts.chief:
            parts.summary = Summary(parts.run_dir, kind.name, saved_overrides(parts.run_dir))
        with tracked(parts.summary):
            if parts.summary:
                parts.writer.hparams({**hparams(cfg), "schedule": kind.name})  # bit, not the fixed it runs as
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

    bad = [p for images in parts.inputs.loaded_image_lists() for p in find_undecodable(images.paths)]
    if bad:
        raise RunFailed(f"{len(bad)} image(s) cannot be decoded any more (changed during the run?): "
                        f"{', '.join(bad[:5])}. Fix or remove them, then resume.") from error
