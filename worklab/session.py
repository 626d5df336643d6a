"""The run folder's checkpointed state, and the one place that decides where weights start from.

A checkpoint holds the global step (`step`), the number of training examples consumed
(`examples`, the input position), the base learning rate (`lr`), the schedule's own
state as JSON (`schedule`), every model variable keyed by its readable name
(`model/stage1/block1/conv1/kernel`, not Keras' positional object paths, so a run's
checkpoint can be read by name) and the optimizers' state.

Checkpoints are `checkpoints/ckpt-<step>`. TensorFlow's `checkpoint` index file lists
the complete ones and is replaced atomically after each write, so a kill during a save
leaves the previous checkpoint in use and the partial files unlisted. Old checkpoints
are deleted except the last `keep`, the steps a schedule protects (a best checkpoint)
and those a running watcher has not tested yet.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

import keras
import tensorflow as tf

from worklab.atomic import write_text
from worklab.config import RestoreConfig
from worklab.errors import UserError
from worklab.restore import restore as restore_pretrained
from worklab.watchers import untested_steps

log = logging.getLogger(__name__)

PREFIX = "ckpt"


class Session:
    """Checkpoints in `<run_dir>/checkpoints`, with the restore order written down once."""

    def __init__(self, run_dir: Path, model: keras.Model, optimizer_state: Dict, step: tf.Variable,
                 examples: tf.Variable, lr: tf.Variable, keep: int, pretrained: Optional[RestoreConfig] = None):
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / "checkpoints"
        self.step = step
        self.keep = keep
        self.protected: Callable[[], Set[int]] = set  # steps a schedule needs kept
        self.pretrained = pretrained if pretrained and pretrained.path else None
        self.warm_start: Optional[Path] = None  # a checkpoint to take matching weights from on a fresh start
        self._model = {v.path: v for v in model.variables}
        self.schedule_state = tf.Variable("{}", dtype=tf.string, trainable=False, name="schedule_state")
        self._weights = tf.train.Checkpoint(model=self._model, optimizer=optimizer_state)
        self.checkpoint = tf.train.Checkpoint(step=step, examples=examples, lr=lr, schedule=self.schedule_state,
                                              model=self._weights.model, optimizer=self._weights.optimizer)
        self.checkpoint.save_counter  # created now, so `write` saves it and a restore matches every object

    def restore(self) -> str:
        """Set the starting state and say where it came from.

        The order: this run's own latest checkpoint (and over it the pretrained one with
        restore.anyway=true); else the pretrained checkpoint restore.path through the
        restore mapping; else the warm-start checkpoint (the previous value of a
        hyperparameter search), by name where the shape still fits; else fresh weights.
        """
        steps = self.steps()
        if steps:
            path = self.path(steps[-1])
            try:
                self.checkpoint.restore(str(path)).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as error:
                raise UserError(f"Checkpoint {path} does not fit the configured network and optimizer (was "
                                f"network.* or optimizer.* changed for this run folder?): {error}") from None
            log.info("restored %s: step %d", path, int(self.step.numpy()))
            if self.pretrained and self.pretrained.anyway:
                restore_pretrained(self._model, self.pretrained, self.run_dir / "restore_report.json")
            return "checkpoint"
        if self.pretrained:
            restore_pretrained(self._model, self.pretrained, self.run_dir / "restore_report.json")
            return "pretrained"
        if self.warm_start:
            self._warm_start(self.warm_start)
            return "warm start"
        log.info("no checkpoint in %s: starting from fresh weights", self.directory)
        return "fresh"

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
        path = self.path(self._find(step))
        self.checkpoint.restore(str(path)).expect_partial()
        log.info("restored %s: step %d", path, int(self.step.numpy()))
        return int(self.step.numpy())

    def restore_weights(self, step: int) -> None:
        """Restore only the model and optimizer of checkpoint `step`; step, position and rate stay."""
        self._weights.restore(str(self.path(self._find(step)))).expect_partial()

    def load_state(self) -> Dict:
        """The schedule state saved with the restored checkpoint ({} on a fresh start)."""
        return json.loads(self.schedule_state.numpy().decode())

    def save(self, schedule_state: Optional[Dict] = None) -> str:
        """Checkpoint the current state (with the schedule's state if given) and delete what is not kept."""
        if schedule_state is not None:
            self.schedule_state.assign(json.dumps(schedule_state, sort_keys=True))
        step = int(self.step.numpy())
        path = self.checkpoint.write(str(self.path(step)))
        steps = sorted(set(self.steps()) | {step})
        keep = self._kept(steps)
        kept = [s for s in steps if s in keep]
        # The index goes first, so a kill while deleting leaves only unlisted files behind.
        write_index(self.directory, step, kept)
        for gone in set(steps) - keep:
            for file in self.directory.glob(f"{PREFIX}-{gone}.*"):
                file.unlink()
        log.info("saved checkpoint %s", path)
        return path

    def steps(self) -> List[int]:
        """The steps of the complete checkpoints, oldest first."""
        return listed_steps(self.directory)

    def path(self, step: int) -> Path:
        return self.directory / f"{PREFIX}-{step}"

    def _kept(self, steps: List[int]) -> Set[int]:
        return set(steps[-self.keep:]) | self.protected() | untested_steps(self.run_dir, steps)

    def _find(self, step: Optional[int]) -> int:
        available = self.steps()
        if not available:
            raise UserError(f"No checkpoint in {self.directory}: train first, or pass resume= "
                            "a run folder that has checkpoints.")
        if step is None:
            return available[-1]
        if step not in available:
            raise UserError(f"schedule.step={step}: no checkpoint of that step in {self.directory}; "
                            f"available: {available}.")
        return step


def model_key(name: str) -> str:
    """The checkpoint key of model variable `name` (TensorFlow escapes '.' as '..' and '/' as '.S')."""
    return "model/" + name.replace(".", "..").replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"


def write_index(directory: Path, latest: int, steps: List[int]) -> None:
    """Replace TensorFlow's `checkpoint` index file (its CheckpointState text format) atomically.

    Names are relative to the folder, so a run folder can be moved.
    """
    lines = [f'model_checkpoint_path: "{PREFIX}-{latest}"']
    lines += [f'all_model_checkpoint_paths: "{PREFIX}-{s}"' for s in steps]
    write_text(directory / "checkpoint", "\n".join(lines) + "\n")


def listed_steps(directory: Path) -> List[int]:
    """The steps of the checkpoints TensorFlow's index file in `directory` lists, oldest first."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return []
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)
