"""The schedules' schemas, and the registry of schedules (SCHEDULES) that config, command, app and the tests read.

A new schedule is its module (worklab.schedules.NAME), its yaml (conf/schedule/NAME.yaml)
and one line of SCHEDULES; its schema is registered in Hydra's ConfigStore as
schema/schedule/NAME by worklab.hydra_edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from worklab.config.checks import positive, rate, require

EXPORT_FORMATS = ("saved_model", "keras", "tflite", "tflite_int8", "onnx")  # worklab.serve.formats.FORMATS's
INT8_IO = ("uint8", "int8")  # the input and output types model_int8.tflite may take and give


@dataclass
class ScheduleConfig:
    """The base of every schedule's schema."""


@dataclass
class TrainingSchedule(ScheduleConfig):
    """What every schedule that trains shares: the cadence of logs and checkpoints."""

    log_every: int = 50  # steps between train log lines and TensorBoard scalars
    save_every: int = 500  # steps between checkpoints (and always at the end)
    keep: int = 3  # checkpoints kept in the run folder

    def __post_init__(self) -> None:
        for key in ("log_every", "save_every", "keep"):
            require(getattr(self, key) >= 1, f"schedule.{key}={getattr(self, key)} must be at least 1.")


@dataclass
class TrainSchedule(TrainingSchedule):
    """Train up to `steps` in total, without testing (the seed's train script)."""

    steps: int = 1000  # the run's total step count: rerun with a larger value to continue

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("schedule.steps", self.steps)


@dataclass
class TestSchedule(ScheduleConfig):
    """Evaluate one checkpoint of a run (the seed's test script)."""

    step: Optional[int] = None  # default: the latest checkpoint
    split: str = "test"  # test, or val: the run's validation set (reader.val or its saved reader.val_split)

    def __post_init__(self) -> None:
        require(self.split in ("test", "val"), f"schedule.split={self.split!r} is not one of test, val.")


@dataclass
class CalibrateSchedule(ScheduleConfig):
    """Fit a temperature for one checkpoint's probabilities on the run's validation set (calibration.json)."""

    step: Optional[int] = None  # default: the run's best step (best.json) when it has one, else the latest


@dataclass
class Stage:
    """One stage of the fixed schedule: `steps` steps at learning rate `lr`."""

    lr: float = MISSING
    steps: int = MISSING


@dataclass
class FixedSchedule(TrainingSchedule):
    """Learning-rate stages, testing after each (the seed's train_and_test)."""

    stages: List[Stage] = field(default_factory=lambda: [Stage(0.1, 400), Stage(0.01, 100)])
    recalibrate: int = 0  # batches to re-estimate batch-norm statistics over before the last test
    warmup_steps: int = 0  # the first stage's rate rises linearly from lr / warmup_steps over these steps

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.stages) > 0, "schedule.stages is empty: give at least one {lr, steps}.")
        for i, stage in enumerate(self.stages):
            rate(f"schedule.stages[{i}].lr", stage.lr)
            positive(f"schedule.stages[{i}].steps", stage.steps)
        require(0 <= self.warmup_steps <= self.stages[0].steps,
                f"schedule.warmup_steps={self.warmup_steps} must be in [0, {self.stages[0].steps}], the first "
                "stage's steps.")


@dataclass
class CosineSchedule(TrainingSchedule):
    """A linear warmup to optimizer.lr, then cosine decay to min_lr at `steps`, testing every eval_every steps."""

    steps: int = 1000  # the run's total steps: the curve ends here
    warmup_steps: int = 0  # the rate rises linearly from optimizer.lr / warmup_steps over these steps
    min_lr: float = 0.0  # the rate at the last step
    eval_every: int = 500  # steps between tests (and at the end)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("schedule.steps", self.steps)
        require(0 <= self.warmup_steps < self.steps,
                f"schedule.warmup_steps={self.warmup_steps} must be in [0, schedule.steps={self.steps}).")
        require(math.isfinite(self.min_lr) and self.min_lr >= 0,
                f"schedule.min_lr={self.min_lr} must be a finite number >= 0.")
        require(self.eval_every >= 1, f"schedule.eval_every={self.eval_every} must be at least 1.")


@dataclass
class BitSchedule(TrainingSchedule):
    """BiT's HyperRule: steps, warmup and crop sizes chosen from the training set at run time; null: the rule's."""

    steps: Optional[int] = None  # 500 below 20k training images, 10k below 500k, else 20k
    warmup_steps: Optional[int] = None  # 100 below 20k training images, else 500 (at most the first stage)
    crop: Optional[int] = None  # reader.image_size: 128 when the median image is below 96x96 px, else 384
    resize: Optional[int] = None  # training crops are taken from the image resized to this: 160, else 448

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("steps", "crop", "resize"):
            if getattr(self, key) is not None:
                positive(f"schedule.{key}", getattr(self, key))
        require(self.warmup_steps is None or self.warmup_steps >= 0,
                f"schedule.warmup_steps={self.warmup_steps} must be 0 or more.")
        require(self.crop is None or self.resize is None or self.resize >= self.crop,
                f"schedule.resize={self.resize} must be at least schedule.crop={self.crop}.")


