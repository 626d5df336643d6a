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
from typing import Dict, List, Optional, Set, Tuple

from worklab.errors import UserError

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
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
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

