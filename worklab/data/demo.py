"""The built-in demo image set, generated on first use, in two variants.

`python run.py` has to work on a fresh machine with no data and no network, so the
demo set is drawn with PIL instead of downloaded (the class shapes are in
`worklab.data.shapes`).

- shapes (the default): ten shapes and patterns. Each image holds one at a random
  position and size, in a random foreground colour on a random background colour of
  clearly different brightness: varied enough to be a real learning task, distinct
  enough for a small CNN at 32 px.
- hard: twenty-two classes, the ten and twelve that are each close to one of them.
  The object is smaller, its contrast is held to a band (_HARD_CONTRAST), and it sits
  among up to two distractors (thin lines and smaller shapes of other classes in other
  colours), with pixel noise on top: a small CNN at 32 px does not saturate it, so
  training recipes can be told apart.

Every image gets its own random generator seeded from (seed, split, class, index),
so the same arguments give byte-identical files and train and test are different
draws. A set is built in a hidden temporary folder and renamed into place, so a
set folder that exists is complete: killed or concurrent callers (the processes
of a parameter sweep) never see a half-written set. A killed build leaves only a
hidden `.demo-*` folder that nothing reads and that can be deleted.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Tuple

import numpy as np
from PIL import Image, ImageDraw

from worklab.data.shapes import BASIC, DRAW
from worklab.errors import UserError

log = logging.getLogger(__name__)

_MIN_IMAGE_SIZE = 16
_MIN_CONTRAST = 100  # luminance difference (0-255) between foreground and background
_LUMINANCE = np.array([0.299, 0.587, 0.114])
# The hard variant. Every colour's luminance differs from the background's by this range:
_HARD_CONTRAST = (80, 160)
_HARD_OBJECT = (0.45, 0.8)  # the object's box side, as a fraction of the image side
_HARD_DISTRACTOR = (0.1, 0.18)  # a distractor shape's box side, likewise
_HARD_DISTRACTORS = (0, 2)  # distractors per image, lowest and highest
_HARD_NOISE = 3.0  # standard deviation of the Gaussian pixel noise, in 0-255 units


def _gap(a, b):
    """The luminance difference (0-255) between two RGB colours."""
    return abs(_LUMINANCE @ (a - b))


def _rgb(colour):
    return tuple(int(c) for c in colour)


def _colours(rng):
    """Pick a random (foreground, background) RGB pair whose brightness differs by at least _MIN_CONTRAST.

    Rejection sampling keeps the full range of hues while guaranteeing the shape stays visible.
    """
    while True:
        fg, bg = rng.integers(0, 256, size=(2, 3))
        if _gap(fg, bg) >= _MIN_CONTRAST:
            return _rgb(fg), _rgb(bg)


def _contrasting(rng, bg):
    """Pick a random RGB colour whose brightness differs from `bg`'s by _HARD_CONTRAST (rejection sampling)."""
    low, high = _HARD_CONTRAST
    while True:
        colour = rng.integers(0, 256, size=3)
        if low <= _gap(colour, bg) <= high:
            return _rgb(colour)


def _box_size(size, sides, rng):
    """A random (w, h) box, each side a fraction in `sides` (lowest, highest) of the image side, 3 px or more."""
    low, high = sides
    return (int(s) for s in rng.integers(max(3, round(low * size)), round(high * size) + 1, size=2))


def _shape_mask(name, size, box, rng):
    """A `size` x `size` mask holding class `name` drawn into a box of `box` = (w, h) at a random position."""
    w, h = box
    drawn = Image.new("L", (w, h), 0)
    DRAW[name](ImageDraw.Draw(drawn), w, h, rng)
    mask = Image.new("L", (size, size), 0)
    mask.paste(drawn, (int(rng.integers(size - w + 1)), int(rng.integers(size - h + 1))))
    return mask


def _line_mask(size, rng):
    """A `size` x `size` mask holding one straight line, 1 or 2 px wide, between two random points."""
    mask = Image.new("L", (size, size), 0)
    ends = [int(v) for v in rng.integers(size, size=4)]
    ImageDraw.Draw(mask).line(ends, fill=255, width=int(rng.integers(1, 3)))
    return mask


def _draw_image(name, size, rng):
    """Draw one `size` x `size` RGB image of class `name` for the shapes variant.

    The class function draws a mask into a box of random size (half to 0.9 of the image
    per side); the box is pasted at a random position and coloured through the mask.
    """
    fg, bg = _colours(rng)
    mask = _shape_mask(name, size, _box_size(size, (0.5, 0.9), rng), rng)
    return Image.composite(Image.new("RGB", mask.size, fg), Image.new("RGB", mask.size, bg), mask)


