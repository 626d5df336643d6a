"""The built-in demo image set: ten drawn shapes and patterns, generated on first use.

`python run.py` has to work on a fresh machine with no data and no network, so the
demo set is drawn with PIL instead of downloaded. Each image holds one shape or
pattern at a random position and size, in a random foreground colour on a random
background colour of clearly different brightness: varied enough to be a real
learning task, distinct enough for a small CNN at 32 px.

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

import numpy as np
from PIL import Image, ImageDraw

from worklab.errors import UserError

log = logging.getLogger(__name__)

_MIN_IMAGE_SIZE = 16
_MIN_CONTRAST = 100  # luminance difference (0-255) between foreground and background


def _period(w, h, rng):
    """Pick a pattern period in pixels: 2.5 to 4 repeats across the box, never under 4 px."""
    return max(4, round(min(w, h) / rng.uniform(2.5, 4.0)))


def _circle(draw, w, h, rng):
    """Fill the box with an ellipse."""
    draw.ellipse((0, 0, w - 1, h - 1), fill=255)


def _square(draw, w, h, rng):
    """Fill the whole box."""
    draw.rectangle((0, 0, w - 1, h - 1), fill=255)


def _triangle(draw, w, h, rng):
    """Fill a triangle with its base on the top or bottom edge and its apex anywhere on the other."""
    apex = int(rng.integers(w))
    top, bottom = (0, h - 1) if rng.random() < 0.5 else (h - 1, 0)
    draw.polygon([(apex, top), (0, bottom), (w - 1, bottom)], fill=255)


def _cross(draw, w, h, rng):
    """Draw a plus sign: one centred vertical and one centred horizontal bar."""
    thickness = rng.uniform(0.2, 0.35)
    bar_w, bar_h = max(2, round(w * thickness)), max(2, round(h * thickness))
    draw.rectangle(((w - bar_w) // 2, 0, (w - bar_w) // 2 + bar_w - 1, h - 1), fill=255)
    draw.rectangle((0, (h - bar_h) // 2, w - 1, (h - bar_h) // 2 + bar_h - 1), fill=255)


def _ring(draw, w, h, rng):
    """Draw a thick elliptical outline: a circle with a hole."""
    width = max(2, round(min(w, h) * rng.uniform(0.12, 0.22)))
    draw.ellipse((0, 0, w - 1, h - 1), outline=255, width=width)


def _hstripes(draw, w, h, rng):
    """Draw horizontal bars, half a period thick, at a random phase."""
    period = _period(w, h, rng)
    for y in range(-int(rng.integers(period)), h, period):
        draw.rectangle((0, y, w - 1, y + period // 2 - 1), fill=255)


def _vstripes(draw, w, h, rng):
    """Draw vertical bars, half a period thick, at a random phase."""
    period = _period(w, h, rng)
    for x in range(-int(rng.integers(period)), w, period):
        draw.rectangle((x, 0, x + period // 2 - 1, h - 1), fill=255)


def _checker(draw, w, h, rng):
    """Draw a checkerboard of period-sized cells at a random phase (smaller cells blur at 32 px)."""
    cell = _period(w, h, rng)
    x0, y0 = -int(rng.integers(2 * cell)), -int(rng.integers(2 * cell))
    for row, y in enumerate(range(y0, h, cell)):
        for col, x in enumerate(range(x0, w, cell)):
            if (row + col) % 2 == 0:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=255)


def _diagonal(draw, w, h, rng):
    """Draw 45-degree bars leaning left or right, half a period wide, at a random phase."""
    period = _period(w, h, rng)
    mirror = rng.random() < 0.5
    for x in range(-h - int(rng.integers(period)), w, period):
        bar = [(x, 0), (x + period // 2, 0), (x + period // 2 + h, h), (x + h, h)]
        draw.polygon([(w - 1 - px if mirror else px, py) for px, py in bar], fill=255)


def _dots(draw, w, h, rng):
    """Draw a square grid of small round dots at a random phase."""
    period = _period(w, h, rng)
    radius = max(1.5, period * rng.uniform(0.22, 0.32))
    x0, y0 = int(rng.integers(period)), int(rng.integers(period))
    for cy in range(y0, h, period):
        for cx in range(x0, w, period):
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)


_DRAW = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
    "hstripes": _hstripes,
    "vstripes": _vstripes,
    "checker": _checker,
    "diagonal": _diagonal,
    "dots": _dots,
}
CLASSES = tuple(_DRAW)


def _colours(rng):
    """Pick a random (foreground, background) RGB pair whose brightness differs by at least _MIN_CONTRAST.

    Rejection sampling keeps the full range of hues while guaranteeing the shape stays visible.
    """
    weights = np.array([0.299, 0.587, 0.114])
    while True:
        fg, bg = rng.integers(0, 256, size=(2, 3))
        if abs(weights @ (fg - bg)) >= _MIN_CONTRAST:
            return tuple(int(c) for c in fg), tuple(int(c) for c in bg)


def _draw_image(name, size, rng):
    """Draw one `size` x `size` RGB image of class `name`.

    The class function draws a mask into a box of random size (half to 0.9 of the image
    per side); the box is pasted at a random position and coloured through the mask.
    """
    fg, bg = _colours(rng)
    w, h = (int(s) for s in rng.integers(round(0.5 * size), round(0.9 * size) + 1, size=2))
    box = Image.new("L", (w, h), 0)
    _DRAW[name](ImageDraw.Draw(box), w, h, rng)
    mask = Image.new("L", (size, size), 0)
    mask.paste(box, (int(rng.integers(size - w + 1)), int(rng.integers(size - h + 1))))
    return Image.composite(Image.new("RGB", mask.size, fg), Image.new("RGB", mask.size, bg), mask)


def _write_split(folder, split, split_id, per_class, size, seed):
    """Write `per_class` images of every class under folder/split and the label file folder/split.json.

    Returns the number of images written.
    """
    labels = {}
    for class_id, name in enumerate(CLASSES):
        (folder / split / name).mkdir(parents=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, split_id, class_id, index])
            path = f"{split}/{name}/{index:05d}.png"
            _draw_image(name, size, rng).save(folder / path, format="PNG")
            labels[path] = name
    (folder / f"{split}.json").write_text(json.dumps(labels, indent=2, sort_keys=True) + "\n")
    return len(labels)


def _check(image_size, train_per_class, test_per_class):
    """Reject arguments that would give unreadable images or an empty split, naming the config key."""
    for key, value, least in (
        ("image_size", image_size, _MIN_IMAGE_SIZE),
        ("train_per_class", train_per_class, 1),
        ("test_per_class", test_per_class, 1),
    ):
        if value < least:
            raise UserError(f"reader.demo.{key}={value} must be at least {least}.")


def ensure_demo(root, image_size=48, train_per_class=100, test_per_class=30, seed=0):
    """Write the demo set under `root` if it is not there yet; return (train_json, test_json).

    The set lives in its own folder named after all the arguments, so different arguments
    never clash, and a folder that exists is complete (it only appears by an atomic rename),
    so it is returned as is. Otherwise the set is built in a temporary sibling folder and
    renamed into place; if another caller renamed the same set first, ours is discarded.
    The label files map paths relative to their own folder to class names.
    """
    _check(image_size, train_per_class, test_per_class)
    root = Path(root)
    set_dir = root / f"demo-{image_size}px-{train_per_class}x{test_per_class}-seed{seed}"
    if not set_dir.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".demo-"))
        try:
            count = _write_split(tmp, "train", 0, train_per_class, image_size, seed)
            count += _write_split(tmp, "test", 1, test_per_class, image_size, seed)
            os.rename(tmp, set_dir)
        except OSError:
            if not set_dir.is_dir():
                raise
        else:
            log.info("wrote %d demo images (%d classes) to %s", count, len(CLASSES), set_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return set_dir / "train.json", set_dir / "test.json"
