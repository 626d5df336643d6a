"""The parts a schedule works with, built from config on first use.

A schedule asks for what it needs: testing a checkpoint never reads the training list
or builds a training pipeline. Building follows one order: image lists and the class
map, then the model, its learning-rate plan and optimizers, then the session. Nothing
is restored by building: a schedule that trains calls `restore()` first, and only
then opens the trainer, whose input stream starts at the restored position; a schedule
that reads a run restores the checkpoint it tests through the session.
"""
from __future__ import annotations

import contextlib
import logging
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import tensorflow as tf

from worklab.config.root import Config
from worklab.data import demo, leakage
from worklab.data.fingerprints import difference, fingerprint
from worklab.data.imagelist import (Entry, ImageList, build_classes, check_files, load_classes, read_entries,
                                    save_classes, to_image_list, warn_missing_classes)
from worklab.data.reader import Reader
from worklab.data.split import hold_out, split
from worklab.data.split import load as load_split
from worklab.data.split import save as save_split
from worklab.errors import UserError
from worklab.interrupt import StopRequest
from worklab.model import batchnorm, networks
from worklab.model.rules import freeze_rules, lr_multipliers
from worklab.run.runfolder import RunFolder, warn_if_disk_low
from worklab.run.session import Session, listed_steps
from worklab.run.summary import Summary
from worklab.run.writer import Writer, WorkerWriter
from worklab.train.averaging import WeightAverage, changing_variables
from worklab.train.loss_scale import LossScale
from worklab.train.losses import Objective, class_weights
from worklab.train.mixing import batch_mixing
from worklab.train.tester import Tester
from worklab.train.trainer import OptimizerGroups, Trainer

log = logging.getLogger(__name__)


