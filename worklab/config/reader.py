"""The reader's schema: where the images are, how they become batches, and the training augmentations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

from worklab.config.checks import inert, positive, require

SOURCES = ("demo", "json", "folder")
CROPS = ("zoom", "random_resized")  # reader.augment.crop: the training crop window (worklab.data.crops)
RESIZES = ("squash", "crop")  # reader.resize: how an image becomes image_size x image_size (worklab.data.reader)
RESAMPLES = ("bilinear", "area", "antialias")  # reader.resample: every resize to image_size (worklab.data.reader)
DEMO_VARIANTS = ("shapes", "hard")  # worklab.data.demo.VARIANTS
LEAKAGE = ("warn", "refuse", "drop", "off")  # reader.leakage (worklab.data.leakage)


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
        require(self.crop in CROPS, f"reader.augment.crop={self.crop!r} is not one of {', '.join(CROPS)}.")
        for key in ("zoom", "shift", "brightness", "contrast"):
            value = getattr(self, key)
            require(value >= 0, f"reader.augment.{key}={value} must be 0 (off) or positive.")
        require(self.shift < 0.5, f"reader.augment.shift={self.shift} must be below 0.5.")
        require(self.contrast < 1, f"reader.augment.contrast={self.contrast} must be below 1.")
        for key in ("mixup", "cutmix"):
            value = getattr(self, key)
            require(math.isfinite(value) and value >= 0,
                    f"reader.augment.{key}={value} must be 0 (off) or a finite positive number, the alpha of "
                    f"Beta(alpha, alpha).")
        require(0 <= self.mix_prob <= 1, f"reader.augment.mix_prob={self.mix_prob} must be in [0, 1].")
        if not (self.mixup or self.cutmix):
            inert("reader.augment", "reader.augment.mixup=0 and reader.augment.cutmix=0", self, AugmentConfig,
                  ["mix_prob"])
        for key in ("crop_scale", "crop_ratio"):
            value = list(getattr(self, key))
            require(len(value) == 2 and value[0] <= value[1],
                    f"reader.augment.{key}={value} must be a range [low, high] with low <= high.")
        require(0 < self.crop_scale[0] and self.crop_scale[1] <= 1,
                f"reader.augment.crop_scale={list(self.crop_scale)} must lie in (0, 1]: fractions of the area.")
        require(self.crop_ratio[0] > 0, f"reader.augment.crop_ratio={list(self.crop_ratio)} must be positive.")
        unused = (["crop_scale", "crop_ratio"] if self.crop == "zoom"
                  else [k for k in ("zoom", "shift") if getattr(self, k)])  # 0 (off) agrees with random_resized
        inert("reader.augment", f"reader.augment.crop={self.crop}", self, AugmentConfig, unused)


@dataclass
class DemoConfig:
    """Kind and size of the built-in demo set written under data_dir on first use."""

    variant: str = "shapes"  # shapes: 10 clear classes | hard: 22 confusable classes in clutter and noise
    image_size: int = 48
    train_per_class: int = 100
    test_per_class: int = 30
    seed: int = 0  # the drawing's seed, apart from the run's seed so a seed sweep keeps the data

    def __post_init__(self) -> None:
        require(self.variant in DEMO_VARIANTS,
                f"reader.demo.variant={self.variant!r} is not one of {', '.join(DEMO_VARIANTS)}.")
        for key in ("image_size", "train_per_class", "test_per_class"):
            positive(f"reader.demo.{key}", getattr(self, key))


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
    new_data: bool = False  # go on training a run on other lists than it was trained on (fine-tuning on more data)
    leakage: str = "warn"  # copies of training images in held-out lists: warn | refuse | drop (the held-out copy) | off
    cache: bool = False  # keep decoded, resized images in memory
    resize: str = "squash"  # squash: to image_size x image_size, aspect ignored | crop: aspect kept, centre crop
    crop_fraction: float = 0.875  # resize=crop: the centre square's side as a fraction of the shorter side
    resample: str = "bilinear"  # bilinear | area: pixel means, smoother, slower | antialias: slower again
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    def __post_init__(self) -> None:
        require(self.source in SOURCES,
                f"reader.source={self.source!r} is not one of {', '.join(SOURCES)}.")
        positive("reader.image_size", self.image_size)
        positive("reader.batch_size", self.batch_size)
        if self.test_batch_size is not None:
            positive("reader.test_batch_size", self.test_batch_size)
        for key in ("mean", "std"):
            require(len(getattr(self, key)) == 3,
                    f"reader.{key}={getattr(self, key)} must list 3 values, one per RGB channel.")
        require(all(s > 0 for s in self.std), f"reader.std={self.std} must be positive.")
        require(0 <= self.val_split < 1, f"reader.val_split={self.val_split} must be in [0, 1).")
        require(not (self.val and self.val_split),
                f"reader.val={self.val} and reader.val_split={self.val_split}: give one validation set, not both.")
        require(self.leakage in LEAKAGE, f"reader.leakage={self.leakage!r} is not one of {', '.join(LEAKAGE)}.")
        require(self.resize in RESIZES, f"reader.resize={self.resize!r} is not one of {', '.join(RESIZES)}.")
        require(self.resample in RESAMPLES,
                f"reader.resample={self.resample!r} is not one of {', '.join(RESAMPLES)}.")
        require(0 < self.crop_fraction <= 1, f"reader.crop_fraction={self.crop_fraction} must be in (0, 1].")
        if self.resize == "squash":
            inert("reader", "reader.resize=squash", self, ReaderConfig, ["crop_fraction"])
        # The cache holds images already resized to image_size: a random_resized window (down to
        # crop_scale[0] of the area) cut from it and enlarged back would be blurred, unlike the
        # same window cut from the decoded file, so the two are not combined.
        require(not (self.cache and self.augment.crop == "random_resized"),
                "reader.cache=true with reader.augment.crop=random_resized: the cache holds images already "
                f"resized to {self.image_size} px, and random_resized crops a window down to "
                f"{self.augment.crop_scale[0]:g} of the area, which would be enlarged from those small copies "
                "instead of cut from the decoded image; set reader.cache=false (random crops of JPEGs decode "
                "only their window) or reader.augment.crop=zoom.")