def _draw_hard(name, size, rng):
    """Draw one `size` x `size` RGB image of class `name` for the hard variant.

    On a random background: distractors first (each a line or a smaller shape of another
    class, in its own colour), then the object on top, every colour of low contrast to
    the background; then Gaussian noise over every pixel.
    """
    bg = rng.integers(0, 256, size=3)
    image = Image.new("RGB", (size, size), _rgb(bg))
    others = [other for other in DRAW if other != name]
    for _ in range(int(rng.integers(_HARD_DISTRACTORS[0], _HARD_DISTRACTORS[1] + 1))):
        colour = _contrasting(rng, bg)
        if rng.random() < 0.5:
            mask = _line_mask(size, rng)
        else:
            other = others[int(rng.integers(len(others)))]
            mask = _shape_mask(other, size, _box_size(size, _HARD_DISTRACTOR, rng), rng)
        image.paste(colour, mask=mask)
    image.paste(_contrasting(rng, bg), mask=_shape_mask(name, size, _box_size(size, _HARD_OBJECT, rng), rng))
    pixels = np.asarray(image, dtype=float) + rng.normal(0.0, _HARD_NOISE, size=(size, size, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


class Variant(NamedTuple):
    """A kind of demo set: its classes, in label order, and how one image of a class is drawn."""

    classes: Tuple[str, ...]
    draw: Callable  # (class name, image size, random generator) -> PIL RGB image


VARIANTS = {"shapes": Variant(BASIC, _draw_image), "hard": Variant(tuple(DRAW), _draw_hard)}
CLASSES = VARIANTS["shapes"].classes


def _write_split(folder, split, split_id, per_class, size, seed, variant):
    """Write `per_class` images of every class under folder/split and the label file folder/split.json.

    Returns the number of images written.
    """
    labels = {}
    for class_id, name in enumerate(variant.classes):
        (folder / split / name).mkdir(parents=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, split_id, class_id, index])
            path = f"{split}/{name}/{index:05d}.png"
            variant.draw(name, size, rng).save(folder / path, format="PNG")
            labels[path] = name
    (folder / f"{split}.json").write_text(json.dumps(labels, indent=2, sort_keys=True) + "\n")
    return len(labels)


def _check(image_size, train_per_class, test_per_class, variant):
    """Reject arguments that would give unreadable images, an empty split or no such set, naming the config key."""
    if variant not in VARIANTS:
        raise UserError(f"reader.demo.variant={variant!r} is not one of {', '.join(VARIANTS)}.")
    for key, value, least in (
        ("image_size", image_size, _MIN_IMAGE_SIZE),
        ("train_per_class", train_per_class, 1),
        ("test_per_class", test_per_class, 1),
    ):
        if value < least:
            raise UserError(f"reader.demo.{key}={value} must be at least {least}.")


def ensure_demo(root, image_size=48, train_per_class=100, test_per_class=30, seed=0, variant="shapes"):
    """Write the demo set under `root` if it is not there yet; return (train_json, test_json).

    The set lives in its own folder named after all the arguments (demo-48px-100x30-seed0
    for the shapes variant, demo-hard-48px-100x30-seed0 for the hard one), so different
    arguments never clash, and a folder that exists is complete (it only appears by an
    atomic rename), so it is returned as is. Otherwise the set is built in a temporary
    sibling folder and renamed into place; if another caller renamed the same set first,
    ours is discarded. The label files map paths relative to their own folder to class names.
    """
    _check(image_size, train_per_class, test_per_class, variant)
    root = Path(root)
    prefix = "demo" if variant == "shapes" else f"demo-{variant}"
    set_dir = root / f"{prefix}-{image_size}px-{train_per_class}x{test_per_class}-seed{seed}"
    if not set_dir.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".demo-"))
        try:
            count = _write_split(tmp, "train", 0, train_per_class, image_size, seed, VARIANTS[variant])
            count += _write_split(tmp, "test", 1, test_per_class, image_size, seed, VARIANTS[variant])
            os.rename(tmp, set_dir)
        except OSError:
            if not set_dir.is_dir():
                raise
        else:
            log.info("wrote %d demo images (%d classes) to %s", count, len(VARIANTS[variant].classes), set_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return set_dir / "train.json", set_dir / "test.json"
