"""schedule=bit: BiT's HyperRule, which picks the training length and crop size from the data.

From "Big Transfer (BiT): General Visual Representation Learning" (Kolesnikov et al.):
  * steps: 500 below 20k training images, 10k below 500k, else 20k; a linear warmup of
    100 steps below 20k images, else 500;
  * the rate (optimizer.lr, 0.003 in experiment=bit) divided by 10 at 30, 60 and 90% of the steps;
  * crops: training crops of 128 px out of the image resized to 160 when the median
    training image is below 96x96 pixels in area, else 384 out of 448; tests at the crop size;
  * mixup with alpha 0.1 from 20k training images on.
`settle` reads the training list (after any validation split) before the run's parts
are built, and records what the rule chose in bit.json, so a resumed run keeps it even if
the list changed; a schedule.* value that is set wins over the rule. The reader settings
it decides (the crop size above all, which testing, export and predict use) are saved in
settled.json, part of the run's config from then on. The run is then the
fixed schedule of those stages, tested after each stage.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Dict, List, Sequence

from PIL import Image

from worklab.config.root import Config
from worklab.config.schedules import BitSchedule, FixedSchedule, Stage
from worklab.errors import UserError
from worklab.run.inputs import RunInputs
from worklab.run.runfolder import RunFolder
from worklab.schedules import fixed

log = logging.getLogger("worklab")

RECORD = "bit.json"
SAMPLE = 1000  # training images whose size is read for the median area
DECAYS = (0.3, 0.6, 0.9)  # fractions of the steps where the rate is divided by 10


def hyperrule(count: int, median_area: float) -> Dict:
    """The HyperRule's choices for `count` training images whose median area is `median_area` pixels."""
    small, large = count < 20_000, count >= 500_000
    low = median_area < 96 * 96
    return {"steps": 500 if small else 20_000 if large else 10_000, "warmup_steps": 100 if small else 500,
            "crop": 128 if low else 384, "resize": 160 if low else 448, "mixup": 0.0 if small else 0.1}


def stages(lr: float, steps: int) -> List[Stage]:
    """The rate lr, divided by 10 at 30, 60 and 90% of `steps`; a stage too short to hold a step is left out."""
    plan, start = [], 0
    for i, end in enumerate([*(round(steps * f) for f in DECAYS), steps]):
        if end > start:
            plan.append(Stage(lr / 10 ** i, end - start))
            start = end
    return plan


def median_area(paths: Sequence[str]) -> float:
    """The median width x height of up to SAMPLE images spread evenly over the list (headers only)."""
    picked = paths[::max(1, len(paths) // SAMPLE)][:SAMPLE]
    areas = []
    for path in picked:
        with Image.open(path) as image:
            areas.append(image.width * image.height)
    areas.sort()
    return float(areas[len(areas) // 2])


def settle(cfg: Config) -> Config:
    """The run's config with the rule's choices in place: the fixed schedule of its stages and its crops.

    The reader settings it decides are the run's own from then on: saved in settled.json, they
    are applied wherever the run's config is read again (test, export, predict, watch, resume).
    A reader key the rule overrides is named in the log with the value that holds instead.
    """
    s: BitSchedule = cfg.schedule
    folder = RunFolder(cfg.run_dir)
    chosen = folder.read(RECORD, ("train_images", "median_area", "steps", "warmup_steps", "crop", "resize", "mixup"))
    if chosen is None:
        images = RunInputs(cfg, folder).train_images
        if len(images) < cfg.reader.batch_size:
            raise UserError(f"schedule=bit: the training set has {len(images)} image(s), fewer than one batch "
                            f"(reader.batch_size={cfg.reader.batch_size}); the HyperRule needs at least a batch.")
        area = median_area(images.paths)
        chosen = {"train_images": len(images), "median_area": area, **hyperrule(len(images), area)}
        if folder.writable:
            folder.write(RECORD, chosen)
    settings = {k: chosen[k] if getattr(s, k) is None else getattr(s, k)
                for k in ("steps", "warmup_steps", "crop", "resize")}
    plan = stages(cfg.optimizer.lr, settings["steps"])
    warmup = min(settings["warmup_steps"], plan[0].steps)
    drops = list(itertools.accumulate(stage.steps for stage in plan))[:-1]
    log.info("BiT HyperRule for %d training images of median area %.0f px: %d steps (rate / 10 at %s), warmup %d, "
             "crops of %d px from %d px, mixup %g (%s)", chosen["train_images"], chosen["median_area"],
             settings["steps"], ", ".join(map(str, drops)), warmup, settings["crop"], settings["resize"],
             chosen["mixup"], folder.file(RECORD))
    scale = (settings["crop"] / settings["resize"]) ** 2
    reader = {"reader.image_size": settings["crop"], "reader.augment.crop": "random_resized",
              "reader.augment.crop_scale": [scale, scale], "reader.augment.crop_ratio": [1.0, 1.0],
              "reader.augment.mixup": chosen["mixup"]}
    _name_overridden(cfg, reader)
    if folder.writable:
        folder.write("settled.json", {"by": "schedule=bit: the HyperRule (bit.json)", "settings": reader})
    augment = replace(cfg.reader.augment, crop="random_resized", crop_scale=[scale, scale], crop_ratio=[1.0, 1.0],
                      mixup=chosen["mixup"])
    schedule = FixedSchedule(stages=plan, warmup_steps=warmup, log_every=s.log_every, save_every=s.save_every,
                             keep=s.keep)
    return replace(cfg, schedule=schedule, reader=replace(cfg.reader, image_size=settings["crop"], augment=augment))


def _name_overridden(cfg: Config, settled: Dict) -> None:
    """Log each reader key the rule sets otherwise than the command did, with the value that holds."""
    for key, value in settled.items():
        given = cfg
        for part in key.split("."):
            given = getattr(given, part)
        if (list(given) if isinstance(value, list) else given) != value:
            log.info("%s=%s is overridden by the HyperRule: %s holds for this run (schedule.crop and schedule.resize "
                     "set the crop)", key, given, value)


def run(parts) -> Dict:
    """The fixed schedule of the stages `settle` chose."""
    return fixed.run(parts)

