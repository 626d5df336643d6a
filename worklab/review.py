"""Review runs: one table of every run below some folders, read from their summary.json files.

Usage:
    python -m worklab.review PATH [PATH ...] [--sort KEY] [--csv FILE] [--markdown] [--wide]

    python -m worklab.review outputs multirun
    python -m worklab.review multirun/2026-11-26 --sort loss --csv runs.csv
    python -m worklab.review outputs/2026-11-26/10-11-12 --markdown   # a hyper search and its sub-runs

Every folder at or below a PATH that holds a summary.json is a run: single runs
(outputs/DATE/TIME), multirun jobs (multirun/DATE/TIME/N, multirun/NAME/OVERRIDES) and
the sub-runs of a hyper search (RUN/PARAM=VALUE). A job folder of a schedule that reads
a run (test, predict, export, inspect, watch: its .hydra/overrides.yaml names it) is a
row too, shown as that schedule: status 'done' with the test's loss, accuracy and ECE
when its result is there (a test's evaluation, predict's predictions and, for labelled
images, its evaluation.json), 'no result' when it is not (it failed or is still
running), '-' for the schedules whose result is written elsewhere (an export into the
run). checkpoints/, tensorboard/,
evaluations/, watch/ and hidden folders such as .hydra/ are not searched: they never
hold runs and can be large.

Each row shows, to fit a terminal, the run's folder (relative to the folder the PATHs
have in common), its schedule, its status, the step reached, the set its choices were
made on ('chosen on': val with a validation set, else test), its best result there (the
lowest loss, with the accuracy), its test loss and accuracy (with a validation set, the
test of the chosen step, reported apart; without one, the best test itself), that
test's expected calibration error (from its evaluation file) and its wall time. --wide
adds the step of the best result and the overrides, without those every run shares.
'<- best' marks the lowest best loss (every row that has it, so a hyper search and its
best sub-run are both marked). '-' is a missing value; a summary.json that is not a
readable JSON object gives a row with status 'unreadable'. A run said to be finished
whose newest complete checkpoint is older than its last step (the newest was lost) has
status 'ckpt lost': resuming it trains those steps again.

--sort run (the default) orders runs naturally (job 2 before job 10, lr=0.05 before
lr=0.1); status sorts alphabetically; steps, loss, test_loss, ece and wall_time sort
ascending and accuracy and test_accuracy descending, so the best run leads under both loss and accuracy.
Rows without the value come last, ties keep run order. --csv FILE also writes the rows
with every override and raw numbers (seconds for wall time, empty when missing).

Exit codes: 0 the table was printed; 1 no run was found; 2 a PATH is missing or not a
folder, the CSV file cannot be written, or the arguments are wrong.

It reads JSON only and does not import TensorFlow, so it answers at once.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shlex
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set

import yaml

from worklab.config.schedules import SCHEDULES
from worklab.errors import UserError
from worklab.run.checkpoints import CheckpointFolder
from worklab.run.runfolder import RunFolder, read_state
from worklab.run.summary import FILE, read_summary

# Folders of a run that never hold runs themselves; hidden folders (.hydra) are skipped too.
NOT_RUNS = {"checkpoints", "tensorboard", "evaluations", "watch", "export", "superseded", "workers"}
MISSING = "-"
BEST = "<- best"
LOST = "ckpt lost"
READING = {kind.name for kind in SCHEDULES if kind.reads}  # schedules whose jobs have folders of their own
HEADERS = ["run", "schedule", "status", "steps", "chosen on", "best loss", "accuracy", "test loss", "test accuracy",
           "ECE", "wall time", ""]
WIDE = {"at step": "accuracy", "overrides": ""}  # the --wide columns, each after the one named
NUMBERS = {"steps", "best loss", "accuracy", "at step", "test loss", "test accuracy", "ECE", "wall time"}
SORT_KEYS = ["run", "status", "steps", "loss", "accuracy", "test_loss", "test_accuracy", "ece", "wall_time"]
DESCENDING = {"accuracy", "test_accuracy"}
NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


@dataclass
class Row:
    """What the review shows of one run; None where its summary has no usable value."""

    run: str
    schedule: Optional[str] = None
    overrides: Optional[List[str]] = None
    status: Optional[str] = None
    steps: Optional[float] = None
    chosen_on: Optional[str] = None  # the split of the best result: val, or test without a validation set
    loss: Optional[float] = None
    accuracy: Optional[float] = None
    best_step: Optional[float] = None
    test_loss: Optional[float] = None
    test_accuracy: Optional[float] = None
    ece: Optional[float] = None  # of the test
    wall_time: Optional[float] = None


def find_runs(top: str) -> Iterator[str]:
    """Yield every folder at or below `top` that holds a summary.json, or is the folder of a reading job.

    Folders that never hold runs are pruned, so a walk over many runs does not list
    their checkpoints and event files.
    """
    for folder, subfolders, files in os.walk(top):
        subfolders[:] = [name for name in subfolders if name not in NOT_RUNS and not name.startswith(".")]
        if FILE in files or job_schedule(folder):
            yield folder


def job_schedule(folder: str) -> Optional[str]:
    """The schedule of the reading job whose folder `folder` is (its saved overrides name it), else None."""
    path = Path(folder) / ".hydra" / "overrides.yaml"
    if (Path(folder) / FILE).exists() or not path.is_file():
        return None
    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return None
    named = [o.split("=", 1)[1] for o in overrides if isinstance(o, str) and o.startswith("schedule=")]
    return named[-1] if named and named[-1] in READING else None


def read_job(folder: str, name: str, schedule: str) -> Row:
    """The row of a reading job: its schedule, whether its result is there, and the test it made."""
    job = RunFolder(Path(folder))
    if schedule == "test":
        steps = job.evaluated_steps("test")
        found = read_state(job.evaluation(steps[-1], "test")) if steps else None
    elif schedule == "predict":
        found = read_state(job.path / "evaluation.json") or ({} if (job.path / "predictions.jsonl").is_file() else None)
    else:
        return Row(name, schedule=schedule)
    if found is None:
        return Row(name, schedule=schedule, status="no result")
    return Row(name, schedule=schedule, status="done", steps=number(found.get("step")),
               test_loss=number(found.get("loss")), test_accuracy=number(found.get("accuracy")),
               ece=number(found.get("ece")))


def label_base(folders: Sequence[str]) -> str:
    """The folder run names are relative to: the one the given folders share, or its parent if it is a run.

    Stepping up from a run keeps that run's own row from being named '.'.
    """
    base = os.path.commonpath(folders)
    return os.path.dirname(base) if os.path.isfile(os.path.join(base, FILE)) or job_schedule(base) else base


def number(value) -> Optional[float]:
    """`value` if it is a finite number, else None (a hand-edited summary may hold anything)."""
    usable = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if usable else None


def read_row(folder: str, base: str) -> Row:
    """The row of the run in `folder`, with status 'unreadable' if its summary cannot be read."""
    name = os.path.relpath(folder, base)
    schedule = job_schedule(folder)
    if schedule:
        return read_job(folder, name, schedule)
    summary = read_summary(Path(folder))
    if summary is None:
        return Row(name, status="unreadable")
    best = summary.get("best") if isinstance(summary.get("best"), dict) else {}
    chosen_on = best.get("split", "test") if best else None  # summaries from before validation have no split
    test = summary.get("test") if isinstance(summary.get("test"), dict) else best if chosen_on == "test" else {}
    overrides = summary.get("overrides")
    status = summary.get("status") if isinstance(summary.get("status"), str) else None
    steps = number(summary.get("step"))
    if status == "finished" and steps and _newest_checkpoint(folder) < steps:
        status = LOST
    schedule = summary.get("schedule")
    return Row(name, schedule=schedule if isinstance(schedule, str) else None,
               overrides=[str(o) for o in overrides] if isinstance(overrides, list) else None,
               status=status, steps=steps,
               chosen_on=chosen_on if isinstance(chosen_on, str) else None,
               loss=number(best.get("loss")), accuracy=number(best.get("accuracy")),
               best_step=number(best.get("step")), test_loss=number(test.get("loss")),
               test_accuracy=number(test.get("accuracy")), ece=_ece(folder, number(test.get("step"))),
               wall_time=number(summary.get("wall_time")))


def _newest_checkpoint(folder: str) -> float:
    """The step of the run's newest complete checkpoint; infinite when it keeps none (nothing to compare)."""
    checkpoints = RunFolder(Path(folder)).checkpoints
    steps = CheckpointFolder(checkpoints).steps() if checkpoints.is_dir() else []
    return max(steps, default=math.inf)


