"""What a command line asks of a run folder, settled before Hydra starts.

Hydra writes `.hydra/` (and its log) into the job's folder as the job starts, so
everything that can refuse a single run is checked here first, and a refused command
leaves an existing run folder byte for byte as it was:

- `resume=PATH` puts the run's saved overrides in front of the new ones, which win;
- the config is composed and checked as the job will see it (schema, values, `+` keys);
- in a run folder that has checkpoints, the keys that decide what a checkpoint holds
  (the network, its lr_mult rules, the optimizer) must be the run's: each that differs
  is named with both values;
- predict and watch, which name the run they read with schedule.run, refuse `resume=`;
- a schedule that trains from scratch finds the network's files (a Keras model file,
  network.weights, a SavedModel folder) where the config says; only the files: nothing
  here imports TensorFlow, whose threads and devices runtime.configure sets in the job;
- a schedule that reads a run (test, inspect, export; the registry says which) reads
  it with its saved config (`resume=RUN`, also when the run was named by run_name= or
  hydra.run.dir=) and runs in a job folder of its own (a new dated folder, unless
  hydra.run.dir names one), so Hydra's config and log, and the schedule's results, never
  land in the run; recalibrate, which adds a checkpoint to the run, keeps the run's saved
  config (`hydra.output_subdir=null`);
- a schedule that trains takes the folder's lock now (worklab.run.runfolder);
- a snapshot of the folder is kept, so that bad input found after the job started
  (a list file that moved, say) can be undone before the process exits.

Sweeps (-m) are left to Hydra: each job takes its own folder's lock when it starts.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from omegaconf import OmegaConf

from worklab import cluster
from worklab.config.network import NetworkConfig
from worklab.config.schedules import schedule_kind
from worklab.errors import UserError
from worklab.hydra_edge import to_plain
from worklab.model.saved_model_folder import check_folder
from worklab.run import runfolder
from worklab.run.run_config import older_worklab_overrides, saved_config, saved_dict
from worklab.run.runfolder import RunFolder
from worklab.run.summary import read_summary

# The keys that decide which variables a checkpoint holds and in what shape.
CHECKPOINT_KEYS = ("network.kind", "network.path", "network.cut", "network.arch", "network.arch_args",
                   "network.depth", "network.width", "network.layout", "network.conv_bias", "network.lr_mult",
                   "network.freeze", "network.preprocessing", "network.ema", "optimizer.name")
# The keys that decide the validation set, which every decision of a training run is made on.
SPLIT_KEYS = ("reader.val", "reader.val_split", "reader.val_seed")
ONCE = ("reader.new_data",)  # saved overrides that a resumed command does not inherit
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--version", "--shell-completion",
              "-sc", "--resolve", "--package", "-p")


@dataclass
class Prepared:
    """The arguments Hydra gets, and the folder to put back if the job refuses its input."""

    argv: List[str]
    snapshot: Optional[runfolder.Snapshot] = None
    added: List[Path] = field(default_factory=list)  # a cluster's other worker: its new log and log folder

    def put_back(self) -> None:
        if self.snapshot and runfolder.holds_lock(self.snapshot.run_dir):
            self.snapshot.put_back()
        for path in reversed(self.added):  # the log, then its folder
            with contextlib.suppress(OSError):  # already removed, or the folder holds another worker's log
                path.rmdir() if path.is_dir() else path.unlink()


def prepare(argv: List[str], config_dir: Path) -> Prepared:
    """Check a command against its run folder before Hydra runs it; raise UserError to refuse it."""
    merged = resume_argv(argv)
    flags = [a for a in merged[1:] if a.startswith("-")]
    if any(f in ("-m", "--multirun") or f.split("=", 1)[0] in INFO_FLAGS for f in flags):
        return Prepared(merged)
    overrides = [a for a in merged[1:] if not a.startswith("-")]
    folder = target_folder(overrides)
    cfg = _compose(overrides, config_dir, folder)
    plain = to_plain(cfg)
    kind = schedule_kind(plain.schedule)
    if kind.reads == "schedule.run" and _resumes(overrides):
        raise UserError(f"schedule={kind.name} reads the run named by schedule.run (or schedule.model) and writes "
                        f"into a folder of its own: drop resume=, e.g. schedule.run={folder}.")
    if kind.reads == "resume" and folder is not None and RunFolder(folder).saved_overrides.is_file():
        new = argv[1:]
        if not _resumes(new):  # named by run_name= or hydra.run.dir=: read it with its saved config all the same
            new = [o for o in new if override_key(o) not in ("run_name", "hydra.run.dir")] + [f"resume={folder}"]
        if "hydra.run.dir" not in {override_key(o) for o in new}:
            new.append(f"hydra.run.dir={job_folder()}")
        if new != argv[1:]:
            return prepare(argv[:1] + new, config_dir)
    if kind.writes and not (folder and any((folder / "checkpoints").glob("ckpt-*.index"))):
        check_network_files(plain.network)
    chief, added = cluster.is_chief(plain.runtime.strategy), []
    if plain.runtime.strategy == "multi_worker" and kind.writes:
        merged, added = worker_arguments(merged, folder, chief)
    if folder is None:
        return Prepared(merged)
    if (folder / ".hydra" / "config.yaml").is_file() and any((folder / "checkpoints").glob("ckpt-*.index")):
        check_same_checkpoint_keys(folder, cfg)
        if kind.trains:
            check_same_split(folder, cfg)
            check_same_schedule(folder, kind.name)
    if kind.writes and not kind.trains and _resumes(overrides):
        merged = merged + ["hydra.output_subdir=null"]  # recalibrate: the run's saved config stays its own
    if not (kind.writes and chief):
        return Prepared(merged, added=added)
    snapshot = runfolder.Snapshot.take(folder)
    runfolder.lock(folder)
    return Prepared(merged, snapshot)


def job_folder() -> str:
    """The job folder of a schedule that reads a run: a new dated folder under outputs/, as a fresh run gets."""
    return time.strftime("outputs/%Y-%m-%d/%H-%M-%S")


def worker_arguments(argv: List[str], folder: Optional[Path], chief: bool) -> Tuple[List[str], List[Path]]:
    """Hydra's arguments for a process of a multi-worker cluster, and the paths it adds to the run folder.

    The command must name the run folder, which every worker shares. Only the chief saves
    the config there; the others log to workers/<task>.log, which they remove again if
    their input is refused.
    """
    if folder is None:
        raise UserError("runtime.strategy=multi_worker: name the run folder every worker shares, with "
                        "hydra.run.dir=/shared/runs/NAME, run_name=NAME or resume=PATH (a dated folder would differ "
                        "between the workers).")
    if chief:
        return argv, []
    task = cluster.task()
    log_file = RunFolder(folder.resolve()).workers / f"{task.kind}-{task.index}.log"
    added = [p for p in (log_file.parent, log_file) if not p.exists()]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return argv + ["hydra.output_subdir=null", f"hydra.job_logging.handlers.file.filename={log_file}"], added


def target_folder(overrides: List[str]) -> Optional[Path]:
    """The run folder a single run will use when the command names it: resume=, hydra.run.dir= or run_name=."""
    values = {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
    if values.get("resume"):
        return Path(values["resume"])
    if "hydra.run.dir" in values and "${" not in values["hydra.run.dir"]:
        return Path(values["hydra.run.dir"])
    if values.get("run_name") and values["run_name"] != "null":
        return Path("outputs") / values["run_name"]
    return None


def check_same_checkpoint_keys(folder: Path, cfg) -> None:
    """Refuse settings under which the run's checkpoints would not fit, naming each key and both values."""
    differ = _changed(folder, cfg, CHECKPOINT_KEYS)
    if differ:
        raise UserError(f"{folder} holds checkpoints of another network or optimizer: {differ}. "
                        f"Drop those overrides to continue the run (its settings are in {folder}/.hydra/config.yaml), "
                        "or start a new run folder.")


