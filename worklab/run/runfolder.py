"""A run folder as one unit of state: who may write it, and a refused command that leaves it as it was.

- The lock. A process that trains in a run folder holds an exclusive lock on
  `<run>/.lock` (fcntl.flock) for as long as it lives; the file names the holder (pid,
  host, start time). A second writer stops at once with that name. The kernel drops the
  lock when its process dies, so a killed run never blocks its own resume. Readers
  (test, watch, inspect) take no lock and never write checkpoints.
- The refusal. `Snapshot` records the folder before Hydra writes `.hydra/` into it; a
  command refused later (bad input found after the job started) puts back every file
  it changed and removes the files it added, so the folder is byte for byte as it was.
- The checks at start: the folder and its checkpoints folder are writable, and the disk
  has room for a checkpoint.
- `RunFolder`: the path of every file a run holds, its JSON state files read through one
  guard (a damaged or hand-edited file is one line naming it, not a traceback), and one
  answer to "may this process write here?" (it holds the lock; only a chief takes it).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from worklab.atomic import write_json
from worklab.errors import UserError
from worklab.run.checkpoints import CheckpointFolder

log = logging.getLogger(__name__)

LOCK = ".lock"
OWNED_ELSEWHERE = ("watch", "workers")  # written by a watcher, and by a cluster's other workers
SMALL = 1 << 20  # files up to this size are kept whole in a snapshot; larger ones only grow (logs)
_held: Dict[Path, int] = {}  # run folder -> open lock file descriptor, for this process's lifetime


def lock(run_dir: Path) -> None:
    """Hold the exclusive lock of `run_dir` until the process ends; refuse if another process holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"Cannot write in {run_dir}: {error.strerror}. A run trains in a folder it can write: "
                        "pass hydra.run.dir=... or run_name=... for a new one (schedule=test and schedule=export "
                        "read a run that cannot be written).") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"Run folder {run_dir} is in use by {describe_holder(run_dir)}. Wait for it to finish, "
                        "or stop it (Ctrl-C saves and stops) and run the command again.") from None
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    _held[run_dir] = fd


