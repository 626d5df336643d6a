"""The whole run's schema (Config): one field per config group, the run's own settings, and the rules across groups.

Each group's schema checks its own keys; what depends on two groups is checked here: a
restore mapping's network, a Keras Application's smallest input, the cosine's floor
under the optimizer's rate, keras export of a SavedModel body, weight decay given twice,
the weight average with recalibration, the global batch over the devices, a cluster's
schedules, and reader.mean and reader.std where the network's input scaling ignores them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from worklab import cluster
from worklab.config import architectures
from worklab.config.checks import inert, require
from worklab.config.network import NetworkConfig
from worklab.config.preprocessing_policy import input_preprocessing
from worklab.config.reader import ReaderConfig
from worklab.config.runtime import RuntimeConfig
from worklab.config.schedules import (EXPORT_FORMATS, CosineSchedule, ExportSchedule, HyperSchedule,
                                      RecalibrateSchedule, ScheduleConfig, TrainingSchedule)
from worklab.config.training import LossConfig, OptimizerConfig, RestoreConfig


@dataclass
class Config:
    """The whole run: one field per config group plus the run's own settings."""

    reader: ReaderConfig = field(default_factory=ReaderConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = MISSING
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0  # shuffling, augmentation and initialisation
    top_k: int = 5  # the k of the top-k test accuracy
    worst: int = 16  # the highest-loss examples every evaluation lists, with their files (0: none)
    resume: Optional[str] = None  # a run folder to continue in, with its saved config
    run_name: Optional[str] = None  # outputs/NAME as the run folder, so the same command continues the run
    sweep: Optional[str] = None  # a multirun's name: job folders multirun/NAME/<overrides>, resumable
    run_dir: str = "${hydra:runtime.output_dir}"  # this run's folder (set by Hydra)
    data_dir: str = "data"  # where the demo set is written

    def __post_init__(self) -> None:
        require(0 <= self.seed < 2 ** 32, f"seed={self.seed} must be in [0, 2**32 - 1].")
        require(self.top_k >= 1, f"top_k={self.top_k} must be at least 1.")
        require(self.worst >= 0, f"worst={self.worst} must be 0 (list none) or more: the number of highest-loss "
                                 "examples every evaluation lists.")
        require(self.run_name is None or (bool(self.run_name) and "/" not in self.run_name),
                f"run_name={self.run_name!r} must be a folder name without '/' (use hydra.run.dir for a path).")
        for key, wanted in self.restore.requires.items():
            actual = getattr(self.network, key)
            require(actual == wanted, f"The restore mapping is written for network.{key}={wanted}, but "
                                      f"network.{key}={actual}: set network.{key}={wanted}, or pick another mapping.")
        if self.network.kind == "applications":
            arch = architectures.get(self.network.arch)
            require(self.reader.image_size >= arch.min_size,
                    f"reader.image_size={self.reader.image_size} is below {self.network.arch}'s smallest input, "
                    f"{arch.min_size}x{arch.min_size}: set reader.image_size={arch.min_size} or more.")
        require(not isinstance(self.schedule, CosineSchedule) or self.schedule.min_lr < self.optimizer.lr,
                f"schedule.min_lr={getattr(self.schedule, 'min_lr', None)} must be below "
                f"optimizer.lr={self.optimizer.lr}, the peak of the cosine.")
        require(not (isinstance(self.schedule, ExportSchedule) and self.network.kind == "saved_model"
                     and "keras" in self.schedule.formats),
                "schedule.formats has keras, which cannot hold network=saved_model's body (a .keras file keeps "
                "only a reference to the SavedModel folder): pass 'schedule.formats=[saved_model]', with any of "
                f"{', '.join(f for f in EXPORT_FORMATS if f not in ('saved_model', 'keras'))} if wanted.")
        require(not (self.network.weight_decay and self.optimizer.weight_decay),
                f"network.weight_decay={self.network.weight_decay} (L2 in the loss) and optimizer.weight_decay="
                f"{self.optimizer.weight_decay} (decoupled) are both set: pick one, e.g. network.weight_decay=0.")
        recalibrates = "schedule=recalibrate" if isinstance(self.schedule, RecalibrateSchedule) else \
            "schedule.recalibrate" if getattr(self.schedule, "recalibrate", 0) else None
        require(not (self.network.ema and recalibrates),
                f"network.ema={self.network.ema} with {recalibrates}: batch-norm statistics would be re-estimated "
                "for the trained weights, but tests and exports use the averaged ones: leave one of them out.")
        devices = self.runtime.devices
        require(not devices or self.reader.batch_size % len(devices) == 0,
                f"reader.batch_size={self.reader.batch_size} does not divide by the {len(devices)} devices of "
                f"runtime.devices={list(devices)}: it is the global batch, split evenly across them. Use a "
                f"multiple of {len(devices)}.")
        if self.runtime.strategy == "multi_worker":
            _check_multi_worker(self.schedule)
        mode = input_preprocessing(self)
        if mode != "mean_std":
            inert("reader", f"network.preprocessing={mode} (reader.mean and reader.std feed mean_std only)",
                  self.reader, ReaderConfig(), ["mean", "std"])


def _check_multi_worker(schedule: ScheduleConfig) -> None:
    """A cluster trains with the schedules of one run; a schedule that reads a run runs on the chief alone."""
    require(not isinstance(schedule, (HyperSchedule, RecalibrateSchedule)),
            f"runtime.strategy=multi_worker runs schedule=train, fixed, cosine, bit or patience: "
            f"schedule={'hyper' if isinstance(schedule, HyperSchedule) else 'recalibrate'} runs in one process "
            "(runtime.strategy=default, or mirrored over this machine's devices).")
    if isinstance(schedule, TrainingSchedule):
        cluster.task()  # refuses a missing or bad TF_CONFIG now, before anything is written
