"""Config schemas: the dataclasses behind conf/, registered in Hydra's ConfigStore.

This is the only module of the package that knows Hydra. Everything else takes the
plain dataclass objects built here by `to_plain`, so it can be used and tested without
Hydra. Each dataclass checks its values in `__post_init__` and raises `UserError` naming
the key, so a bad value stops the run before TensorFlow is even imported.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import MISSING as MISSING_FIELD, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from worklab import cluster
from worklab.errors import UserError
from worklab.model import architectures

DEPTHS = (10, 18, 34, 50, 101, 152)
NETWORK_LAYOUTS = ("resnet", "slim")
MAX_FOLDER_NAME = 200  # file systems allow 255 bytes
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SOURCES = ("demo", "json", "folder")
CROPS = ("zoom", "random_resized")  # reader.augment.crop: the training crop window (worklab.data.crops)
RESIZES = ("squash", "crop")  # reader.resize: how an image becomes image_size x image_size (worklab.data.reader)
DEMO_VARIANTS = ("shapes", "hard")  # worklab.data.demo.VARIANTS
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored", "multi_worker")
EXPORT_FORMATS = ("saved_model", "keras", "tflite")
NETWORK_KINDS = ("resnet", "keras", "applications", "saved_model")
# How a network scales the reader's 0-255 RGB images (worklab.model.preprocessing has the numbers).
PREPROCESSING = ("mean_std", "torch", "caffe", "tf", "unit", "raw", "ry", "vgg")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _positive(key: str, value: float) -> None:
    _require(value > 0, f"{key}={value} must be greater than 0.")


def _rate(key: str, value: float) -> None:
    _require(math.isfinite(value) and value > 0, f"{key}={value} must be a finite number greater than 0.")


def _regex(key: str, pattern: Optional[str]) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as error:
        raise UserError(f"{key}={pattern!r} is not a valid regular expression: {error}.") from None


def _inert(section: str, when: str, obj: Any, defaults: Any, keys: List[str]) -> None:
    """Refuse keys that would be read but do nothing in this setting (`when`), naming them."""
    changed = [k for k in keys if getattr(obj, k) != _default(defaults, k)]
    _require(not changed, f"{', '.join(f'{section}.{k}={getattr(obj, k)}' for k in changed)} "
                          f"{'has' if len(changed) == 1 else 'have'} no effect with {when}: remove "
                          f"{'it' if len(changed) == 1 else 'them'}.")


def _default(defaults: Any, key: str) -> Any:
    """The default of `key` in a dataclass (class or instance), default_factory fields included."""
    if not isinstance(defaults, type):
        return getattr(defaults, key)
    spec = next(f for f in fields(defaults) if f.name == key)
    return spec.default_factory() if spec.default is MISSING_FIELD else spec.default


@dataclass
class AugmentConfig:
    """The training augmentations; each is off at test time and off here when 0/false.

    `crop` picks the training crop window (worklab.data.crops), cut from the decoded image
    and resized to image_size once: `zoom` takes a window 1/1 to 1/(1+zoom) of the side of
    what reader.resize shows, then `shift` moves the result; `random_resized` (Inception's
    crop) takes a window of crop_scale of the image's area at an aspect ratio within
    crop_ratio, from the whole image.
    """

    crop: str = "zoom"  # zoom | random_resized
    zoom: float = 0.15  # crop=zoom: up to this much larger (a window of 1/(1+zoom) of the side) at a random place
    shift: float = 0.1  # crop=zoom: random shift, as a fraction of image_size (edges reflected)
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # random_resized: area fraction range
    crop_ratio: List[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # random_resized: width/height range
    brightness: float = 0.1  # random brightness delta, as a fraction of the 0-255 range
    contrast: float = 0.1  # contrast factor drawn from [1 - contrast, 1 + contrast]
    rotate90: bool = False  # random multiple of 90 degrees
    flip: bool = True  # random left-right flip
    # Batch mixing, done in the training step (worklab.train.mixing): each example with its neighbour.
    mixup: float = 0.0  # blend the two images, the label weight drawn from Beta(mixup, mixup)
    cutmix: float = 0.0  # paste a box of the other image, its area drawn from Beta(cutmix, cutmix); with mixup
    #                      too, each batch uses one of the two, with even odds
    mix_prob: float = 1.0  # the chance a batch is mixed at all

    def __post_init__(self) -> None:
        _require(self.crop in CROPS, f"reader.augment.crop={self.crop!r} is not one of {', '.join(CROPS)}.")
        for key in ("zoom", "shift", "brightness", "contrast"):
            value = getattr(self, key)
            _require(value >= 0, f"reader.augment.{key}={value} must be 0 (off) or positive.")
        _require(self.shift < 0.5, f"reader.augment.shift={self.shift} must be below 0.5.")
        _require(self.contrast < 1, f"reader.augment.contrast={self.contrast} must be below 1.")
        for key in ("mixup", "cutmix"):
            value = getattr(self, key)
            _require(math.isfinite(value) and value >= 0,
                     f"reader.augment.{key}={value} must be 0 (off) or a finite positive number, the alpha of "
                     f"Beta(alpha, alpha).")
        _require(0 <= self.mix_prob <= 1, f"reader.augment.mix_prob={self.mix_prob} must be in [0, 1].")
        if not (self.mixup or self.cutmix):
            _inert("reader.augment", "reader.augment.mixup=0 and reader.augment.cutmix=0", self, AugmentConfig,
                   ["mix_prob"])
        for key in ("crop_scale", "crop_ratio"):
            value = list(getattr(self, key))
            _require(len(value) == 2 and value[0] <= value[1],
                     f"reader.augment.{key}={value} must be a range [low, high] with low <= high.")
        _require(0 < self.crop_scale[0] and self.crop_scale[1] <= 1,
                 f"reader.augment.crop_scale={list(self.crop_scale)} must lie in (0, 1]: fractions of the area.")
        _require(self.crop_ratio[0] > 0, f"reader.augment.crop_ratio={list(self.crop_ratio)} must be positive.")
        unused = (["crop_scale", "crop_ratio"] if self.crop == "zoom"
                  else [k for k in ("zoom", "shift") if getattr(self, k)])  # 0 (off) agrees with random_resized
        _inert("reader.augment", f"reader.augment.crop={self.crop}", self, AugmentConfig, unused)


@dataclass
class DemoConfig:
    """Kind and size of the built-in demo set written under data_dir on first use."""

    variant: str = "shapes"  # shapes: 10 clear classes | hard: 22 confusable classes in clutter and noise
    image_size: int = 48
    train_per_class: int = 100
    test_per_class: int = 30
    seed: int = 0  # the drawing's seed, apart from the run's seed so a seed sweep keeps the data

    def __post_init__(self) -> None:
        _require(self.variant in DEMO_VARIANTS,
                 f"reader.demo.variant={self.variant!r} is not one of {', '.join(DEMO_VARIANTS)}.")
        for key in ("image_size", "train_per_class", "test_per_class"):
            _positive(f"reader.demo.{key}", getattr(self, key))


@dataclass
class ReaderConfig:
    """Where the images are and how they become batches."""

    source: str = "demo"  # demo | json | folder
    train: Optional[str] = None  # JSON list file (json) or class-folder root (folder)
    test: Optional[str] = None
    val: Optional[str] = None  # a validation list or folder (like train): every decision is made on it
    val_split: float = 0.0  # or hold out this fraction of the training list, per class, for validation
    val_seed: int = 0  # the held-out images' draw, apart from seed so that a seed sweep keeps the split
    image_size: int = 224
    batch_size: int = 32
    test_batch_size: Optional[int] = None  # default: batch_size
    skip_bad: bool = False  # skip unreadable images instead of stopping
    cache: bool = False  # keep decoded, resized images in memory
    resize: str = "squash"  # squash: to image_size x image_size, aspect ignored | crop: aspect kept, centre crop
    crop_fraction: float = 0.875  # resize=crop: the centre square's side as a fraction of the shorter side
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    def __post_init__(self) -> None:
        _require(self.source in SOURCES,
                 f"reader.source={self.source!r} is not one of {', '.join(SOURCES)}.")
        _positive("reader.image_size", self.image_size)
        _positive("reader.batch_size", self.batch_size)
        if self.test_batch_size is not None:
            _positive("reader.test_batch_size", self.test_batch_size)
        for key in ("mean", "std"):
            _require(len(getattr(self, key)) == 3,
                     f"reader.{key}={getattr(self, key)} must list 3 values, one per RGB channel.")
        _require(all(s > 0 for s in self.std), f"reader.std={self.std} must be positive.")
        _require(0 <= self.val_split < 1, f"reader.val_split={self.val_split} must be in [0, 1).")
        _require(not (self.val and self.val_split),
                 f"reader.val={self.val} and reader.val_split={self.val_split}: give one validation set, not both.")
        _require(self.resize in RESIZES, f"reader.resize={self.resize!r} is not one of {', '.join(RESIZES)}.")
        _require(0 < self.crop_fraction <= 1, f"reader.crop_fraction={self.crop_fraction} must be in (0, 1].")
        if self.resize == "squash":
            _inert("reader", "reader.resize=squash", self, ReaderConfig, ["crop_fraction"])
        # The cache holds images already resized to image_size: a random_resized window (down to
        # crop_scale[0] of the area) cut from it and enlarged back would be blurred, unlike the
        # same window cut from the decoded file, so the two are not combined.
        _require(not (self.cache and self.augment.crop == "random_resized"),
                 "reader.cache=true with reader.augment.crop=random_resized: the cache holds images already "
                 f"resized to {self.image_size} px, and random_resized crops a window down to "
                 f"{self.augment.crop_scale[0]:g} of the area, which would be enlarged from those small copies "
                 "instead of cut from the decoded image; set reader.cache=false (random crops of JPEGs decode "
                 "only their window) or reader.augment.crop=zoom.")


@dataclass
class LrRule:
    """One learning-rate rule: variables whose name matches `pattern` (re.search) get these multipliers."""

    pattern: str = MISSING
    mult: float = 1.0  # learning-rate multiplier; 0 freezes the variable
    decay_mult: float = 1.0  # weight-decay multiplier
    bn: Optional[str] = None  # train | frozen (inference mode, statistics kept); default frozen when mult is 0


@dataclass
class ArchArgs:
    """The constructor arguments some Keras Applications take beyond the common ones; null keeps Keras' default."""

    alpha: Optional[float] = None  # MobileNet, MobileNetV2, MobileNetV3: the width multiplier
    depth_multiplier: Optional[int] = None  # MobileNet
    dropout: Optional[float] = None  # MobileNet: before its (unused) top
    minimalistic: Optional[bool] = None  # MobileNetV3
    dropout_rate: Optional[float] = None  # MobileNetV3: before its (unused) top
    include_preprocessing: Optional[bool] = None  # ConvNeXt, EfficientNetV2, MobileNetV3: scaling inside

    def given(self) -> Dict[str, Any]:
        """The arguments set, for the constructor."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class NetworkConfig:
    """The network to train: a ResNet built here, a Keras model file, a Keras Application or a SavedModel.

    Every kind gets a fresh `head` for our classes and takes the reader's 0-255 RGB
    images: its input preprocessing is the network's first layer (worklab.model.preprocessing).
    """

    kind: str = "resnet"  # resnet | keras | applications | saved_model
    path: Optional[str] = None  # keras: the .keras or .h5 model file; saved_model: the SavedModel folder
    cut: Optional[str] = None  # keras: the layer that feeds the new head; default the one before the old head
    arch: Optional[str] = None  # applications: a keras.applications name, e.g. EfficientNetV2B0
    arch_args: ArchArgs = field(default_factory=lambda: ArchArgs())  # applications: {alpha: 0.35}
    weights: Optional[str] = None  # applications: a weight file, imagenet (Keras' download and cache), or none
    endpoint: Optional[str] = None  # saved_model: the function to call; default serve, else serving_default
    training_endpoint: Optional[str] = None  # saved_model: the function to call in training, when it has one
    preprocessing: Optional[str] = None  # the input scaling (see PREPROCESSING); default: the network's own
    freeze: Optional[str] = None  # freeze every layer up to and including this one (or the last of this group)
    depth: int = 18  # 10, 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks)
    width: float = 1.0  # channel multiplier
    weight_decay: float = 1e-4  # L2 on kernels, scaled per variable by decay_mult
    lr_mult: List[LrRule] = field(default_factory=list)  # ordered; the first match wins
    layout: str = "resnet"  # resnet: stride in a stage's first block; slim: TF-slim's, in its last block
    conv_bias: bool = False  # convolutions with a bias (Keras Applications' ResNet50 has them)
    bn_momentum: float = 0.9  # batch-norm moving-average momentum
    bn_warmup_steps: int = 0  # steps at bn_warmup_momentum first, so fresh statistics settle fast
    bn_warmup_momentum: float = 0.5
    ema: Optional[float] = None  # keep an exponential moving average of the weights with this decay, e.g. 0.9998

    def __post_init__(self) -> None:
        _require(self.kind in NETWORK_KINDS,
                 f"network.kind={self.kind!r} is not one of {', '.join(NETWORK_KINDS)}.")
        _require(self.depth in DEPTHS,
                 f"network.depth={self.depth} is not one of {', '.join(map(str, DEPTHS))}.")
        _positive("network.width", self.width)
        _require(self.kind not in ("keras", "saved_model") or bool(self.path),
                 f"network={self.kind} needs network.path="
                 f"{'MODEL_FILE' if self.kind == 'keras' else 'SAVED_MODEL_FOLDER'}.")
        _require(self.layout in NETWORK_LAYOUTS,
                 f"network.layout={self.layout!r} is not one of {', '.join(NETWORK_LAYOUTS)}.")
        _require(self.preprocessing is None or self.preprocessing in PREPROCESSING,
                 f"network.preprocessing={self.preprocessing!r} is not one of {', '.join(PREPROCESSING)}.")
        _require(self.weight_decay >= 0, f"network.weight_decay={self.weight_decay} must be >= 0.")
        for i, rule in enumerate(self.lr_mult):
            _require(rule.mult >= 0 and rule.decay_mult >= 0,
                     f"network.lr_mult[{i}] (pattern {rule.pattern!r}): mult and decay_mult must be >= 0.")
            _require(rule.bn in (None, "train", "frozen"),
                     f"network.lr_mult[{i}].bn={rule.bn!r} is not one of train, frozen.")
        for key in ("bn_momentum", "bn_warmup_momentum"):
            _require(0 <= getattr(self, key) < 1, f"network.{key}={getattr(self, key)} must be in [0, 1).")
        _require(self.bn_warmup_steps >= 0, f"network.bn_warmup_steps={self.bn_warmup_steps} must be >= 0.")
        _require(self.ema is None or 0 < self.ema < 1,
                 f"network.ema={self.ema} must be in (0, 1), e.g. 0.9998 (or null: no weight average).")
        if self.kind == "applications":
            _require(bool(self.arch), "network=applications needs network.arch=NAME, e.g. EfficientNetV2B0; "
                                      f"the names: {', '.join(architectures.NAMES)}.")
            architectures.check(self.arch, self.arch_args.given())
            _require(self.arch_args.include_preprocessing is not False or self.preprocessing is not None,
                     f"network.arch_args.include_preprocessing=false leaves {self.arch} without its input "
                     "scaling: set network.preprocessing too (e.g. tf for [-1, 1]).")
        _inert("network", f"network={self.kind}", self, NetworkConfig, INERT_NETWORK_KEYS[self.kind])


# Keys each kind of network does not read: set, they are refused rather than ignored.
_RESNET_KEYS = ["depth", "width", "layout", "conv_bias"]
_APPLICATION_KEYS = ["arch", "arch_args", "weights"]
_SAVED_MODEL_KEYS = ["endpoint", "training_endpoint"]
INERT_NETWORK_KEYS = {
    "resnet": ["path", "cut", *_APPLICATION_KEYS, *_SAVED_MODEL_KEYS],
    "keras": [*_RESNET_KEYS, *_APPLICATION_KEYS, *_SAVED_MODEL_KEYS],
    "applications": ["path", "cut", *_RESNET_KEYS, *_SAVED_MODEL_KEYS],
    "saved_model": ["cut", *_RESNET_KEYS, *_APPLICATION_KEYS],
}


@dataclass
class OptimizerConfig:
    """The optimizer; `lr` is the base rate that schedules change and lr_mult rules scale."""

    name: str = "momentum"  # sgd | momentum | adam | adamw (Adam with decoupled weight decay)
    lr: float = 0.1
    momentum: float = 0.9  # momentum
    nesterov: bool = False  # momentum
    beta_1: float = 0.9  # adam, adamw
    beta_2: float = 0.999  # adam, adamw
    epsilon: float = 1e-7  # adam, adamw
    clip_norm: Optional[float] = None  # clip the gradients of all variables together to this global norm
    weight_decay: float = 0.0  # decoupled: each step w -= lr * lr_mult * weight_decay * decay_mult * w
    decay_include: str = "kernel$"  # the variables that decay (re.search), coupled or decoupled
    decay_exclude: Optional[str] = None  # and of those, the ones that do not

    def __post_init__(self) -> None:
        _require(self.name in OPTIMIZERS,
                 f"optimizer.name={self.name!r} is not one of {', '.join(OPTIMIZERS)}.")
        _rate("optimizer.lr", self.lr)
        _require(self.clip_norm is None or (math.isfinite(self.clip_norm) and self.clip_norm > 0),
                 f"optimizer.clip_norm={self.clip_norm} must be a finite number greater than 0 (or null: no clipping).")
        _require(math.isfinite(self.weight_decay) and 0 <= self.weight_decay < 1,
                 f"optimizer.weight_decay={self.weight_decay} must be in [0, 1): the fraction of a weight taken "
                 "off per step at learning rate 1.")
        for key in ("decay_include", "decay_exclude"):
            _regex(f"optimizer.{key}", getattr(self, key))
        if self.name != "momentum":
            _inert("optimizer", f"optimizer={self.name}", self, OptimizerConfig, ["momentum", "nesterov"])
        if self.name not in ("adam", "adamw"):
            _inert("optimizer", f"optimizer={self.name}", self, OptimizerConfig, ["beta_1", "beta_2", "epsilon"])


@dataclass
class LossConfig:
    """What training minimises; the losses the train and test lines report stay the plain cross-entropy."""

    label_smoothing: float = 0.0  # the target puts this much of its mass evenly on all classes
    class_weight: Any = None  # null, balanced (inverse class frequency of the training list), or one per class

    def __post_init__(self) -> None:
        _require(0 <= self.label_smoothing < 1, f"loss.label_smoothing={self.label_smoothing} must be in [0, 1).")
        weights = self.class_weight
        if weights is None or weights == "balanced":
            return
        _require(isinstance(weights, (list, tuple)) and len(weights) > 0
                 and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights),
                 f"loss.class_weight={weights} must be null, balanced, or a list of numbers, one per class.")
        _require(all(math.isfinite(w) and w >= 0 for w in weights) and any(w > 0 for w in weights),
                 f"loss.class_weight={weights}: the weights must be finite, >= 0, and not all 0.")


@dataclass
class RestoreRule:
    """Variables whose name matches `pattern` (re.search) look for re.sub(pattern, to, name) in the checkpoint."""

    pattern: str = MISSING
    to: str = MISSING


@dataclass
class RestoreConfig:
    """Where a run's first weights come from when it has no checkpoint of its own."""

    path: Optional[str] = None  # a TF1 or TF2 checkpoint (prefix or folder) or a Keras .h5 weights file
    rules: List[RestoreRule] = field(default_factory=list)  # ordered; the first match wins; else own name
    skip: List[str] = field(default_factory=list)  # patterns of variables to initialise fresh (a new head)
    strict: bool = True  # a missing key or a shape or dtype mismatch stops the run; false: fresh, and said
    anyway: bool = False  # restore even over this run's own checkpoint (the seed's RESTORE_ANYWAY)
    key_prefix: str = ""  # put before every key, for checkpoints saved under a scope (resnet_v1_50/)
    requires: Dict[str, Any] = field(default_factory=dict)  # network settings a shipped mapping is written for
    preprocessing: Optional[str] = None  # the input scaling the checkpoint was trained with (see PREPROCESSING)

    def __post_init__(self) -> None:
        _require(self.preprocessing is None or self.preprocessing in PREPROCESSING,
                 f"restore.preprocessing={self.preprocessing!r} is not one of {', '.join(PREPROCESSING)}.")


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
            _require(getattr(self, key) >= 1, f"schedule.{key}={getattr(self, key)} must be at least 1.")


