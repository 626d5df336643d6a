"""What a watcher (schedule=watch) leaves in the run folder it follows, read by both processes.

`<run>/watch/ledger.json` lists the checkpoint steps the watcher has tested, and
`<run>/watch/alive.json` is its heartbeat. Training reads them to keep every checkpoint a
live watcher has not tested yet; a watcher whose heartbeat is older than
HEARTBEAT_TIMEOUT is taken to be gone, so a killed watcher never pins checkpoints forever.
Both files are replaced atomically and neither process locks anything.

The watcher keeps its heartbeat with `kept_alive`: a daemon thread refreshes it every
quarter of the timeout for as long as the block runs, so a backlog of tests longer
than the timeout does not let training prune what is still to test.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Set

from worklab.atomic import write_json
from worklab.run.runfolder import RunFolder, read_state

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 120.0  # seconds


def folder(run_dir: Path) -> Path:
    return RunFolder(run_dir).watch


def tested_steps(run_dir: Path) -> Set[int]:
    ledger = read_state(folder(run_dir) / "ledger.json", ("tested",))
    return set(ledger["tested"]) if ledger else set()


def record_tested(run_dir: Path, step: int) -> None:
    write_json(folder(run_dir) / "ledger.json", {"tested": sorted(tested_steps(run_dir) | {step})})


def heartbeat(run_dir: Path) -> None:
    write_json(folder(run_dir) / "alive.json", {"pid": os.getpid(), "time": time.time()})


def stop_heartbeat(run_dir: Path) -> None:
    (folder(run_dir) / "alive.json").unlink(missing_ok=True)


@contextmanager
def kept_alive(run_dir: Path) -> Iterator[None]:
    """Keep the heartbeat of `run_dir` fresh while the block runs, however long one step of it takes.

    A daemon thread beats every HEARTBEAT_TIMEOUT / 4 seconds (so a missed beat or two
    never looks like a gone watcher); on exit it is stopped and alive.json removed.
    """
    heartbeat(run_dir)
    done = threading.Event()
    thread = threading.Thread(target=_beat, args=(run_dir, done, HEARTBEAT_TIMEOUT / 4), name="watch-heartbeat",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        stop_heartbeat(run_dir)


def _beat(run_dir: Path, done: threading.Event, every: float) -> None:
    while not done.wait(every):
        try:
            heartbeat(run_dir)
        except OSError as error:  # a full disk for a moment: try again next time, the watcher goes on
            log.warning("cannot refresh the watch heartbeat in %s: %s", folder(run_dir), error)


def watcher_alive(run_dir: Path) -> bool:
    path = folder(run_dir) / "alive.json"
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return time.time() - beat["time"] < HEARTBEAT_TIMEOUT


def untested_steps(run_dir: Path, steps: Iterable[int]) -> Set[int]:
    """The steps among `steps` that a live watcher still has to test (none without a watcher)."""
    if not watcher_alive(run_dir):
        return set()
    return set(steps) - tested_steps(run_dir)
