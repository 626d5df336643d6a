"""The parts a schedule works with, built from config on first use.

A schedule asks for what it needs: testing a checkpoint never reads the training list
or builds a training pipeline. Building follows one order: the image lists and the
class map (`inputs`, worklab.run.inputs), then the model, its learning-rate plan and
optimizers, then the session. Nothing is restored by building: a schedule that trains
calls `restore()` first, and only then opens the trainer, whose input stream starts at
the restored position; a schedule that reads a run restores the weights it evaluates or
exports through `restore_for_inference`.
"""
from __future__ import annotations

import contextlib
import logging
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tensorflow as tf

from worklab.config.root import Config
from worklab.data.imagelist import ImageList
from worklab.data.reader import Reader
from worklab.errors import UserError
from worklab.interrupt import StopRequest
from worklab.model import batchnorm, networks
from worklab.model.rules import freeze_rules, lr_multipliers
from worklab.run.inputs import RunInputs
from worklab.run.runfolder import RunFolder, warn_if_disk_low
from worklab.run.session import Session
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

    def __init__(self, cfg: Config, stop: StopRequest, strategy: tf.distribute.Strategy,
                 results_dir: Optional[Path] = None):
        """Every part is built under `strategy` (worklab.distribute.build); `results_dir` (default: the run
        folder) receives test results and TensorBoard events."""
        self.cfg = cfg
        self.stop = stop
        self.folder = RunFolder(cfg.run_dir)
        self.run_dir = self.folder.path
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.strategy = strategy
        self.chief = self.strategy.extended.should_checkpoint  # False for a cluster's other workers only
        self.inputs = RunInputs(cfg, self.folder)
        self.reader = Reader(cfg.reader, cfg.seed)
        self.writer = (Writer if self.chief else WorkerWriter)(results_dir or self.run_dir)
        self.summary: Optional[Summary] = None  # summary.json, for the schedules that train
        self.position: Optional[int] = None  # the input position, set by restore()
        self.averaged = False  # network.ema's average put into the model for good (restore_for_inference)
        with self.strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples")
            self.lr = tf.Variable(cfg.optimizer.lr, dtype=tf.float32, trainable=False, name="lr")
            self.bn_momentum = batchnorm.Momentum(cfg.network)

    # Model and state ------------------------------------------------------------------------

    @cached_property
    def model(self):
        classes = len(self.inputs.classes)
        with self.strategy.scope():
            model = networks.build(self.cfg, classes)
        frozen = batchnorm.prepare(model, self._rules(model), self.bn_momentum, self.strategy.num_replicas_in_sync)
        log.info("network: %s, %d classes, %.2fM parameters, %d frozen batch-norm layer(s)",
                 networks.describe(self.cfg.network, model), classes, model.count_params() / 1e6, len(frozen))
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
        """A context in which the model holds the weights to evaluate: with network.ema the average, swapped in
        for the block while training, already in place after restore_for_inference."""
        return self.average.swapped() if self.average and not self.averaged else contextlib.nullcontext()

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

    def restore_for_inference(self, step: Optional[int] = None, default: Literal["best", "latest"] = "best") -> int:
        """Restore the weights to evaluate or deploy and return their step: the one door for them.

        Checkpoint `step` when given; else with `default` "best" the run's best step
        (best.json, written by patience and hyper) when it has one, and with "latest" or
        without one its latest. With network.ema its weight average goes into the model
        for good. test, watch, export, predict and a training schedule's final test ask here.
        """
        best = self.folder.best() if step is None and default == "best" else None
        if best:
            step = best["step"]
            if step not in self.session.steps():
                raise UserError(f"{self.folder.file('best.json')} names step {step}, whose checkpoint is gone "
                                f"(checkpoints: {self.session.steps()}). Resume the run to train and choose again, "
                                "or pick a checkpoint with schedule.step=N.")
        restored = self.session.restore_step(step)
        if self.average:
            self.average.apply()
            self.averaged = True
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
            split = self.inputs.decision_split
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
            self.inputs.train_images, self.position, (context.input_pipeline_id, context.num_input_pipelines),
            context.get_per_replica_batch_size(batch)))
        mixing = batch_mixing(self.cfg.reader.augment, self.cfg.seed)
        if self.chief:
            images, labels = next(iter(self.reader.train(self.inputs.train_images, start=self.position)))
            if mixing:
                images = mixing(images, labels, self.position)[0]  # as the first step will see them
            self.writer.input_images(int(self.step.numpy()), images.numpy())
        loss, clip_norm = self.cfg.loss, self.cfg.optimizer.clip_norm
        images = self.inputs.train_images
        objective = Objective(loss.label_smoothing,
                              class_weights(loss.class_weight, images.labels, len(self.inputs.classes)))
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
        return self._tester(self.inputs.test_images)

    @cached_property
    def validator(self) -> Tester:
        """The Tester over the validation set, which every decision of a schedule uses when there is one."""
        return self._tester(self.inputs.val_images)

    def _tester(self, images: ImageList) -> Tester:
        r = self.cfg.reader
        return Tester(self.model, self.reader.test(images), len(images), r.test_batch_size or r.batch_size,
                      self.cfg.top_k, xla=self.cfg.runtime.xla, strategy=self.strategy, worst=self.cfg.worst,
                      paths=images.paths)