@dataclass
class TrainSchedule(TrainingSchedule):
    """Train up to `steps` in total, without testing (the seed's train script)."""

    steps: int = 1000  # the run's total step count: rerun with a larger value to continue

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("schedule.steps", self.steps)


@dataclass
class TestSchedule(ScheduleConfig):
    """Evaluate one checkpoint of a run (the seed's test script)."""

    step: Optional[int] = None  # default: the latest checkpoint
    split: str = "test"  # test, or val: the run's validation set (reader.val or its saved reader.val_split)

    def __post_init__(self) -> None:
        _require(self.split in ("test", "val"), f"schedule.split={self.split!r} is not one of test, val.")


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
        _require(len(self.stages) > 0, "schedule.stages is empty: give at least one {lr, steps}.")
        for i, stage in enumerate(self.stages):
            _rate(f"schedule.stages[{i}].lr", stage.lr)
            _positive(f"schedule.stages[{i}].steps", stage.steps)
        _require(0 <= self.warmup_steps <= self.stages[0].steps,
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
        _positive("schedule.steps", self.steps)
        _require(0 <= self.warmup_steps < self.steps,
                 f"schedule.warmup_steps={self.warmup_steps} must be in [0, schedule.steps={self.steps}).")
        _require(math.isfinite(self.min_lr) and self.min_lr >= 0,
                 f"schedule.min_lr={self.min_lr} must be a finite number >= 0.")
        _require(self.eval_every >= 1, f"schedule.eval_every={self.eval_every} must be at least 1.")


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
                _positive(f"schedule.{key}", getattr(self, key))
        _require(self.warmup_steps is None or self.warmup_steps >= 0,
                 f"schedule.warmup_steps={self.warmup_steps} must be 0 or more.")
        _require(self.crop is None or self.resize is None or self.resize >= self.crop,
                 f"schedule.resize={self.resize} must be at least schedule.crop={self.crop}.")


@dataclass
class PatienceSchedule(TrainingSchedule):
    """Test every eval_every steps; when the test loss stops improving, go back to the best and lower the rate."""

    eval_every: int = 500  # steps between tests
    patience: int = 3  # tests without improvement before the rate drops
    factor: float = 0.1  # the rate is multiplied by this at each drop
    max_decays: int = 2  # stop at the next plateau after this many drops
    max_steps: Optional[int] = None  # stop at this step in any case
    max_loss: Optional[float] = None  # a test loss above this counts as a blow-up, like NaN
    keep: int = 1  # latest checkpoints kept besides the best

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eval_every", "patience"):
            _require(getattr(self, key) >= 1, f"schedule.{key}={getattr(self, key)} must be at least 1.")
        _require(0 < self.factor < 1, f"schedule.factor={self.factor} must be between 0 and 1.")
        _require(self.max_decays >= 0, f"schedule.max_decays={self.max_decays} must be 0 or more.")
        if self.max_steps is not None:
            _positive("schedule.max_steps", self.max_steps)
        if self.max_loss is not None:
            _positive("schedule.max_loss", self.max_loss)


@dataclass
class HyperSchedule(PatienceSchedule):
    """Patience for each value of one config key in turn, until the best loss stops improving (validation first)."""

    param: str = MISSING  # the config key to vary, e.g. network.width
    values: List[Any] = MISSING  # tried in this order, each in its own sub-folder
    hyper_patience: int = 1  # values without a better best loss before stopping
    warm_start: bool = False  # start each value from the previous value's best weights

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(len(self.values) > 0, "schedule.values is empty: list the values of schedule.param to try.")
        repeated = [v for i, v in enumerate(self.values) if v in self.values[:i]]
        _require(not repeated, f"schedule.values repeats {repeated[0] if repeated else ''}: each value is tried once.")
        _require(self.hyper_patience >= 1, f"schedule.hyper_patience={self.hyper_patience} must be at least 1.")
        _require(not self.param.startswith(("schedule.", "runtime.")),
                 f"schedule.param={self.param}: the {self.param.split('.')[0]} settings are fixed for the whole "
                 "search (runtime settings apply once per process); pick a network, optimizer, reader key or seed.")


@dataclass
class WatchSchedule(ScheduleConfig):
    """Test every new checkpoint of a training run as it appears (the seed's test_many)."""

    run: str = MISSING  # the training run folder to follow
    poll: float = 5.0  # seconds between looks for new checkpoints
    timeout: float = 3600.0  # stop after this many seconds without a new checkpoint

    def __post_init__(self) -> None:
        _positive("schedule.poll", self.poll)
        _positive("schedule.timeout", self.timeout)


@dataclass
class RecalibrateSchedule(ScheduleConfig):
    """Re-estimate batch-norm statistics of the latest checkpoint over training batches, then test."""

    batches: int = 100  # training batches the statistics are averaged over

    def __post_init__(self) -> None:
        _positive("schedule.batches", self.batches)


@dataclass
class InspectSchedule(ScheduleConfig):
    """List the network's layers and how each trains; with restore.path, a checkpoint's keys and the mapping."""

    filter: Optional[str] = None  # a regex: only layers, keys and variables that match


@dataclass
class ExportSchedule(ScheduleConfig):
    """Write one checkpoint of a run as models to deploy, in RUN/export/step-N/ with export.json."""

    step: Optional[int] = None  # default: the run's best step (best.json) when it has one, else the latest
    formats: List[str] = field(default_factory=lambda: ["saved_model", "keras"])  # saved_model, keras, tflite
    quantize: Optional[str] = None  # dynamic: a dynamic-range quantized TFLite file beside the float one

    def __post_init__(self) -> None:
        _require(len(self.formats) > 0, f"schedule.formats is empty: list some of {', '.join(EXPORT_FORMATS)}.")
        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        _require(not unknown, f"schedule.formats={self.formats}: {', '.join(map(str, unknown))} is not one of "
                              f"{', '.join(EXPORT_FORMATS)}.")
        _require(self.quantize in (None, "dynamic"), f"schedule.quantize={self.quantize!r} is not dynamic or null.")
        _require(self.quantize is None or "tflite" in self.formats,
                 "schedule.quantize=dynamic quantizes the TFLite file: add tflite to schedule.formats.")


@dataclass
class PredictSchedule(ScheduleConfig):
    """Classify images with a run's checkpoint or an exported SavedModel; results in this job's own folder."""

    images: str = MISSING  # a list file (labels optional), a class-folder tree, or a folder searched for images
    run: Optional[str] = None  # a run folder: its best step (best.json), else its latest, or schedule.step
    model: Optional[str] = None  # an exported model: RUN/export/step-N or its saved_model folder
    step: Optional[int] = None  # with schedule.run: the checkpoint to use

    def __post_init__(self) -> None:
        _require(self.run is not None or self.model is not None,
                 "schedule=predict needs one of schedule.run=RUN (a run folder) or schedule.model=PATH "
                 "(an exported SavedModel): neither is given.")
        _require(self.run is None or self.model is None,
                 f"schedule=predict needs one of schedule.run={self.run} or schedule.model={self.model}, "
                 "not both.")
        _require(self.step is None or self.run is not None, "schedule.step picks a checkpoint of schedule.run; "
                                                            "an exported model has one step already.")


# The schedules that write checkpoints into their run folder, so hold its lock; the others only read a run.
WRITERS = (TrainingSchedule, RecalibrateSchedule)


@dataclass
class RuntimeConfig:
    """How TensorFlow runs: set before the first TensorFlow import."""

    onednn: bool = True  # oneDNN CPU kernels (TensorFlow enables them only on newer CPUs by default)
    xla: bool = False  # compile the train and test steps with XLA
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16 (GPUs, with loss scaling)
    memory_growth: bool = True  # allocate GPU memory as needed, so processes can share a GPU
    intra_op_threads: int = 0  # 0: TensorFlow's choice (all cores)
    inter_op_threads: int = 0
    deterministic: bool = False  # deterministic kernels (slower); for exact reruns
    strategy: str = "default"  # default: one device | mirrored: this machine's devices | multi_worker: a cluster
    devices: List[str] = field(default_factory=list)  # mirrored's devices, e.g. [GPU:0, GPU:1]; [] all GPUs

    def __post_init__(self) -> None:
        _require(self.precision in PRECISIONS,
                 f"runtime.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}.")
        _require(self.strategy in STRATEGIES,
                 f"runtime.strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}.")
        _require(not self.devices or self.strategy == "mirrored",
                 f"runtime.devices={list(self.devices)} needs runtime.strategy=mirrored "
                 f"(runtime.strategy={self.strategy} runs on one device).")
        for device in self.devices:
            _require(bool(re.fullmatch(r"(CPU|GPU):\d+", str(device))),
                     f"runtime.devices: {device!r} is not a device name such as GPU:0 or CPU:1.")
        _require(len(set(self.devices)) == len(self.devices),
                 f"runtime.devices={list(self.devices)} names a device twice.")
        for key in ("intra_op_threads", "inter_op_threads"):
            _require(getattr(self, key) >= 0, f"runtime.{key} must be 0 (automatic) or positive.")


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
    resume: Optional[str] = None  # a run folder to continue in, with its saved config
    run_name: Optional[str] = None  # outputs/NAME as the run folder, so the same command continues the run
    sweep: Optional[str] = None  # a multirun's name: job folders multirun/NAME/<overrides>, resumable
    run_dir: str = "${hydra:runtime.output_dir}"  # this run's folder (set by Hydra)
    data_dir: str = "data"  # where the demo set is written

    def __post_init__(self) -> None:
        _require(0 <= self.seed < 2 ** 32, f"seed={self.seed} must be in [0, 2**32 - 1].")
        _require(self.top_k >= 1, f"top_k={self.top_k} must be at least 1.")
        _require(self.run_name is None or (bool(self.run_name) and "/" not in self.run_name),
                 f"run_name={self.run_name!r} must be a folder name without '/' (use hydra.run.dir for a path).")
        for key, wanted in self.restore.requires.items():
            actual = getattr(self.network, key)
            _require(actual == wanted, f"The restore mapping is written for network.{key}={wanted}, but "
                                       f"network.{key}={actual}: set network.{key}={wanted}, or pick another mapping.")
        if self.network.kind == "applications":
            arch = architectures.get(self.network.arch)
            _require(self.reader.image_size >= arch.min_size,
                     f"reader.image_size={self.reader.image_size} is below {self.network.arch}'s smallest input, "
                     f"{arch.min_size}x{arch.min_size}: set reader.image_size={arch.min_size} or more.")
        _require(not isinstance(self.schedule, CosineSchedule) or self.schedule.min_lr < self.optimizer.lr,
                 f"schedule.min_lr={getattr(self.schedule, 'min_lr', None)} must be below "
                 f"optimizer.lr={self.optimizer.lr}, the peak of the cosine.")
        _require(not (isinstance(self.schedule, ExportSchedule) and self.network.kind == "saved_model"
                      and "keras" in self.schedule.formats),
                 "schedule.formats has keras, which cannot hold network=saved_model's body (a .keras file keeps "
                 "only a reference to the SavedModel folder): pass 'schedule.formats=[saved_model]', with tflite "
                 "if wanted.")
        _require(not (self.network.weight_decay and self.optimizer.weight_decay),
                 f"network.weight_decay={self.network.weight_decay} (L2 in the loss) and optimizer.weight_decay="
                 f"{self.optimizer.weight_decay} (decoupled) are both set: pick one, e.g. network.weight_decay=0.")
        recalibrates = "schedule=recalibrate" if isinstance(self.schedule, RecalibrateSchedule) else \
            "schedule.recalibrate" if getattr(self.schedule, "recalibrate", 0) else None
        _require(not (self.network.ema and recalibrates),
                 f"network.ema={self.network.ema} with {recalibrates}: batch-norm statistics would be re-estimated "
                 "for the trained weights, but tests and exports use the averaged ones: leave one of them out.")
        devices = self.runtime.devices
        _require(not devices or self.reader.batch_size % len(devices) == 0,
                 f"reader.batch_size={self.reader.batch_size} does not divide by the {len(devices)} devices of "
                 f"runtime.devices={list(devices)}: it is the global batch, split evenly across them. Use a "
                 f"multiple of {len(devices)}.")
        if self.runtime.strategy == "multi_worker":
            _check_multi_worker(self.schedule)
        mode = input_preprocessing(self)
        if mode != "mean_std":
            _inert("reader", f"network.preprocessing={mode} (reader.mean and reader.std feed mean_std only)",
                   self.reader, ReaderConfig(), ["mean", "std"])


def _check_multi_worker(schedule: ScheduleConfig) -> None:
    """A cluster trains with the schedules of one run; a schedule that reads a run runs on the chief alone."""
    _require(not isinstance(schedule, (HyperSchedule, RecalibrateSchedule)),
             f"runtime.strategy=multi_worker runs schedule=train, fixed, cosine, bit or patience: "
             f"schedule={'hyper' if isinstance(schedule, HyperSchedule) else 'recalibrate'} runs in one process "
             "(runtime.strategy=default, or mirrored over this machine's devices).")
    if isinstance(schedule, TrainingSchedule):
        cluster.task()  # refuses a missing or bad TF_CONFIG now, before anything is written


def input_preprocessing(cfg: Config) -> str:
    """How the network scales its 0-255 input: network.preprocessing when set, else the network's own.

    The network's own: a Keras Application's family preprocessing; for a ResNet, the one
    the restore mapping's checkpoint was trained with, else mean_std (reader.mean and
    reader.std, worklab's default); for a Keras model file mean_std too; for a SavedModel
    feature extractor unit ([0, 1], TF Hub's convention for image inputs).
    """
    network = cfg.network
    if network.preprocessing:
        return network.preprocessing
    if network.kind == "applications":
        return architectures.get(network.arch).preprocessing
    if network.kind == "saved_model":
        return "unit"
    return (cfg.restore.preprocessing if network.kind == "resnet" else None) or "mean_std"


def hparams(cfg: Config) -> Dict[str, Any]:
    """The settings that tell runs apart, flattened to scalars for TensorBoard's HParams dashboard."""
    values = {"seed": cfg.seed, "schedule": type(cfg.schedule).__name__.removesuffix("Schedule").lower(),
              "reader.batch_size": cfg.reader.batch_size, "reader.image_size": cfg.reader.image_size}
    for section in ("network", "optimizer", "loss", "schedule"):
        for key, value in asdict(getattr(cfg, section)).items():
            values[f"{section}.{key}"] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return values


def register() -> None:
    """Store the schemas so conf/ files are checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, node in (("train", TrainSchedule), ("test", TestSchedule), ("fixed", FixedSchedule),
                       ("cosine", CosineSchedule), ("bit", BitSchedule),
                       ("patience", PatienceSchedule), ("hyper", HyperSchedule), ("watch", WatchSchedule),
                       ("inspect", InspectSchedule), ("recalibrate", RecalibrateSchedule),
                       ("export", ExportSchedule), ("predict", PredictSchedule)):
        cs.store(group="schema/schedule", name=name, node=node)


def to_plain(cfg: Any) -> Config:
    """Turn a composed DictConfig into the plain dataclasses the package works with.

    Hydra lets `+key=value` add a key the schema does not have (its own error message
    suggests the `+`); such a key would be carried along and never read, so it is refused.
    """
    unknown = _unknown_keys(cfg)
    if unknown:
        raise UserError(f"{', '.join(unknown)}: no such config key. `python run.py --cfg job` shows every key; "
                        "`+` cannot add keys worklab does not read.")
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as error:
        raise UserError(f"{error.full_key} has no value: pass {error.full_key}=...") from None


def _unknown_keys(node: Any, prefix: str = "") -> List[str]:
    """Keys of a composed config that its schema (the dataclass behind each node) does not define."""
    if OmegaConf.is_list(node):
        return [k for i, child in enumerate(node) if OmegaConf.is_config(child)
                for k in _unknown_keys(child, f"{prefix}[{i}].")]
    schema = OmegaConf.get_type(node)
    known = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    unknown = []
    for key in node:
        if known is not None and key not in known:
            unknown.append(f"{prefix}{key}")
            continue
        child = node._get_node(key)
        if OmegaConf.is_config(child) and not child._is_missing() and not child._is_none():
            unknown += _unknown_keys(child, f"{prefix}{key}.")
    return unknown


def with_value(cfg: Config, key: str, value: Any) -> Config:
    """A copy of `cfg` with `key` (a dotted path such as network.width) set to `value`, checked like an override."""
    node = OmegaConf.structured(cfg)
    if key not in _leaf_keys(node):
        raise UserError(f"schedule.param={key} is not a config key; keys look like network.width, "
                        "network.depth, optimizer.lr, reader.batch_size.")
    try:
        OmegaConf.update(node, key, value, merge=False)
    except Exception as error:  # OmegaConf's validation errors name the key and the type
        raise UserError(f"schedule.values: {key}={value!r} is not accepted: {str(error).splitlines()[0]}.") from None
    return OmegaConf.to_object(node)


def saved_config(run_dir: Path):
    """The config a run folder was started with, on the schema, less its schedule and folder (a DictConfig).

    Read without resolving: the saved `run_dir` refers to Hydra's runtime, which only the
    job that wrote it had.
    """
    saved_file = Path(run_dir) / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        raise UserError(f"{run_dir} is not a run folder: {saved_file} does not exist.")
    saved = OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False)
    node = OmegaConf.merge(OmegaConf.structured(Config),
                           {k: v for k, v in saved.items() if k not in ("schedule", "run_dir")})
    for override in older_worklab_overrides(saved):
        key, value = override.split("=", 1)
        OmegaConf.update(node, key, value)
    return node


def older_worklab_overrides(saved: Dict[str, Any]) -> List[str]:
    """Overrides that keep a run folder written by an older worklab meaning what it meant then.

    `saved` is the run's .hydra/config.yaml. Before network.preprocessing existed, every
    network took inputs normalised with reader.mean and reader.std: such a run keeps that
    (mean_std), whatever its restore mapping now says.
    """
    return [] if "preprocessing" in (saved.get("network") or {}) else ["network.preprocessing=mean_std"]


def load_run_config(run_dir: Path, schedule: ScheduleConfig) -> Config:
    """The config a run folder was started with, with `schedule` in place of its own schedule."""
    node = saved_config(run_dir)
    node.schedule = OmegaConf.structured(schedule)
    node.run_dir = str(run_dir)
    return OmegaConf.to_object(node)


def _leaf_keys(node: Any, prefix: str = "") -> List[str]:
    keys = []
    for key in node:
        child = node._get_node(key)
        path = f"{prefix}{key}"
        keys += _leaf_keys(child, path + ".") if OmegaConf.is_dict(child) else [path]
    return keys


def _run_folder(resume: Optional[str], run_name: Optional[str], fresh: str) -> str:
    """The resumed run's folder, outputs/<run_name>, or a new dated folder."""
    return resume or (f"outputs/{run_name}" if run_name else fresh)


def _sweep_folder(sweep: Optional[str], fresh: str) -> str:
    return f"multirun/{sweep}" if sweep else fresh


def _job_folder(sweep: Optional[str], number: int, overrides: str) -> str:
    """A named sweep's jobs are named by their overrides, so a relaunch finds its own folders again.

    Slashes in values become '%'; a name too long for a file system keeps its start and
    ends with a hash of the whole, which stays the same for the same overrides.
    """
    if not sweep:
        return str(number)
    name = (overrides or "defaults").replace("/", "%")
    if len(name) <= MAX_FOLDER_NAME:
        return name
    return f"{name[:MAX_FOLDER_NAME - 13]}..{hashlib.sha1(name.encode()).hexdigest()[:11]}"


def _threads_per_job() -> int:
    """TensorFlow threads for one job: all cores alone (0), cores / n_jobs under a parallel launcher."""
    try:
        jobs = HydraConfig.get().launcher.get("n_jobs")
    except ValueError:  # no Hydra run around (tests, the API)
        return 0
    cores = os.cpu_count() or 1
    if not jobs:
        return 0
    return max(1, cores // (cores if jobs < 0 else jobs))


OmegaConf.register_new_resolver("run_folder", _run_folder, replace=True)
OmegaConf.register_new_resolver("threads_per_job", _threads_per_job, replace=True)
OmegaConf.register_new_resolver("sweep_folder", _sweep_folder, replace=True)
OmegaConf.register_new_resolver("job_folder", _job_folder, replace=True)
register()
