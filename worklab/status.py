"""The run's status file (status.json): running, finished, failed or interrupted, kept current.

Written atomically by the process that trains in the folder; read by a watcher to know
when training is over, and by anyone reviewing run folders.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from worklab.atomic import write_json
from worklab.errors import Interrupted

STATUSES = ("running", "finished", "failed", "interrupted")


def write_status(run_dir: Path, status: str) -> None:
    assert status in STATUSES, status
    write_json(Path(run_dir) / "status.json", {"status": status, "time": round(time.time(), 3)})


def read_status(run_dir: Path) -> Optional[str]:
    """The status, or None if the folder has none or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def tracked(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Mark the run running, then finished, interrupted or failed by how the block ends."""
    if not enabled:
        yield
        return
    write_status(run_dir, "running")
    try:
        yield
    except Interrupted:
        write_status(run_dir, "interrupted")
        raise
    except BaseException:
        write_status(run_dir, "failed")
        raise
    write_status(run_dir, "finished")
