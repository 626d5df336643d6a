"""schedule=watch: test every checkpoint of a training run as it appears (the seed's test_many).

It runs as a second process beside training, with the training run's own config, and
reads that run's files without locking them. Checkpoints are tested in step order,
those already there when it starts included; a ledger in the watched run
(watch/ledger.json) records each tested step, so a restarted watcher tests only new
ones, and its heartbeat makes training keep every checkpoint not yet tested. Results
and TensorBoard events go to <run>/watch/. It stops when the training run is marked
finished and everything is tested, or after schedule.timeout seconds with nothing new.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict

from worklab.errors import Interrupted
from worklab.run import watchers
from worklab.run.run_config import load_run_config
from worklab.run.runfolder import RunFolder
from worklab.run.session import listed_steps
from worklab.run.summary import read_summary
from worklab.schedules.loop import evaluate

log = logging.getLogger("worklab")


def run(parts) -> Dict:
    """Follow schedule.run until it finishes or goes quiet; return the last test's statistics."""
    s = parts.cfg.schedule
    watched = Path(s.run)
    from worklab.run.parts import Parts

    target = Parts(load_run_config(watched, s), parts.stop, parts.strategy, results_dir=watchers.folder(watched))
    log.info("watching %s (every %gs, timeout %gs)", watched, s.poll, s.timeout)
    last, quiet_since = {}, time.monotonic()
    with watchers.kept_alive(watched):  # fresh however long a backlog of tests takes; removed on exit
        while not parts.stop:
            todo = sorted(set(listed_steps(RunFolder(watched).checkpoints)) - watchers.tested_steps(watched))
            for step in todo:
                if parts.stop:
                    break
                last = test_checkpoint(target, watched, step)
                quiet_since = time.monotonic()
            if todo:
                continue
            if (read_summary(watched) or {}).get("status") == "finished":
                log.info("%s is finished and every checkpoint is tested", watched)
                break
            if time.monotonic() - quiet_since > s.timeout:
                log.info("no new checkpoint for %gs: stopping", s.timeout)
                break
            time.sleep(s.poll)
    if parts.stop:
        raise Interrupted(parts.stop.signal, last.get("step", 0),
                          note=f"the watcher stopped; the steps it tested are in {watchers.folder(watched)}: "
                               "run the same command to test the rest")
    return last


def test_checkpoint(target, watched: Path, step: int) -> Dict:
    """Restore checkpoint `step` of the watched run, test it, and record it in the ledger."""
    target.restore_for_inference(step)
    result = evaluate(target, "test")
    watchers.record_tested(watched, step)
    return result
