"""Config schemas: the dataclasses behind conf/ (worklab.hydra_edge registers them in Hydra's ConfigStore).

They know nothing of Hydra. Everything else takes the plain dataclass objects that
worklab.hydra_edge.to_plain builds, so it can be used and tested without Hydra. Each
dataclass checks its values in `__post_init__` and raises `UserError` naming the key, so
a bad value stops the run before TensorFlow is even imported.
"""
from __future__ import annotations

# Every name config.py had, for the importers that the next commit points at the modules that define them.
from worklab.config.checks import _default, _inert, _positive, _rate, _regex, _require  # noqa: F401
from worklab.config.hparams import hparams  # noqa: F401
from worklab.config.network import (DEPTHS, INERT_NETWORK_KEYS, NETWORK_KINDS, NETWORK_LAYOUTS, ArchArgs,  # noqa: F401
                                    LrRule, NetworkConfig)
from worklab.config.preprocessing_policy import PREPROCESSING, input_preprocessing  # noqa: F401
from worklab.config.reader import (CROPS, DEMO_VARIANTS, RESIZES, SOURCES, AugmentConfig, DemoConfig,  # noqa: F401
                                   ReaderConfig)
from worklab.config.root import Config  # noqa: F401
from worklab.config.runtime import PRECISIONS, STRATEGIES, RuntimeConfig  # noqa: F401
from worklab.config.schedules import (EXPORT_FORMATS, SCHEDULES, BitSchedule, CosineSchedule,  # noqa: F401
                                      ExportSchedule, FixedSchedule, HyperSchedule, InspectSchedule,
                                      PatienceSchedule, PredictSchedule, RecalibrateSchedule, ScheduleConfig,
                                      ScheduleKind, Stage, TestSchedule, TrainingSchedule, TrainSchedule,
                                      WatchSchedule, schedule_kind)
from worklab.config.training import OPTIMIZERS, LossConfig, OptimizerConfig, RestoreConfig, RestoreRule  # noqa: F401