def release(run_dir: Path) -> None:
    """Give up the lock of `run_dir` if this process holds it."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)


def holds_lock(run_dir: Path) -> bool:
    return Path(run_dir).resolve() in _held


def describe_holder(run_dir: Path, tries: int = 10) -> str:
    """'process 123 on host since 2026-11-25 10:11:12', from the lock file.

    A holder that has just taken the lock may not have written its name yet: look again
    for up to a second before saying only that another process holds it.
    """
    for attempt in range(tries):
        try:
            holder = json.loads((Path(run_dir) / LOCK).read_text())
            return f"process {holder['pid']} on {holder['host']} since {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.1)
    return "another process that has just started"


def check_writable(run_dir: Path) -> None:
    """Write and remove a small file in the run folder and its checkpoints folder; a clear error if that fails."""
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        probe = folder / f".write-test-{os.getpid()}"
        try:
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise UserError(f"Cannot write in {folder}: {error.strerror}. Pick a folder you can write "
                            "(hydra.run.dir=..., or resume= a copy of the run).") from None


def warn_if_disk_low(run_dir: Path, checkpoint_bytes: int) -> None:
    """Warn when the disk has less room than two checkpoints need."""
    free = shutil.disk_usage(run_dir).free
    if free < 2 * checkpoint_bytes:
        log.warning("only %.1f MB free on the disk of %s; one checkpoint needs about %.1f MB",
                    free / 1e6, run_dir, checkpoint_bytes / 1e6)


@dataclass
class Snapshot:
    """What a run folder held before a command started: small files whole, sizes of large ones."""

    run_dir: Path
    contents: Dict[str, bytes] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    folders: Set[str] = field(default_factory=set)

    @classmethod
    def take(cls, run_dir: Path) -> Optional["Snapshot"]:
        """A snapshot of an existing run folder (None if there is no folder yet)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            return None
        folders, paths = _walk(run_dir)
        snapshot = cls(run_dir, folders={str(p.relative_to(run_dir)) for p in folders})
        for path in paths:
            relative, size = str(path.relative_to(run_dir)), path.stat().st_size
            snapshot.sizes[relative] = size
            if size <= SMALL:
                snapshot.contents[relative] = path.read_bytes()
        return snapshot

    def put_back(self) -> None:
        """Undo what the command wrote: changed files restored, grown logs cut back, new files removed.

        Files the watcher of this run writes (watch/) and the logs of a cluster's other workers
        (workers/, which each removes itself) are left alone and not even listed: other
        processes own them and may remove them meanwhile. A lock file this command created
        goes too, and with it the lock: call this just before exiting.
        """
        if LOCK not in self.sizes:
            release(self.run_dir)
        for path in _walk(self.run_dir)[1]:
            relative = str(path.relative_to(self.run_dir))
            if relative not in self.sizes:
                path.unlink()
            elif relative in self.contents:
                if path.read_bytes() != self.contents[relative]:
                    path.write_bytes(self.contents[relative])
            elif path.stat().st_size > self.sizes[relative]:
                os.truncate(path, self.sizes[relative])
        for relative, data in self.contents.items():
            if not (self.run_dir / relative).exists():
                (self.run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                (self.run_dir / relative).write_bytes(data)
        for folder in sorted(_walk(self.run_dir)[0], key=lambda p: len(p.parts), reverse=True):
            if str(folder.relative_to(self.run_dir)) not in self.folders and not any(folder.iterdir()):
                folder.rmdir()


def _walk(run_dir: Path) -> Tuple[List[Path], List[Path]]:
    """The folders and regular files under `run_dir`, without descending into OWNED_ELSEWHERE."""
    folders, files = [], []
    for top, names, file_names in os.walk(run_dir):
        top = Path(top)
        if top == run_dir:
            names[:] = [name for name in names if name not in OWNED_ELSEWHERE]
        folders += [top / name for name in names if not (top / name).is_symlink()]
        files += [top / name for name in file_names if (top / name).is_file() and not (top / name).is_symlink()]
    return folders, files



class RunFolder:
    """One run folder: where each of its files is, its state files read and written, and who may write it.

    Layout (README, "The run folder", says who writes each):
      .hydra/config.yaml, .hydra/overrides.yaml   the config the run was composed with (Hydra)
      settled.json          settings the schedule decided at run time (BiT's crop), applied on every resume
      lists.json            fingerprints of the training, validation and test lists the run was trained on
      classes.json, split.json, checked_images.json, restore_report.json
      leakage.json          copies of one image across and within the lists (worklab.data.leakage)
      checkpoints/          the checkpoints and their index (worklab.run.checkpoints)
      evaluations/[val/]step-N.json, metrics.jsonl, tensorboard/   results (worklab.run.writer)
      summary.json, best.json, state.json, bit.json, hyper.txt      the schedule's record
      calibration.json      the temperature schedule=calibrate fitted on the validation set
      export/step-N/        exports; watch/ a watcher's ledger; workers/ a cluster's other workers' logs
      superseded/           records of steps whose checkpoints were lost, moved aside when the run went back
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # Where each file is -----------------------------------------------------------------------

    def file(self, name: str) -> Path:
        """A file of the run folder by its name (one of FILES)."""
        assert name in FILES, name
        return self.path / name

    @property
    def saved_config(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def saved_overrides(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def evaluations(self) -> Path:
        return self.path / "evaluations"

    def evaluation(self, step: int, split: str = "test") -> Path:
        """evaluations/step-N.json (the test set) or evaluations/val/step-N.json (the validation set)."""
        return (self.evaluations / "val" if split == "val" else self.evaluations) / f"step-{step:06d}.json"

    def evaluated_steps(self, split: str = "test") -> List[int]:
        """The steps that have an evaluation file on `split`, in order."""
        folder = self.evaluations / "val" if split == "val" else self.evaluations
        return sorted(int(p.stem[5:]) for p in folder.glob("step-*.json") if p.stem[5:].isdigit())

    @property
    def exports(self) -> Path:
        return self.path / "export"

    @property
    def watch(self) -> Path:
        return self.path / "watch"

    @property
    def workers(self) -> Path:
        return self.path / "workers"

    # State files ------------------------------------------------------------------------------

    def read(self, name: str, keys: Iterable[str] = ()) -> Optional[Any]:
        """The JSON state file `name` (None when there is none); a damaged one is refused with one line.

        `keys` are the fields the file must have: a file that is not JSON, not an object,
        or lacks one of them is refused, naming the file and what to do.
        """
        return read_state(self.file(name), keys)

    def write(self, name: str, data: Any) -> None:
        """Replace the JSON state file `name` atomically (only the lock holder writes a run's state)."""
        assert self.writable, f"{self} is written only by the process that holds its lock"
        write_json(self.file(name), data)

    def best(self) -> Optional[Dict]:
        """best.json: the step a patience or hyper run chose, with its results (None before it ends)."""
        return self.read("best.json", ("step", "loss"))

    def temperature(self, step: int) -> float:
        """The temperature schedule=calibrate fitted for checkpoint `step` (calibration.json); 1.0 if none was."""
        data = self.read("calibration.json", ("temperature", "step"))
        return float(data["temperature"]) if data and data["step"] == step else 1.0

    def settled(self) -> Dict[str, Any]:
        """settled.json's settings, `key: value` for dotted config keys ({} when nothing was settled)."""
        data = self.read("settled.json", ("by", "settings"))
        return dict(data["settings"]) if data else {}

    def set_aside_after(self, step: int) -> List[Path]:
        """Move the records that describe weights no checkpoint holds any more into superseded/; return them.

        After the newest checkpoints were lost (damaged, deleted) a run goes on from an
        older one, `step`: the evaluations of later steps, and a best.json naming a later
        step or one whose checkpoint is gone, describe weights that no longer exist. Moved
        aside (never deleted), they no longer count as done, so the steps are trained and
        tested again and the record describes the model it has.
        """
        later = [self.evaluation(s, split) for split in ("test", "val")
                 for s in self.evaluated_steps(split) if s > step]
        best = read_state(self.file("best.json"))
        kept = CheckpointFolder(self.checkpoints).steps()
        if isinstance(best, dict) and (best.get("step", 0) > step or best.get("step") not in kept):
            later.append(self.file("best.json"))
        for path in later:
            aside = self.path / "superseded" / path.relative_to(self.path)
            aside.parent.mkdir(parents=True, exist_ok=True)
            path.replace(aside)
        return later

    # Who may write ----------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """May this process write the run's records? Only the holder of its lock (a cluster's chief)."""
        return holds_lock(self.path)

    def lock(self) -> None:
        lock(self.path)


# The state files a run folder holds at its top level, and what writes each.
FILES = {
    "settled.json": "a schedule that settles settings at run time (bit)",
    "lists.json": "every training schedule, from the lists it trains, validates and tests on",
    "classes.json": "the first training session, from the training list",
    "split.json": "the first training session with reader.val_split",
    "checked_images.json": "every training session, from the image check",
    "leakage.json": "every training session, the copies the image check's hashes found across and within the lists",
    "restore_report.json": "a fresh start from restore.path",
    "summary.json": "train, fixed, cosine, bit, patience, hyper",
    "best.json": "patience and hyper, when they end",
    "state.json": "patience and hyper, after every test",
    "bit.json": "bit, what its HyperRule chose",
    "hyper.txt": "hyper, its table",
    "metrics.jsonl": "every evaluation",
    "calibration.json": "calibrate, the temperature fitted on the validation set",
}


def read_state(path: Path, keys: Iterable[str] = ()) -> Optional[Any]:
    """A JSON state file of a run folder (None when missing); refused, naming the file, when damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read ({_first_line(error)}). {_what_to_do(path)}") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise UserError(f"{path} is damaged: it has no {', '.join(missing)}. {_what_to_do(path)}")
    return data


def _what_to_do(path: Path) -> str:
    return (f"worklab writes it; put back the file from a copy of the run, or remove {path.name} and resume the run "
            "so that it is written again.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