@dataclass
class PatienceSchedule(TrainingSchedule):
    """Test every eval_every steps (on the validation set when there is one); when the loss stops improving, go
    back to the best and lower the rate."""

    eval_every: int = 500  # steps between tests
    patience: int = 3  # tests without improvement before the rate drops
    factor: float = 0.1  # the rate is multiplied by this at each drop
    max_decays: int = 2  # stop at the next plateau after this many drops
    max_steps: Optional[int] = None  # stop at this step in any case
    max_loss: Optional[float] = None  # a tested loss above this counts as a blow-up, like NaN
    keep: int = 1  # latest checkpoints kept besides the best

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eval_every", "patience"):
            require(getattr(self, key) >= 1, f"schedule.{key}={getattr(self, key)} must be at least 1.")
        require(0 < self.factor < 1, f"schedule.factor={self.factor} must be between 0 and 1.")
        require(self.max_decays >= 0, f"schedule.max_decays={self.max_decays} must be 0 or more.")
        if self.max_steps is not None:
            positive("schedule.max_steps", self.max_steps)
        if self.max_loss is not None:
            positive("schedule.max_loss", self.max_loss)


@dataclass
class HyperSchedule(PatienceSchedule):
    """Patience for each value of one config key in turn, until the best loss stops improving (validation first)."""

    param: str = MISSING  # the config key to vary, e.g. network.width
    values: List[Any] = MISSING  # tried in this order, each in its own sub-folder
    hyper_patience: int = 1  # values without a better best loss before stopping
    warm_start: bool = False  # start each value from the previous value's best weights

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.values) > 0, "schedule.values is empty: list the values of schedule.param to try.")
        repeated = [v for i, v in enumerate(self.values) if v in self.values[:i]]
        require(not repeated, f"schedule.values repeats {repeated[0] if repeated else ''}: each value is tried once.")
        require(self.hyper_patience >= 1, f"schedule.hyper_patience={self.hyper_patience} must be at least 1.")
        require(not self.param.startswith(("schedule.", "runtime.")),
                f"schedule.param={self.param}: the {self.param.split('.')[0]} settings are fixed for the whole "
                "search (runtime settings apply once per process); pick a network, optimizer, reader key or seed.")


@dataclass
class WatchSchedule(ScheduleConfig):
    """Test every new checkpoint of a training run as it appears (the seed's test_many)."""

    run: str = MISSING  # the training run folder to follow
    poll: float = 5.0  # seconds between looks for new checkpoints
    timeout: float = 3600.0  # stop after this many seconds without a new checkpoint

    def __post_init__(self) -> None:
        positive("schedule.poll", self.poll)
        positive("schedule.timeout", self.timeout)


@dataclass
class RecalibrateSchedule(ScheduleConfig):
    """Re-estimate batch-norm statistics of the latest checkpoint over training batches, then test."""

    batches: int = 100  # training batches the statistics are averaged over

    def __post_init__(self) -> None:
        positive("schedule.batches", self.batches)


@dataclass
class InspectSchedule(ScheduleConfig):
    """List the network's layers and how each trains; with restore.path, a checkpoint's keys and the mapping."""

    filter: Optional[str] = None  # a regex: only layers, keys and variables that match