def _ece(folder: str, step: Optional[float]) -> Optional[float]:
    """The ECE in the evaluation file of the test of `step`; None without one (or from before ECE)."""
    if step is None:
        return None
    try:
        evaluation = read_state(RunFolder(Path(folder)).evaluation(int(step), "test"))
    except UserError:  # a damaged file is one missing value in a review, not a stop
        return None
    return number(evaluation.get("ece")) if isinstance(evaluation, dict) else None


def collect(paths: Sequence[str]) -> List[Row]:
    """One row per run folder below `paths`, each run once even where the paths overlap."""
    folders = [os.path.abspath(path) for path in paths]
    base = label_base(folders)
    runs = dict.fromkeys(run for folder in folders for run in find_runs(folder))
    return [read_row(run, base) for run in runs]


def natural(text: str) -> list:
    """A sort key that compares the numbers in `text` by value, so that 2 < 10 and 0.05 < 0.1."""
    return [float(part) if i % 2 else part for i, part in enumerate(NUMBER.split(text))]


def sort_rows(rows: List[Row], key: str) -> List[Row]:
    """`rows` ordered by `key` (a SORT_KEYS name), rows without the value last, ties in run order."""
    ordered = sorted(rows, key=lambda row: (natural(row.run), row.run))
    if key == "run":
        return ordered
    present = [row for row in ordered if getattr(row, key) is not None]
    missing = [row for row in ordered if getattr(row, key) is None]
    return sorted(present, key=lambda row: getattr(row, key), reverse=key in DESCENDING) + missing


