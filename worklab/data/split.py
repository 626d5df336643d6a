"""A validation set held out of the training list: stratified by class, seeded, and kept in the run folder.

reader.val_split=F takes round(F * n) of each class's n training images (at least one)
for validation, drawn with reader.val_seed from the class's images in path order, so
the same list, fraction and seed always give the same split. The held-out paths are
saved in the run folder (split.json): a resumed run, and schedule=test or predict on
the run later, use the very images the run was validated on, even if the list file has
since grown.
"""
from __future__ import annotations

from typing import List, Optional, Set, Tuple

import numpy as np

from worklab.data.imagelist import ImageList
from worklab.errors import UserError

FILE = "split.json"


def hold_out(images: ImageList, classes: List[str], fraction: float, seed: int) -> Set[str]:
    """The paths to hold out: round(fraction * n) of each class's n images, at least one, never all."""
    held = set()
    for index, name in enumerate(classes):
        paths = sorted(p for p, label in zip(images.paths, images.labels) if label == index)
        if not paths:
            continue
        count = max(1, round(fraction * len(paths)))
        if count >= len(paths):
            raise UserError(f"reader.val_split={fraction} leaves class {name!r} no training image: it has "
                            f"{len(paths)} in {images.source}. Give it more images, or use reader.val=PATH.")
        order = np.random.default_rng([seed, index]).permutation(len(paths))
        held.update(paths[i] for i in order[:count])
    return held


def split(images: ImageList, held: Set[str]) -> Tuple[ImageList, ImageList]:
    """(training images, validation images): the list without and with the held-out paths, in list order."""
    keep = [i for i, p in enumerate(images.paths) if p not in held]
    out = [i for i, p in enumerate(images.paths) if p in held]
    return images.subset(keep), images.subset(out, f"{images.source} (held out, reader.val_split)")


def load(folder, fraction: float, seed: int) -> Optional[Set[str]]:
    """The held-out paths saved in a RunFolder, or None; other split settings than the run's are refused."""
    saved = folder.read(FILE, ("val_split", "val_seed", "val"))
    if saved is None:
        return None
    if (saved["val_split"], saved["val_seed"]) != (fraction, seed):
        raise UserError(f"reader.val_split={fraction} and reader.val_seed={seed}, but this run was validated on "
                        f"the split of val_split={saved['val_split']}, val_seed={saved['val_seed']} "
                        f"({folder.file(FILE)}): keep the run's settings, or start a new run folder.")
    return set(saved["val"])


def save(folder, fraction: float, seed: int, held: Set[str]) -> None:
    folder.write(FILE, {"val_split": fraction, "val_seed": seed, "val": sorted(held)})