@dataclass
class ExportSchedule(ScheduleConfig):
    """Write one checkpoint of a run as models to deploy, in RUN/export/step-N/ (or OUT/step-N) with export.json."""

    step: Optional[int] = None  # default: the run's best step (best.json) when it has one, else the latest
    formats: List[str] = field(default_factory=lambda: ["saved_model", "keras"])  # any of EXPORT_FORMATS
    quantize: Optional[str] = None  # dynamic: a dynamic-range quantized TFLite file beside the float one
    out: Optional[str] = None  # the folder step-N is written into; default RUN/export
    calibration_images: Optional[int] = None  # tflite_int8's representative images; default min(200, training list)
    int8_io: str = "uint8"  # tflite_int8's input and output type: uint8 (Edge TPU, microcontrollers) or int8
    min_agreement: float = 0.98  # a format whose top-1 agrees with the SavedModel's on less is warned about
    strict: bool = False  # true: such a format refuses the export instead, and nothing is written

    def __post_init__(self) -> None:
        require(len(self.formats) > 0, f"schedule.formats is empty: list some of {', '.join(EXPORT_FORMATS)}.")
        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        require(not unknown, f"schedule.formats={self.formats}: {', '.join(map(str, unknown))} is not one of "
                             f"{', '.join(EXPORT_FORMATS)}.")
        require(self.quantize in (None, "dynamic"), f"schedule.quantize={self.quantize!r} is not dynamic or null.")
        require(self.quantize is None or "tflite" in self.formats,
                "schedule.quantize=dynamic quantizes the TFLite file: add tflite to schedule.formats.")
        if self.calibration_images is not None:
            positive("schedule.calibration_images", self.calibration_images)
        require(self.int8_io in INT8_IO, f"schedule.int8_io={self.int8_io!r} is not one of {', '.join(INT8_IO)}.")
        require(0 <= self.min_agreement <= 1, f"schedule.min_agreement={self.min_agreement} must be in [0, 1].")


@dataclass
class PredictSchedule(ScheduleConfig):
    """Classify images with a run's checkpoint or an exported model; results in this job's own folder."""

    images: str = MISSING  # a list file (labels optional), a class-folder tree, or a folder searched for images
    run: Optional[str] = None  # a run folder: its best step (best.json), else its latest, or schedule.step
    model: Optional[str] = None  # RUN/export/step-N, its saved_model, or a file in it (.keras, .tflite, .onnx)
    step: Optional[int] = None  # with schedule.run: the checkpoint to use
    min_score: Optional[float] = None  # schedule.min_score=0.6: a top probability below it predicts "unknown"

    def __post_init__(self) -> None:
        require(self.min_score is None or 0 <= self.min_score <= 1,
                f"schedule.min_score={self.min_score} must be in [0, 1]: the top probability below which an image "
                "is predicted unknown.")
        require(self.run is not None or self.model is not None,
                "schedule=predict needs one of schedule.run=RUN (a run folder) or schedule.model=PATH "
                "(an export folder or a file in it): neither is given.")
        require(self.run is None or self.model is None,
                f"schedule=predict needs one of schedule.run={self.run} or schedule.model={self.model}, "
                "not both.")
        require(self.step is None or self.run is not None, "schedule.step picks a checkpoint of schedule.run; "
                                                           "an exported model has one step already.")


@dataclass(frozen=True)
class ScheduleKind:
    """One schedule: its name (schedule=NAME and the module worklab.schedules.NAME), its schema, and how it
    treats a run folder.

    `writes`: it holds the run folder's lock and writes into it (checkpoints). `reads`: how it
    names the run it reads without writing it: `resume` (resume=RUN, with the run's saved
    config) or `schedule.run` (a run named in its own keys); None for a schedule that writes.
    A schedule that reads writes its results into a job folder of its own (Hydra's run folder
    for the job), never over the run's records. `summarised`: it keeps summary.json.
    """

    name: str
    schema: type
    writes: bool = False
    reads: Optional[str] = None
    summarised: bool = False

    @property
    def module(self) -> str:
        return f"worklab.schedules.{self.name}"

    @property
    def trains(self) -> bool:
        return issubclass(self.schema, TrainingSchedule)


# Every schedule, once: config, command, app and the tests read this table.
SCHEDULES = (
    ScheduleKind("train", TrainSchedule, writes=True, summarised=True),
    ScheduleKind("fixed", FixedSchedule, writes=True, summarised=True),
    ScheduleKind("cosine", CosineSchedule, writes=True, summarised=True),
    ScheduleKind("bit", BitSchedule, writes=True, summarised=True),
    ScheduleKind("patience", PatienceSchedule, writes=True, summarised=True),
    ScheduleKind("hyper", HyperSchedule, writes=True, summarised=True),
    ScheduleKind("recalibrate", RecalibrateSchedule, writes=True),  # adds a checkpoint to the run it reads
    ScheduleKind("calibrate", CalibrateSchedule, writes=True),  # writes calibration.json into the run it reads
    ScheduleKind("test", TestSchedule, reads="resume"),
    ScheduleKind("inspect", InspectSchedule, reads="resume"),
    ScheduleKind("export", ExportSchedule, reads="resume"),  # writes RUN/export/step-N, or into schedule.out
    ScheduleKind("watch", WatchSchedule, reads="schedule.run"),  # and its ledger in RUN/watch/
    ScheduleKind("predict", PredictSchedule, reads="schedule.run"),
)


def schedule_kind(schedule: Any) -> ScheduleKind:
    """The registry entry of a schedule config (an instance of one of the schemas)."""
    return next(kind for kind in SCHEDULES if type(schedule) is kind.schema)
