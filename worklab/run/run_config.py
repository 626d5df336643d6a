"""A run folder's config read back: what it was started with, what it settled, and what older runs meant.

The saved config is the effective config: .hydra/config.yaml (on today's schema, with
the overrides that keep a run written by an older worklab meaning what it meant then),
then what its schedule settled at run time (settled.json, through RunFolder). watch and
predict load the run they read with it; command.py compares a command against it before
Hydra starts and keeps an older run's meaning when it is resumed. No TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from omegaconf import OmegaConf

from worklab.config.root import Config
from worklab.config.schedules import ScheduleConfig
from worklab.errors import UserError
from worklab.run.runfolder import RunFolder


def saved_config(run_dir: Path):
    """The config a run folder was started with, with what its schedule settled at run time (settled.json), on
    the schema, less its schedule and folder (a DictConfig).

    Read without resolving: the saved `run_dir` refers to Hydra's runtime, which only the
    job that wrote it had.
    """
    folder = RunFolder(run_dir)
    if not folder.saved_config.is_file():
        raise UserError(f"{run_dir} is not a run folder: {folder.saved_config} does not exist.")
    saved = saved_dict(run_dir)
    node = OmegaConf.merge(OmegaConf.structured(Config),
                           {k: v for k, v in saved.items() if k not in ("schedule", "run_dir")})
    for override in older_worklab_overrides(saved):
        key, value = override.split("=", 1)
        OmegaConf.update(node, key, value)
    for key, value in folder.settled().items():  # what the schedule settled at run time
        OmegaConf.update(node, key, value)
    return node


def saved_dict(run_dir: Path) -> Dict[str, Any]:
    """The run's .hydra/config.yaml as it was written, unresolved ({} when it has none)."""
    path = RunFolder(run_dir).saved_config
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def older_worklab_overrides(saved: Dict[str, Any]) -> List[str]:
    """Overrides that keep a run folder written by an older worklab meaning what it meant then.

    `saved` is the run's .hydra/config.yaml. Before network.preprocessing existed, every
    network took inputs normalised with reader.mean and reader.std: such a run keeps that
    (mean_std), whatever its restore mapping now says. A ResNet keeps the depth and width
    it was built with: the demo group (conf/demo/) now gives the demo set a smaller ResNet
    than the ResNet-18 a demo run had before it. Before reader.resample existed, every image
    was resized with the antialias filter: such a run keeps it.
    """
    network = saved.get("network") or {}
    older = [] if "preprocessing" in network else ["network.preprocessing=mean_std"]
    if "resample" not in (saved.get("reader") or {}):
        older.append("reader.resample=antialias")
    if network.get("kind") == "resnet":
        older += [f"network.{key}={network[key]}" for key in ("depth", "width") if key in network]
    return older


def load_run_config(run_dir: Path, schedule: ScheduleConfig) -> Config:
    """The config a run folder was started with, with `schedule` in place of its own schedule."""
    node = saved_config(run_dir)
    node.schedule = OmegaConf.structured(schedule)
    node.run_dir = str(run_dir)
    return OmegaConf.to_object(node)
