"""The run folder's checkpointed state, and the one place that decides where weights start from.

A checkpoint holds the global step (`step`), the number of training examples consumed
(`examples`, the input position), the base learning rate (`lr`), every model variable
keyed by its readable name (`model/stage1/block1/conv1/kernel`, not Keras' positional
object paths, so a run's checkpoint can be read by name) and the optimizers' state.
tf.train.CheckpointManager writes each checkpoint before pointing the `checkpoint`
index file at it, so a kill during a save leaves the previous checkpoint in use.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import keras
import tensorflow as tf

from worklab.errors import UserError

log = logging.getLogger(__name__)


class Session:
    """Checkpoints in `<run_dir>/checkpoints`, keep-N, with the restore order written down once."""

    def __init__(self, run_dir: Path, model: keras.Model, optimizer_state: Dict, step: tf.Variable,
                 examples: tf.Variable, lr: tf.Variable, keep: int):
        self.directory = Path(run_dir) / "checkpoints"
        self.step = step
        self.checkpoint = tf.train.Checkpoint(
            step=step, examples=examples, lr=lr,
            model={v.path: v for v in model.variables}, optimizer=optimizer_state)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=keep,
                                                  step_counter=step, checkpoint_name="ckpt")

    def restore(self) -> str:
        """Set the starting state and say where it came from.

        The order: this run's own latest checkpoint; else fresh initialisation. (A
        pretrained checkpoint through a restore mapping will come between the two.)
        """
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            log.info("restored %s: step %d", latest, int(self.step.numpy()))
            return "checkpoint"
        log.info("no checkpoint in %s: starting from fresh weights", self.directory)
        return "fresh"

    def restore_step(self, step: Optional[int]) -> int:
        """Restore the checkpoint of `step` (default: the latest) for testing; return its step."""
        path = self._find(step)
        self.checkpoint.restore(path).expect_partial()
        log.info("restored %s: step %d", path, int(self.step.numpy()))
        return int(self.step.numpy())

    def save(self) -> str:
        """Checkpoint the current state (once per step: saving the same step again is a no-op)."""
        step = int(self.step.numpy())
        if self.manager.latest_checkpoint and self.steps()[-1] == step:
            return self.manager.latest_checkpoint
        path = self.manager.save(checkpoint_number=step)
        log.info("saved checkpoint %s", path)
        return path

    def steps(self) -> List[int]:
        """The steps of the checkpoints on disk, oldest first."""
        return [int(p.rsplit("-", 1)[1]) for p in self.manager.checkpoints]

    def _find(self, step: Optional[int]) -> str:
        available = self.steps()
        if not available:
            raise UserError(f"No checkpoint in {self.directory}: train first, or pass resume= "
                            "a run folder that has checkpoints.")
        if step is None:
            return self.manager.checkpoints[-1]
        if step not in available:
            raise UserError(f"schedule.step={step}: no checkpoint of that step in {self.directory}; "
                            f"available: {available}.")
        return self.manager.checkpoints[available.index(step)]