def check_same_split(folder: Path, cfg) -> None:
    """Refuse a resumed training run another validation set: its earlier decisions were made on the first one."""
    differ = _changed(folder, cfg, SPLIT_KEYS)
    if differ:
        raise UserError(f"{folder} made its decisions on another validation set: {differ}. Continue it with the "
                        "validation set it started with (drop those overrides), or start a new run folder.")


def check_same_schedule(folder: Path, name: str) -> None:
    """Refuse to go on training a run under another training schedule than the one it was trained with."""
    before = (read_summary(folder) or {}).get("schedule")
    if before and before != name:
        raise UserError(f"{folder} was trained with schedule={before}; schedule={name} would go on from its "
                        f"checkpoints under another plan. Continue it with schedule={before}, or start a new run "
                        "folder (run_name=NEW, or hydra.run.dir=...).")


def _changed(folder: Path, cfg, keys) -> str:
    """`key: before in the run, now now` for each of `keys` the command sets otherwise than the run ('' if none)."""
    run = saved_config(folder)
    pairs = [(key, _value(run, key), _value(cfg, key)) for key in keys]
    return "; ".join(f"{key}: {before} in the run, {now} now" for key, before, now in pairs if before != now)


def check_network_files(network: NetworkConfig) -> None:
    """The files a fresh start reads to build the network: a missing or wrong one is refused before Hydra writes.

    Only the files are looked at: TensorFlow must not start before runtime.configure in
    the job, so a SavedModel's endpoints and input size are checked when it is built.
    """
    if network.kind == "keras" and not Path(network.path).expanduser().is_file():
        raise UserError(f"network.path={network.path} does not exist: give a .keras or .h5 model file.")
    if network.kind == "applications" and network.weights not in (None, "none", "imagenet"):
        import h5py

        path = Path(network.weights).expanduser()
        if not path.is_file():
            raise UserError(f"network.weights={network.weights} does not exist: give a .h5 or .weights.h5 file, "
                            "imagenet (Keras' download and cache), or null for fresh weights.")
        if not h5py.is_hdf5(path):
            raise UserError(f"network.weights={network.weights} is not an HDF5 weight file (.h5 or .weights.h5).")
    if network.kind == "saved_model":
        check_folder(network.path)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_argv(argv: List[str]) -> List[str]:
    """Put a resumed run's saved overrides in front of the new ones.

    `resume=PATH` continues a run in its own folder with the config it was started
    with: Hydra composes the saved overrides (PATH/.hydra/overrides.yaml) and then the
    new ones, which win. A saved override gives way to a new one of the same key, or to
    a new choice of its group. A PATH that is not a run folder stops here.
    """
    given = [a for a in argv[1:] if not a.startswith("-") and "=" in a]
    resume = [a.split("=", 1)[1] for a in given if override_key(a) == "resume"]
    if not resume:
        return argv
    saved_file = Path(resume[-1]) / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        raise UserError(f"resume={resume[-1]} is not a run folder: {saved_file} does not exist. "
                        "Pass the folder of an earlier run, e.g. outputs/2026-11-25/10-11-12.")
    new_keys = {override_key(a) for a in given}
    replaced = lambda key: key in new_keys or key.split(".", 1)[0] in new_keys  # noqa: E731
    run = Path(resume[-1])
    saved = [o for o in [*saved_overrides(run), *older_worklab_overrides(saved_dict(run)), *settled_overrides(run)]
             if not replaced(override_key(o)) and override_key(o) not in ONCE]
    return argv[:1] + saved + argv[1:]


