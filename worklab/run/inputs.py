"""The image lists of a run: where they come from, their class map, the validation split, checked once.

Everything a schedule reads as input before it builds a model, and nothing of
TensorFlow: bit's HyperRule settles the run's settings from the training list alone,
and every other schedule reads its lists through `Parts.inputs`. The class map, the
held-out split and the lists' fingerprints are saved in the run folder by the process
that holds its lock (RunFolder.writable) and only read by any other.
"""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from worklab.config.root import Config
from worklab.data import demo, leakage
from worklab.data.fingerprints import difference, fingerprint
from worklab.data.imagelist import (Entry, ImageList, build_classes, check_files, load_classes, read_entries,
                                    save_classes, to_image_list, warn_missing_classes)
from worklab.data.split import hold_out, split
from worklab.data.split import load as load_split
from worklab.data.split import save as save_split
from worklab.errors import UserError
from worklab.run.runfolder import RunFolder
from worklab.run.checkpoints import CheckpointFolder

log = logging.getLogger(__name__)


class RunInputs:
    """The training, validation and test lists of one run folder, read and checked on first use."""

    def __init__(self, cfg: Config, folder: RunFolder):
        self.cfg = cfg
        self.folder = folder
        self.run_dir = folder.path

    # Data ------------------------------------------------------------------------------------

    @cached_property
    def sources(self) -> Tuple[str, str, str]:
        """(train, test, kind): the list files or folders to read; the demo set is written first if needed."""
        r = self.cfg.reader
        if r.source == "demo":
            train, test = demo.ensure_demo(Path(self.cfg.data_dir), r.demo.image_size,
                                           r.demo.train_per_class, r.demo.test_per_class, r.demo.seed,
                                           r.demo.variant)
            return str(train), str(test), "json"
        for key in ("train", "test"):
            if not getattr(r, key):
                raise UserError(f"reader.{key} is not set: pass reader.{key}=PATH to the list or folder.")
        return r.train, r.test, r.source

    @cached_property
    def classes(self) -> List[str]:
        """The class map saved in the run folder, or built from the training list and saved.

        The saved map binds once a checkpoint exists (its head is laid out by it); one left
        by an attempt that saved nothing is built again from the current training list.
        """
        classes = load_classes(self.class_map)
        binding = classes is not None and (self._trained or not self.folder.writable)
        if not binding:
            classes = build_classes(self._train_entries, self.sources[0])
            if self.folder.writable:
                save_classes(self.class_map, classes)
            log.info("classes: %d (%s)", len(classes), ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else ""))
        return classes

    @property
    def _trained(self) -> bool:
        """Does the run have a checkpoint (whose head and history are bound to its lists)?"""
        return bool(CheckpointFolder(self.folder.checkpoints).steps())

    @property
    def class_map(self) -> Path:
        return self.folder.file("classes.json")

    @cached_property
    def train_images(self) -> ImageList:
        """The training list, less the images held out for validation (reader.val_split)."""
        if not self.cfg.reader.val_split:
            return self._listed_train
        return split(self._listed_train, self._held_out)[0]

    @cached_property
    def test_images(self) -> ImageList:
        return self._image_list(self.sources[1], "test")

    @cached_property
    def val_images(self) -> Optional[ImageList]:
        """The validation set: reader.val, or the images held out of the training list; None without one."""
        r = self.cfg.reader
        if r.val:
            return warn_missing_classes(self._image_list(r.val, "validation"), self.classes)
        if r.val_split:
            images = split(self._listed_train, self._held_out)[1]
            log.info("validation: %d images held out of the training list (reader.val_split=%g, val_seed=%d)",
                     len(images), r.val_split, r.val_seed)
            return images
        return None

    @property
    def has_validation(self) -> bool:
        return bool(self.cfg.reader.val or self.cfg.reader.val_split)

    @property
    def decision_split(self) -> str:
        """The set a schedule's decisions are made on: val when the run has a validation set, else test."""
        return "val" if self.has_validation else "test"

    def check_inputs(self, train: bool = True, test: bool = True) -> None:
        """Read and check the lists a schedule will use, before its first step (validation with training)."""
        if train:
            self.train_images
            self.val_images
        if test:
            self.test_images
        if self.folder.writable:
            self._check_lists()
        kept = leakage.guard(self.cfg.reader.leakage, self._loaded(), self.classes, self.folder)
        self.__dict__.update({f"{name}_images": images for name, images in kept.items()})
        if train and test and not self.has_validation:
            log.info("no validation set: the schedule's decisions (best step, rate drops, best value) are made on "
                     "the test set, so the test result is optimistic; reader.val_split=0.1 or reader.val=PATH "
                     "holds one out")

    def _check_lists(self) -> None:
        """Refuse to go on training on other lists than the run was trained on, unless reader.new_data=true;
        then record the lists' fingerprints (lists.json)."""
        now = {name: fingerprint(images, self.classes, self.sources[2]) for name, images in self._loaded().items()
               if images is not None}
        recorded = self.folder.read("lists.json") or {}
        changes = [change for name in now if (change := difference(name, recorded.get(name), now[name]))]
        if changes and self._trained:
            if not self.cfg.reader.new_data:
                raise UserError(f"{self.run_dir} was trained on other data: {'; '.join(changes)}. Point those keys "
                                "at the run's own lists, start a new run folder, or set reader.new_data=true to go "
                                "on training this run on the new lists knowingly.")
            log.warning("reader.new_data=true: training goes on on other data than before: %s", "; ".join(changes))
        if now != {name: recorded.get(name) for name in now}:
            self.folder.write("lists.json", {**recorded, **now})

    def _loaded(self) -> Dict[str, Optional[ImageList]]:
        """train, val, test -> the list as read so far (None: not read, or no validation set)."""
        return {name: self.__dict__.get(f"{name}_images") for name in ("train", "val", "test")}

    def loaded_image_lists(self) -> List[ImageList]:
        """The lists read so far (a failure in TensorFlow can only involve these)."""
        return [self.__dict__[key] for key in ("_listed_train", "test_images", "val_images")
                if self.__dict__.get(key) is not None]

    @cached_property
    def _listed_train(self) -> ImageList:
        return self._image_list(self.sources[0], "train", self._train_entries)

    @cached_property
    def _train_entries(self) -> List[Entry]:
        """The training list's (path, label) pairs, read once for the class map and the image list alike,
        so its warnings (a repeated path, images beside the class folders) are given once."""
        return read_entries(self.sources[0], self.sources[2])

    @cached_property
    def _held_out(self) -> Set[str]:
        """The paths reader.val_split holds out: the run's saved split, else a new one (saved by a writer)."""
        r = self.cfg.reader
        held = load_split(self.folder, r.val_split, r.val_seed)
        if held is None:
            held = hold_out(self._listed_train, self.classes, r.val_split, r.val_seed)
            if self.folder.writable:
                save_split(self.folder, r.val_split, r.val_seed, held)
        return held

    def _image_list(self, source: str, name: str, entries: Optional[List[Entry]] = None) -> ImageList:
        """The checked image list of `source` (its `entries` when already read), logged as `name`."""
        entries = read_entries(source, self.sources[2]) if entries is None else entries
        record = self.folder.file("checked_images.json") if self.folder.writable else None
        images = check_files(to_image_list(entries, self.classes, source, class_map=str(self.class_map)),
                             self.cfg.reader.skip_bad, record)
        log.info("%s: %d images from %s", name, len(images), source)
        return images
