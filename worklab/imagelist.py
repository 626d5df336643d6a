"""Image lists: which files to read and their labels, checked before any training.

A list comes from a JSON file (the seed's {path: label} dict, or a list of
{"path": ..., "label": ...} objects) or from a folder of class sub-folders. Relative
paths resolve against the list file's folder. Labels are ints or class names; the
class map (index -> name) is built from the training list, saved in the run folder
and reused, so test labels and later runs agree on indices. Nothing here imports
TensorFlow: a bad list fails in well under a second.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image

from worklab.atomic import write_json
from worklab.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # what tf.io.decode_image reads
BMP_MODES = ("RGB", "RGBA", "L")  # TensorFlow reads palette BMPs as grey palette indices
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SHOWN = 5  # offending paths quoted in a message

Entry = Tuple[str, object]  # (absolute path, raw label)


@dataclass
class ImageList:
    """Absolute image paths with class indices; `source` names the list in messages."""

    source: str
    paths: List[str]
    labels: List[int]

    def __len__(self) -> int:
        return len(self.paths)


def read_entries(source: str, kind: str) -> List[Entry]:
    """Read (path, label) pairs from a JSON list file (kind 'json') or a class-folder root ('folder')."""
    if kind == "folder":
        return _folder_entries(Path(source))
    return _json_entries(Path(source))


def _json_entries(path: Path) -> List[Entry]:
    if not path.is_file():
        raise UserError(f"Image list {path} does not exist.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"Image list {path} is not valid JSON: {error}.") from None
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list) and all(isinstance(e, dict) and {"path", "label"} <= e.keys() for e in data):
        pairs = [(e["path"], e["label"]) for e in data]
    else:
        raise UserError(f"Image list {path} must be a JSON object {{path: label}} "
                        'or a list of {"path": ..., "label": ...} objects.')
    if not pairs:
        raise UserError(f"Image list {path} is empty.")
    bad = [p for p, _ in pairs if not isinstance(p, str)]
    if bad:
        raise UserError(f"Image list {path}: paths must be strings, found {bad[:SHOWN]}.")
    return [(str((path.parent / p).resolve()), label) for p, label in pairs]


def _folder_entries(root: Path) -> List[Entry]:
    if not root.is_dir():
        raise UserError(f"Image folder {root} does not exist or is not a folder.")
    entries = [(str(f.resolve()), d.name)
               for d in sorted(p for p in root.iterdir() if p.is_dir())
               for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not entries:
        raise UserError(f"Image folder {root} has no class sub-folders with images "
                        f"({', '.join(IMAGE_SUFFIXES)}).")
    return entries


def build_classes(entries: Sequence[Entry], source: str) -> List[str]:
    """The class names in index order: 0..max for int labels, sorted names for string labels."""
    labels = [label for _, label in entries]
    if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        if min(labels) < 0:
            raise UserError(f"Image list {source} has a negative label {min(labels)}.")
        return [str(i) for i in range(max(labels) + 1)]
    if all(isinstance(x, str) for x in labels):
        return sorted(set(labels))
    raise UserError(f"Image list {source}: labels must be all ints or all class names, "
                    f"found {sorted({type(x).__name__ for x in labels})}.")


def load_classes(path: Path) -> Optional[List[str]]:
    """The class map saved in a run folder, or None if there is none yet."""
    return json.loads(path.read_text())["classes"] if path.is_file() else None


def save_classes(path: Path, classes: List[str]) -> None:
    write_json(path, {"classes": classes})


def to_image_list(entries: Sequence[Entry], classes: List[str], source: str) -> ImageList:
    """Attach class indices; a label outside the class map is an error naming it."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = [(p, label) for p, label in entries if str(label) not in index]
    if unknown:
        shown = ", ".join(f"{label!r} ({p})" for p, label in unknown[:SHOWN])
        raise UserError(f"Image list {source}: {len(unknown)} label(s) not in the class map "
                        f"[{', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''}]: {shown}.")
    return ImageList(source, [p for p, _ in entries], [index[str(label)] for _, label in entries])


def check_files(images: ImageList, skip_bad: bool) -> ImageList:
    """Stop on missing files; stop on unreadable ones, or drop them and say how many with skip_bad."""
    missing = [p for p in images.paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"Image list {images.source}: {len(missing)} of {len(images)} listed files "
                        f"do not exist, e.g. {', '.join(missing[:SHOWN])}.")
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(_image_problem, images.paths))
    bad = [(p, why) for p, why in zip(images.paths, problems) if why]
    if not bad:
        return images
    shown = "; ".join(f"{p}: {why}" for p, why in bad[:SHOWN])
    if not skip_bad:
        raise UserError(f"Image list {images.source}: {len(bad)} file(s) cannot be read as images: "
                        f"{shown}. Fix or remove them, or set reader.skip_bad=true to skip them.")
    log.warning("skipping %d unreadable image(s) of %s: %s", len(bad), images.source, shown)
    keep = [i for i, why in enumerate(problems) if not why]
    return ImageList(images.source, [images.paths[i] for i in keep], [images.labels[i] for i in keep])


def _image_problem(path: str) -> Optional[str]:
    """Why the file is not a readable image, or None; reads the header, not every pixel."""
    try:
        with Image.open(path) as image:
            image.verify()
            kind, mode = image.format, image.mode
    except Exception as error:  # PIL raises many types for broken files
        return f"not a readable image ({error.__class__.__name__})"
    if kind not in FORMATS:
        return f"format {kind} is not one of {', '.join(FORMATS)}"
    if kind == "BMP" and mode not in BMP_MODES:
        return f"BMP of mode {mode} (palette or 1-bit) would be misread; save it as PNG or 24-bit BMP"
    return None
