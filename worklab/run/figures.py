"""Pictures of an evaluation for TensorBoard: its worst examples captioned, and its reliability diagram.

Both are drawn with PIL as float RGB arrays in [0, 1] of shape (height, width, 3), as
tf.summary.image takes them; no plotting library is needed.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageOps

TILE = 128  # the side of one example's picture in the grid
CAPTION = 14  # the caption's height under it
COLUMNS = 4


def worst_grid(worst: List[Dict], classes: List[str]) -> Optional[np.ndarray]:
    """The worst examples in rows of COLUMNS, each captioned "label -> predicted probability"
    ("ant -> bee 0.93"); None when there are none. A file that cannot be read shows grey."""
    if not worst:
        return None
    rows = -(-len(worst) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * TILE, rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, row in enumerate(worst):
        x, y = n % COLUMNS * TILE, n // COLUMNS * (TILE + CAPTION)
        sheet.paste(_thumbnail(row.get("path")), (x, y))
        draw.text((x + 2, y + TILE + 1), caption(row, classes), fill="black")
    return np.asarray(sheet, dtype=np.float32) / 255.0


def caption(row: Dict, classes: List[str]) -> str:
    predicted = classes[row["predicted"]] if row["predicted"] >= 0 else "none"
    probability = "" if row["probability"] is None else f" {row['probability']:.2f}"
    return f"{classes[row['label']]} -> {predicted}{probability}"


def _thumbnail(path: Optional[str]) -> Image.Image:
    """The file's upright image fitted into TILE x TILE on white; grey when there is no readable file."""
    tile = Image.new("RGB", (TILE, TILE), "white")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (TILE, TILE))
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, TypeError, AttributeError):  # no path, gone, or unreadable since the check
        return Image.new("RGB", (TILE, TILE), "grey")
    picture.thumbnail((TILE, TILE))
    tile.paste(picture, ((TILE - picture.width) // 2, (TILE - picture.height) // 2))
    return tile


def reliability_diagram(bins: List[Dict], size: int = 256) -> np.ndarray:
    """Accuracy (blue bars) against confidence per bin, with the diagonal a calibrated model would follow
    (grey) and each bin's mean confidence (red ticks); empty bins have no bar."""
    picture = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(picture)
    width = size / len(bins)
    for i, b in enumerate(bins):
        if b["count"]:
            left, right = i * width, (i + 1) * width - 1
            if b["accuracy"]:
                draw.rectangle([left, size * (1 - b["accuracy"]), right, size - 1], fill=(8, 48, 107))
            tick = size * (1 - b["confidence"])
            draw.line([left, tick, right, tick], fill=(200, 30, 30), width=2)
    draw.line([0, size - 1, size - 1, 0], fill=(150, 150, 150), width=1)
    return np.asarray(picture, dtype=np.float32) / 255.0
