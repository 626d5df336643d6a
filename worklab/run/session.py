"""The run folder's checkpointed state, and the one place that decides where weights start from.

A checkpoint holds the global step (`step`), the number of training examples consumed
(`examples`, the input position), the base learning rate (`lr`), the schedule's own
state as JSON (`schedule`), every model variable keyed by its readable name
(`model/stage1/block1/conv1/kernel`, not Keras' positional object paths, so a run's
checkpoint can be read by name), the optimizers' state and, with network.ema, the
weight average (`average/<variable name>`).

Which checkpoints exist, and under which names, is worklab.run.checkpoints' business: the
index is rebuilt from the files when it is missing or damaged, a save never writes over
a listed checkpoint, and a checkpoint that cannot be read is moved aside and the next
older one used. Only a writing session (the process that holds the run folder's lock)
saves and prunes: it deletes old checkpoints except the last `keep`, the steps a
schedule protects (a best checkpoint) and those a running watcher has not tested yet.
A reading session (test, watch) restores and never changes a file.

In a multi-worker cluster every worker takes part in each save, as tf.distribute
requires; a worker that is not the chief has a `scratch` session, which writes its copy
to a temporary folder outside the run and removes it, and changes no file of the run.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

import keras
import tensorflow as tf

from worklab.compat import variable_outside_strategy
from worklab.config.training import RestoreConfig
from worklab.errors import RunFailed, UserError
from worklab.model.restore import restore as restore_pretrained
from worklab.run.checkpoints import CheckpointFolder
from worklab.run.runfolder import RunFolder
from worklab.run.watchers import untested_steps

log = logging.getLogger(__name__)

# What reading a damaged checkpoint raises (as opposed to one that does not fit the network):
# TensorFlow's errors, and IndexError for a data file cut short ("Read less bytes than requested").
DAMAGE = (tf.errors.OpError, IndexError, OSError)


class Session:
    """Checkpoints in `<run_dir>/checkpoints`, with the restore order written down once.

    `keep` is None for a reading session, which can restore but not save, and 0 for a
    writing one that never prunes (recalibrate adds a checkpoint to a run it reads).
    """

    def __init__(self, run_dir: Path, model: keras.Model, optimizer_state: Optional[Dict], step: tf.Variable,
                 examples: tf.Variable, lr: tf.Variable, keep: Optional[int],
                 pretrained: Optional[RestoreConfig] = None, network_weights: Optional[Callable[[], str]] = None,
                 averages: Optional[Dict[str, tf.Variable]] = None,
                 loss_scale: Optional[Dict[str, tf.Variable]] = None, scratch: bool = False):
        self.run_dir = Path(run_dir)
        self.scratch = scratch
        self.folder = CheckpointFolder(RunFolder(run_dir).checkpoints)
        self.directory = self.folder.directory
        self.step = step
        self.keep = keep
        self.protected: Callable[[], Set[int]] = set  # steps a schedule needs kept
        self.pretrained = pretrained if pretrained and pretrained.path else None
        self.network_weights = network_weights  # loads network.weights (a Keras Application's) and says what
        self.warm_start: Optional[Path] = None  # a checkpoint to take matching weights from on a fresh start
        self._model = {v.path: v for v in model.variables}
        self.schedule_state = _text_variable("{}", "schedule_state")
        weights = dict(model=self._model, **({"average": averages} if averages else {}))
        objects = dict(step=step, examples=examples, lr=lr, schedule=self.schedule_state, **weights)
        if optimizer_state is not None:
            objects["optimizer"] = optimizer_state
            self._weights = tf.train.Checkpoint(optimizer=optimizer_state, **weights)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.checkpoint.save_counter  # created now, so `write` saves it and a restore matches every object
        # float16's loss scale is written with the rest but read on its own, without the check that every
        # object is in the file: a checkpoint written in float32 has none, and the scale starts afresh.
        self._loss_scale = tf.train.Checkpoint(loss_scale=loss_scale) if loss_scale else None
        self._written = tf.train.Checkpoint(**objects, loss_scale=loss_scale) if loss_scale else self.checkpoint
        self._written.save_counter

    @property
    def writable(self) -> bool:
        return self.keep is not None

    def restore(self) -> str:
        """Set the starting state of a training run and say where it came from.

        The order: this run's own newest readable checkpoint (and over it the pretrained
        one with restore.anyway=true); else the network's own weights (network.weights) and
        over them the pretrained checkpoint restore.path through the restore mapping; else
        the warm-start checkpoint (the previous value of a hyperparameter search), by name
        where the shape still fits; else fresh weights.
        """
        if self._restore_newest_readable():
            if self.pretrained and self.pretrained.anyway:
                restore_pretrained(self._model, self.pretrained, self._report)
            return "checkpoint"
        origin = "fresh"
        if self.network_weights:
            log.info("%s", self.network_weights())
            origin = "pretrained"
        if self.pretrained:
            restore_pretrained(self._model, self.pretrained, self._report)
            return "pretrained"
        if self.warm_start:
            self._warm_start(self.warm_start)
            return "warm start"
        if origin == "fresh":
            log.info("no checkpoint in %s: starting from fresh weights", self.directory)
        return origin

    @property
    def _report(self) -> Optional[Path]:
        return None if self.scratch else RunFolder(self.run_dir).file("restore_report.json")

    def _restore_newest_readable(self) -> bool:
        """Restore the newest checkpoint that reads; one that cannot be read is named and moved aside."""
        names = self.folder.names()
        if self.folder.rebuilt:
            log.warning("%s: using the %d complete checkpoint(s) found on disk (%s)", self.folder.rebuilt,
                        len(names), ", ".join(names.values()) or "none")
        for step in reversed(list(names)):
            try:
                self._read(names[step], self.checkpoint)
                return True
            except DAMAGE as error:
                where = self.folder.move_aside(names[step]) if self.writable and not self.scratch else None
                log.warning("checkpoint %s cannot be read (%s)%s; trying the one before it", names[step],
                            _first_line(error), f": moved to {where}" if where else "")
        return False

    def _read(self, name: str, checkpoint: tf.train.Checkpoint) -> None:
        """Restore `checkpoint` from `name`; every model variable must be found with its shape."""
        path = self.folder.path(name)
        mismatch = self._mismatch(path)
        if mismatch:
            raise UserError(f"Checkpoint {path} does not fit the configured network: {mismatch}. Was network.* "
                            "or network.lr_mult changed for this run folder? Resume with the settings it was "
                            "started with (its .hydra/config.yaml).")
        try:
            checkpoint.restore(str(path)).assert_existing_objects_matched().expect_partial()
            if self._loss_scale:
                self._loss_scale.restore(str(path)).expect_partial()
        except AssertionError as error:
            raise UserError(f"Checkpoint {path} does not fit the configured optimizer (was optimizer.name or "
                            f"network.lr_mult changed?): {_first_line(error)[:300]}") from None
        log.info("restored %s: step %d", path, int(self.step.numpy()))

    def _mismatch(self, path: Path) -> str:
        """The first model variables the checkpoint lacks or holds in another shape ('' when all fit)."""
        shapes = tf.train.load_checkpoint(str(path)).get_variable_to_shape_map()
        problems = []
        for name, variable in self._model.items():
            found = shapes.get(model_key(name))
            if found is None:
                problems.append(f"{name} is not in it")
            elif tuple(found) != tuple(variable.shape):
                problems.append(f"{name} has shape {list(found)} there, {list(variable.shape)} here")
        shown = "; ".join(problems[:3])
        return f"{shown}{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}" if problems else ""

    def _warm_start(self, path: Path) -> None:
        """Copy every model variable whose name and shape the checkpoint has; report the rest."""
        stored = tf.train.load_checkpoint(str(path))
        shapes = stored.get_variable_to_shape_map()
        fresh = []
        for name, variable in self._model.items():
            key = model_key(name)
            if key in shapes and tuple(shapes[key]) == tuple(variable.shape):
                variable.assign(stored.get_tensor(key))
            else:
                fresh.append(name)
        log.info("warm start from %s: %d variables restored, %d fresh%s", path, len(self._model) - len(fresh),
                 len(fresh), f" (name or shape changed: {', '.join(fresh[:5])}{', ...' if len(fresh) > 5 else ''})"
                 if fresh else "")

    def restore_step(self, step: Optional[int]) -> int:
        """Restore the whole state of checkpoint `step` (default: the latest) for testing; return its step."""
        self._read(self.name(step), self.checkpoint)
        return int(self.step.numpy())

    def restore_weights(self, step: int) -> None:
        """Restore only the model, optimizer and average of checkpoint `step`; step, position and rate stay."""
        self._read(self.name(step), self._weights)

    def load_state(self) -> Dict:
        """The schedule state saved with the restored checkpoint ({} on a fresh start)."""
        return json.loads(self.schedule_state.numpy().decode())

    def save(self, schedule_state: Optional[Dict] = None) -> str:
        """Checkpoint the current state (with the schedule's state if given) and delete what is not kept.

        The new files get a name no listed checkpoint has; the index is replaced only once
        they are complete, so a kill or a full disk during the write leaves the previous
        checkpoints listed and intact.
        """
        if not self.writable:
            raise RuntimeError("a reading session (test, watch) never saves")
        if schedule_state is not None:
            self.schedule_state.assign(json.dumps(schedule_state, sort_keys=True))
        if self.scratch:
            with tempfile.TemporaryDirectory(prefix="worklab-worker-save-") as folder:
                self._written.write(os.path.join(folder, "ckpt"))
            return ""
        step = int(self.step.numpy())
        names = self.folder.names()
        name = self.folder.free_name(step)
        path = self._write(name)
        names[step] = name
        keep = self._kept(sorted(names))
        # The index goes first, so a kill while deleting leaves only unlisted files behind.
        self.folder.write_index([names[s] for s in sorted(names) if s in keep])
        for gone in set(names) - keep:
            self.folder.remove_step(gone)
        log.info("saved checkpoint %s", path)
        return path

    def _write(self, name: str) -> str:
        try:
            return self._written.write(str(self.folder.path(name)))
        except (OSError, tf.errors.OpError) as error:
            for file in self.directory.glob(f"{name}.*"):
                file.unlink(missing_ok=True)
            full = isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error)
            what = "the disk is full" if full else _first_line(error)
            listed = self.steps()
            raise RunFailed(f"Saving checkpoint {name} in {self.directory} failed: {what}. The checkpoints "
                            f"before it are intact (latest: step {listed[-1] if listed else 'none'}); "
                            f"{'free some space, then ' if full else ''}resume to continue.") from None

    def steps(self) -> List[int]:
        """The steps of the complete checkpoints, oldest first."""
        return self.folder.steps()

    def name(self, step: Optional[int]) -> str:
        """The checkpoint name of `step` (default: the latest), or a clear error when there is none."""
        names = self.folder.names()
        if not names:
            raise UserError(f"No checkpoint in {self.directory}: train first, or pass resume= "
                            "a run folder that has checkpoints.")
        if step is None:
            return names[max(names)]
        if step not in names:
            raise UserError(f"schedule.step={step}: no checkpoint of that step in {self.directory}; "
                            f"available: {list(names)}.")
        return names[step]

    def path(self, step: Optional[int]) -> Path:
        return self.folder.path(self.name(step))

    def _kept(self, steps: List[int]) -> Set[int]:
        if not self.keep:
            return set(steps)
        return set(steps[-self.keep:]) | self.protected() | untested_steps(self.run_dir, steps)


def _text_variable(value: str, name: str) -> tf.Variable:
    """A string variable outside the strategy in scope: MultiWorkerMirroredStrategy broadcasts each new variable's
    initial value from the chief with collective ops, which take numbers only. Every worker sets it alike."""
    return variable_outside_strategy(value, tf.string, name)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """The checkpoint of `step` in a run folder, under the name in use for it."""
    folder = CheckpointFolder(RunFolder(run_dir).checkpoints)
    return folder.path(folder.names()[step])


def model_key(name: str) -> str:
    """The checkpoint key of model variable `name` (TensorFlow escapes '.' as '..' and '/' as '.S')."""
    return "model/" + name.replace(".", "..").replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"


def listed_steps(directory: Path) -> List[int]:
    """The steps of the complete checkpoints in `directory`, oldest first."""
    return CheckpointFolder(directory).steps()


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else error.__class__.__name__
