"""What a watcher (schedule=watch) leaves in the run folder it follows, read by both processes.

`<run>/watch/ledger.json` lists the checkpoint steps the watcher has tested, and
`<run>/watch/alive.json` is its heartbeat. Training reads them to keep every checkpoint a
live watcher has not tested yet; a watcher whose heartbeat is older than
HEARTBEAT_TIMEOUT is taken to be gone, so a killed watcher never pins checkpoints forever.
Both files are replaced atomically and neither process locks anything.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable, Set

from worklab.atomic import write_json

HEARTBEAT_TIMEOUT = 120.0  # seconds


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / "watch"


def tested_steps(run_dir: Path) -> Set[int]:
    path = folder(run_dir) / "ledger.json"
    return set(json.loads(path.read_text())["tested"]) if path.is_file() else set()


def record_tested(run_dir: Path, step: int) -> None:
    write_json(folder(run_dir) / "ledger.json", {"tested": sorted(tested_steps(run_dir) | {step})})


def heartbeat(run_dir: Path) -> None:
    write_json(folder(run_dir) / "alive.json", {"pid": os.getpid(), "time": time.time()})


def stop_heartbeat(run_dir: Path) -> None:
    (folder(run_dir) / "alive.json").unlink(missing_ok=True)


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