class Parts:
    """Reader, model, session, trainer, tester and writer of one run folder."""

    def __init__(self, cfg: Config, stop: StopRequest, results_dir: Optional[Path] = None):
        """`results_dir` (default: the run folder) receives test results and TensorBoard events."""
        self.cfg = cfg
        self.stop = stop
        self.folder = RunFolder(cfg.run_dir)
        self.run_dir = self.folder.path
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.strategy = tf.distribute.get_strategy()
        self.chief = self.strategy.extended.should_checkpoint  # False for a cluster's other workers only
        self.reader = Reader(cfg.reader, cfg.seed)
        self.writer = (Writer if self.chief else WorkerWriter)(results_dir or self.run_dir)
        self.summary: Optional[Summary] = None  # summary.json, for the schedules that train
        self.position: Optional[int] = None  # the input position, set by restore()
        with self.strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples")
            self.lr = tf.Variable(cfg.optimizer.lr, dtype=tf.float32, trainable=False, name="lr")
            self.bn_momentum = batchnorm.Momentum(cfg.network)

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
        binding = classes is not None and (listed_steps(self.folder.checkpoints) or not self.folder.writable)
        if not binding:
            classes = build_classes(self._train_entries, self.sources[0])
            if self.folder.writable:
                save_classes(self.class_map, classes)
            log.info("classes: %d (%s)", len(classes), ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else ""))
        return classes

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
        if changes and listed_steps(self.folder.checkpoints):
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

    # Model and state ------------------------------------------------------------------------

    @cached_property
    def model(self):
        with self.strategy.scope():
            model = networks.build(self.cfg, len(self.classes))
        frozen = batchnorm.prepare(model, self._rules(model), self.bn_momentum, self.strategy.num_replicas_in_sync)
        log.info("network: %s, %d classes, %.2fM parameters, %d frozen batch-norm layer(s)",
                 networks.describe(self.cfg.network, model), len(self.classes), model.count_params() / 1e6, len(frozen))
        return model

    @cached_property
    def rules(self):
        """The learning-rate rules: network.freeze's first (when set), then network.lr_mult."""
        return self._rules(self.model)

    def _rules(self, model):
        return [*freeze_rules(networks.layer_variables(model), self.cfg.network.freeze), *self.cfg.network.lr_mult]

    @cached_property
    def plan(self):
        return lr_multipliers(self.rules, [v.path for v in self.model.variables])

    @cached_property
    def optimizers(self) -> OptimizerGroups:
        with self.strategy.scope():
            groups = OptimizerGroups(self.cfg.optimizer, self.model, self.plan, self.lr)
        frozen = sum(1 for v in self.model.trainable_variables if self.plan[v.path].lr == 0)
        log.info("optimizer: %s, %d learning-rate group(s), %d frozen variable(s)",
                 self.cfg.optimizer.name, len(groups.groups), frozen)
        return groups

    @cached_property
    def average(self) -> Optional[WeightAverage]:
        """network.ema's average of the weights that train (None without it); every evaluation uses it."""
        if not self.cfg.network.ema:
            return None
        with self.strategy.scope():
            average = WeightAverage(changing_variables(self.model, lambda path: self.plan[path].lr > 0),
                                    self.cfg.network.ema)
        log.info("weight average: %d variables, decay %g; tests, the best checkpoint and exports use it",
                 len(average.variables), average.decay)
        return average

    @cached_property
    def loss_scale(self) -> Optional[LossScale]:
        """float16's dynamic loss scale (runtime.precision=mixed_float16), one for every learning-rate group."""
        if self.cfg.runtime.precision != "mixed_float16":
            return None
        with self.strategy.scope():
            return LossScale()

    def evaluation_weights(self):
        """A context in which the model holds the weights to evaluate: the average with network.ema."""
        return self.average.swapped() if self.average else contextlib.nullcontext()

    @cached_property
    def session(self) -> Session:
        """A writing session for the process that holds the run folder's lock (or its scratch twin on a cluster's
        other workers), else a reading one."""
        if self.folder.writable or not self.chief:
            state = self.optimizers.state()
            variables = [*self.model.variables, *(v for group in state.values() for v in group.values())]
            warn_if_disk_low(self.run_dir, sum(tf.as_dtype(v.dtype).size * int(np.prod(v.shape)) for v in variables))
            return Session(self.run_dir, self.model, state, self.step, self.examples, self.lr,
                           getattr(self.cfg.schedule, "keep", 0), self.cfg.restore,
                           networks.pretrained_weights(self.model, self.cfg), averages=self._averages,
                           loss_scale=self.loss_scale and self.loss_scale.state(), scratch=not self.chief)
        return Session(self.run_dir, self.model, None, self.step, self.examples, self.lr, None,
                       averages=self._averages)

    @property
    def _averages(self):
        return self.average.averages if self.average else None

    def restore_for_inference(self, step: Optional[int] = None) -> int:
        """Restore the weights to evaluate or deploy and return their step: the one door for them.

        Checkpoint `step` when given, else the run's best step (best.json, written by
        patience and hyper), else its latest; with network.ema, its weight average, put
        into the model for good. Export and predict ask here.
        """
        best = self.folder.best() if step is None else None
        if best:
            step = best["step"]
            if step not in self.session.steps():
                raise UserError(f"{self.folder.file('best.json')} names step {step}, whose checkpoint is gone "
                                f"(checkpoints: {self.session.steps()}). Resume the run to train and choose again, "
                                "or pick a checkpoint with schedule.step=N.")
        restored = self.session.restore_step(step)
        if self.average:
            self.average.apply()
            log.info("step %d: using the weight average (network.ema=%g)", restored, self.average.decay)
        return restored

    def restore(self) -> str:
        """Set the starting state of training (see Session.restore) and the input position; say where from."""
        origin = self.session.restore()
        if self.average and origin != "checkpoint":
            self.average.reset()  # the average starts at the starting weights
        self.position = int(self.examples.numpy())
        if self.folder.writable:
            self._forget_after(int(self.step.numpy()))
        return origin

    def _forget_after(self, step: int) -> None:
        """Set aside the records of steps after the restored one (their checkpoints are gone) and rewind the
        summary, so the run trains and tests those steps again instead of taking itself for done."""
        moved = self.folder.set_aside_after(step)
        if not moved:
            return
        log.warning("%s describe(s) weights whose checkpoints are gone: moved to %s; the run goes on from step %d",
                    ", ".join(str(p.relative_to(self.run_dir)) for p in moved), self.run_dir / "superseded", step)
        if self.summary:
            split = self.decision_split
            self.summary.rewound(step, [self.writer.evaluated(s, split) for s in self.folder.evaluated_steps(split)])

    # Inner loops -----------------------------------------------------------------------------

    @cached_property
    def trainer(self) -> Trainer:
        """The trainer on the input stream from the restored position; its first inputs, mixed as training
        mixes them, go to TensorBoard."""
        if self.position is None:
            raise RuntimeError("Parts.restore() must run before the trainer is built")
        batch = self.cfg.reader.batch_size
        dataset = self.strategy.distribute_datasets_from_function(lambda context: self.reader.train(
            self.train_images, self.position, (context.input_pipeline_id, context.num_input_pipelines),
            context.get_per_replica_batch_size(batch)))
        mixing = batch_mixing(self.cfg.reader.augment, self.cfg.seed)
        if self.chief:
            images, labels = next(iter(self.reader.train(self.train_images, start=self.position)))
            if mixing:
                images = mixing(images, labels, self.position)[0]  # as the first step will see them
            self.writer.input_images(int(self.step.numpy()), images.numpy())
        loss, clip_norm = self.cfg.loss, self.cfg.optimizer.clip_norm
        objective = Objective(loss.label_smoothing,
                              class_weights(loss.class_weight, self.train_images.labels, len(self.classes)))
        changes = objective.describe() + ([mixing.describe()] if mixing else []) + \
            ([f"gradients clipped to a global norm of {clip_norm:g}"] if clip_norm else [])
        if changes:
            reported = ("the train lines report the plain cross-entropy and the accuracy against the mixed labels of "
                        "the mixed images, the test lines the plain cross-entropy" if mixing else
                        "train and test lines report the plain cross-entropy")
            log.info("training minimises cross-entropy with %s; %s", ", ".join(changes), reported)
        return Trainer(self.model, self.optimizers, dataset, self.step, self.examples, self.lr,
                       self.cfg.network.weight_decay, self.strategy, xla=self.cfg.runtime.xla,
                       bn_momentum=self.bn_momentum, objective=objective, clip_norm=clip_norm, mixing=mixing,
                       average=self.average, loss_scale=self.loss_scale)

    @cached_property
    def tester(self) -> Tester:
        return self._tester(self.test_images)

    @cached_property
    def validator(self) -> Tester:
        """The Tester over the validation set, which every decision of a schedule uses when there is one."""
        return self._tester(self.val_images)

    def _tester(self, images: ImageList) -> Tester:
        r = self.cfg.reader
        return Tester(self.model, self.reader.test(images), len(images), r.test_batch_size or r.batch_size,
                      self.cfg.top_k, xla=self.cfg.runtime.xla, strategy=self.strategy, worst=self.cfg.worst,
                      paths=images.paths)