def settled_overrides(run_dir: Path) -> List[str]:
    """The settings the run's schedule settled at run time (settled.json), as overrides: part of its config."""
    return [f"{key}={_override_value(value)}" for key, value in RunFolder(run_dir).settled().items()]


def _override_value(value) -> str:
    return f"[{','.join(map(str, value))}]" if isinstance(value, (list, tuple)) else str(value)


def saved_overrides(run_dir: Path) -> List[str]:
    """The command-line overrides Hydra saved in a run folder ([] if it has none)."""
    path = RunFolder(run_dir).saved_overrides
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _resumes(overrides: List[str]) -> bool:
    return any(override_key(o) == "resume" for o in overrides)


def _value(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _compose(overrides: List[str], config_dir: Path, folder: Optional[Path]):
    """The job's config as Hydra will compose it; Hydra's own objection (syntax, unknown key) as a UserError.

    Hydra's advice to add an unknown key with `+` is left out: worklab refuses keys it does not read.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose("config", overrides=[*overrides, f"run_dir={folder or '.'}"])
    except (HydraException, OmegaConfBaseException) as error:
        text = f"{error}\n{error.__cause__ or ''}"
        lines = [line.strip() for line in text.splitlines() if line.strip() and "To append to your config" not in line]
        raise UserError(" ".join(lines[:4])) from None
