"""summary.json: a run at a glance, kept current while it goes and read by worklab.review.

It holds the status (running, finished, failed or interrupted), the schedule, the
command-line overrides, the step reached, the best result so far on the set the run
decides on (lowest loss, with its accuracy, step and split: val with a validation
set, else test), the test result reported apart from the decisions (`test`, with a
validation set), the wall time summed over every session that worked in the folder,
and for a failed run the error. It is replaced atomically at
the start, after each checkpoint and test, and at the end.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from worklab.atomic import write_json
from worklab.errors import Interrupted, UserError
from worklab.run.runfolder import RunFolder

FILE = "summary.json"
STATUSES = ("running", "finished", "failed", "interrupted")


def read_summary(run_dir: Path) -> Optional[Dict]:
    """The summary of a run folder, or None if there is none or it cannot be read."""
    try:
        summary = json.loads(RunFolder(run_dir).file(FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


class Summary:
    """The summary of one run folder, carried on from an earlier session in the same folder."""

    def __init__(self, run_dir: Path, schedule: str, overrides: List[str]):
        self.path = RunFolder(run_dir).file(FILE)
        self._earlier = read_summary(run_dir)
        earlier = self._earlier or {}
        self._wall_before = float(earlier.get("wall_time", 0.0))
        self._started = time.time()
        self.data = {"status": "running", "schedule": schedule, "overrides": overrides,
                     "step": earlier.get("step", 0), "best": earlier.get("best"), "wall_time": self._wall_before}
        if earlier.get("test"):
            self.data["test"] = earlier["test"]

    def saved(self, step: int) -> None:
        self._write(step=step)

    def evaluated(self, result: Dict, decides: bool = True) -> None:
        """Note a result. One the run decides on (val, or test without validation) becomes the best if its loss
        is the lowest so far; a test reported apart from the decisions is kept as `test`."""
        entry = {key: result[key] for key in ("loss", "accuracy", "step")}
        entry["split"] = result.get("split", "test")
        if not decides:
            self._write(test=entry)
            return
        best = self.data["best"]
        if best is None or not math.isfinite(best["loss"]) or result["loss"] < best["loss"]:
            best = entry
        self._write(step=max(self.data["step"], result["step"]), best=best)

    def rewound(self, step: int, results: List[Dict]) -> None:
        """Go back to `step`, where training goes on after later checkpoints were lost: the best is chosen again
        among `results`, the evaluations still on record on the set the run decides on."""
        self.data.update(step=step, best=None)
        if (self.data.get("test") or {}).get("step", 0) > step:
            del self.data["test"]
        for result in results:
            self.evaluated(result)
        self._write()

    def restore_earlier(self) -> bool:
        """Put back the summary an earlier session left (after bad input); False if there was none."""
        if not self._earlier:
            return False
        write_json(self.path, self._earlier)
        return True

    def mark(self, status: str, error: Optional[str] = None) -> None:
        assert status in STATUSES, status
        self._write(status=status, **({"error": error} if error else {}))

    def _write(self, **changes) -> None:
        self.data.update(changes, wall_time=round(self._wall_before + time.time() - self._started, 3),
                         updated=round(time.time(), 3))
        write_json(self.path, self.data)


@contextmanager
def tracked(summary: Optional[Summary]) -> Iterator[None]:
    """Mark the run running, then finished, interrupted or failed by how the block ends.

    Bad input (a UserError) leaves an earlier session's summary as it was, so resuming
    with a typo does not mark a good run failed; a run that fails (RunFailed, or any
    other error) is marked failed with the error.
    """
    if summary is None:
        yield
        return
    summary.mark("running")
    try:
        yield
    except (Interrupted, KeyboardInterrupt):  # a stop on request, or a second Ctrl-C
        summary.mark("interrupted")
        raise
    except UserError as error:  # bad input: an existing run keeps its summary, a new one is marked failed
        if not summary.restore_earlier():
            summary.mark("failed", str(error))
        raise
    except BaseException as error:
        summary.mark("failed", f"{error.__class__.__name__}: {error}")
        raise
    summary.mark("finished")