def shared_overrides(rows: List[Row]) -> Set[str]:
    """The overrides every run with known overrides has; none when there is only one such run.

    Shared overrides do not tell the runs apart, so the table leaves them out.
    """
    known = [set(row.overrides) for row in rows if row.overrides is not None]
    return set.intersection(*known) if len(known) > 1 else set()


def duration(seconds: Optional[float]) -> str:
    """Seconds as 45s, 1m05s or 2h03m09s."""
    if seconds is None:
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def decimals(value: Optional[float], places: int) -> str:
    return MISSING if value is None else f"{value:.{places}f}"


def headers(wide: bool) -> List[str]:
    """The columns shown: HEADERS, and with `wide` each WIDE column after the one it follows."""
    shown = list(HEADERS)
    for column, after in WIDE.items() if wide else ():
        shown.insert(shown.index(after) + 1 if after else len(shown), column)
    return shown


def cells(row: Row, shared: Set[str], best_loss: Optional[float]) -> Dict[str, str]:
    """The text of every column of `row`, by header, without the `shared` overrides."""
    overrides = [o for o in row.overrides or [] if o not in shared]
    return {"run": row.run, "schedule": row.schedule or MISSING, "status": row.status or MISSING,
            "steps": decimals(row.steps, 0), "chosen on": row.chosen_on or MISSING, "best loss": decimals(row.loss, 4),
            "accuracy": decimals(row.accuracy, 3), "at step": decimals(row.best_step, 0),
            "test loss": decimals(row.test_loss, 4), "test accuracy": decimals(row.test_accuracy, 3),
            "ECE": decimals(row.ece, 3), "wall time": duration(row.wall_time),
            "": BEST if row.loss is not None and row.loss == best_loss else "",
            "overrides": shlex.join(overrides) if overrides else MISSING}


def table(rows: List[Row], wide: bool = False) -> List[List[str]]:
    """The header and one line of cells per row, the lowest test loss marked."""
    shared = shared_overrides(rows)
    best_loss = min((row.loss for row in rows if row.loss is not None), default=None)
    shown = headers(wide)
    return [shown] + [[line[column] for column in shown] for line in (cells(row, shared, best_loss) for row in rows)]


def aligned(lines: List[List[str]]) -> str:
    """The table as padded text columns, numbers right-aligned, with a rule under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rule = ["-" * width for width in widths]
    return "\n".join("  ".join(cell.rjust(width) if name in NUMBERS else cell.ljust(width)
                               for name, cell, width in zip(lines[0], line, widths)).rstrip()
                     for line in [lines[0], rule, *lines[1:]])


def markdown(lines: List[List[str]]) -> str:
    """The table in Markdown, numbers right-aligned and '|' in a cell escaped."""
    rule = ["---:" if name in NUMBERS else "---" for name in lines[0]]
    rows = [[cell.replace("|", "\\|") for cell in line] for line in lines]
    return "\n".join("| " + " | ".join(line) + " |" for line in [rows[0], rule, *rows[1:]])


def write_csv(path: str, rows: List[Row]) -> None:
    """Write `rows` as CSV with every override, raw numbers, empty cells for missing values, and no mark."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(Row)])
        writer.writeheader()
        for row in rows:
            writer.writerow({**asdict(row), "overrides": None if row.overrides is None else shlex.join(row.overrides)})


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worklab.review", description=__doc__.splitlines()[0],
                                     epilog="exit codes: 0 table printed, 1 no run found, 2 missing PATH, "
                                            "unwritable CSV file or bad arguments")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folders to search for runs, at any depth")
    parser.add_argument("--sort", default="run", choices=SORT_KEYS,
                        help="run (natural, default), status, steps, loss, test_loss, ece, wall_time ascending; "
                             "accuracy, test_accuracy descending")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows to FILE as CSV")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead of aligned text")
    parser.add_argument("--wide", action="store_true", help="also show the best result's step and the overrides")
    args = parser.parse_args(argv)
    return args


def path_problem(path: str) -> Optional[str]:
    """Why `path` cannot be searched, or None if it is a folder."""
    if not os.path.exists(path):
        return f"{path}: no such file or folder"
    return None if os.path.isdir(path) else f"{path}: not a folder"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the table of the runs below the given paths; return the exit code."""
    args = parse_args(argv)
    problems = [problem for problem in map(path_problem, args.paths) if problem]
    for problem in problems:
        print(f"review: {problem}", file=sys.stderr)
    if problems:
        return 2
    rows = sort_rows(collect(args.paths), args.sort)
    if not rows:
        print(f"review: no runs (folders with a {FILE}) below {' '.join(args.paths)}", file=sys.stderr)
        return 1
    if args.csv:
        try:
            write_csv(args.csv, rows)
        except OSError as error:
            print(f"review: cannot write {args.csv}: {error.strerror or error}", file=sys.stderr)
            return 2
    print((markdown if args.markdown else aligned)(table(rows, args.wide)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
