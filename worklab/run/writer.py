"""What a run leaves for review: TensorBoard events, per-step evaluation files and metrics.jsonl.

Layout in the run folder:
  tensorboard/train, tensorboard/test   event files (scalars, input images, confusion matrix, the worst
                                        examples captioned, the reliability diagram)
  tensorboard/val                       the same for the validation set, when the run has one
  evaluations/step-000400.json          the full statistics of the test of the checkpoint of step 400
  evaluations/val/step-000400.json      the same on the validation set
  metrics.jsonl                         one JSON line per evaluation: step, split (val or test), loss, ...
"""
from __future__ import annotations

import logging
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from worklab.atomic import append_line, write_json
from worklab.run.figures import reliability_diagram, worst_grid
from worklab.run.runfolder import RunFolder, read_state

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("loss", "accuracy", "top_k_accuracy", "f1_macro", "auc", "ece")


class Writer:
    """Writes train and test results of one run folder."""

    def __init__(self, run_dir: Path):
        self.folder = RunFolder(run_dir)
        self.run_dir = self.folder.path
        self.metrics_file = self.folder.file("metrics.jsonl")

    # Event files are created when first written, so a command refused before it writes a
    # result leaves no empty event file in the run folder.
    @cached_property
    def _train(self):
        return tf.summary.create_file_writer(str(self.folder.tensorboard / "train"))

    @cached_property
    def _test(self):
        return tf.summary.create_file_writer(str(self.folder.tensorboard / "test"))

    @cached_property
    def _val(self):
        return tf.summary.create_file_writer(str(self.folder.tensorboard / "val"))

    @cached_property
    def _run(self):
        return tf.summary.create_file_writer(str(self.folder.tensorboard))

    def train_scalars(self, step: int, scalars: Dict[str, float]) -> None:
        with self._train.as_default(step=step):
            for key in ("loss", "accuracy", "lr", "images_per_second"):
                tf.summary.scalar(key, scalars[key])
        self._train.flush()

    def input_images(self, step: int, images: np.ndarray) -> None:
        """A few training inputs (0-255, after augmentation and mixing) as the network's first layer receives them."""
        shown = np.clip(images[:6] / 255.0, 0.0, 1.0)
        with self._train.as_default(step=step):
            tf.summary.image("augmented_inputs", shown, max_outputs=len(shown))
        self._train.flush()

    def evaluation(self, stats: Dict, classes: List[str]) -> None:
        """Save one evaluation (statistics with step, split and lr): its JSON file, a metrics.jsonl line,
        TensorBoard scalars and images: the confusion matrix, the worst examples, the reliability diagram."""
        step, split = stats["step"], stats.get("split", "test")
        write_json(self.folder.evaluation(step, split), {**stats, "classes": classes})
        line = {"step": step, "split": split, "lr": stats["lr"], "time": round(time.time(), 3),
                **{k: stats[k] for k in SUMMARY_KEYS if stats.get(k) is not None}}
        append_line(self.metrics_file, line)
        events = self._val if split == "val" else self._test
        with events.as_default(step=step):
            for key in SUMMARY_KEYS:
                if stats.get(key) is not None:
                    tf.summary.scalar(key, stats[key])
            tf.summary.image("confusion_matrix", confusion_image(stats["confusion"])[None])
            tf.summary.image("reliability_diagram", reliability_diagram(stats["reliability"])[None])
            grid = worst_grid(stats["worst"], classes)
            if grid is not None:
                tf.summary.image("worst_examples", grid[None])
        events.flush()

    def hparams(self, values: Dict[str, Any]) -> None:
        """The run's hyperparameters for TensorBoard's HParams dashboard, which compares a sweep's runs."""
        from tensorboard.plugins.hparams import api as hp

        with self._run.as_default():
            hp.hparams(values, trial_id=str(self.run_dir))
        self._run.flush()

    def final(self, step: int, best: Dict[str, float]) -> None:
        """The run's result as the metrics the HParams dashboard lists beside the hyperparameters."""
        split = best.get("split", "test")
        with self._run.as_default(step=step):
            tf.summary.scalar(f"best/{split}_loss", best["loss"])
            tf.summary.scalar(f"best/{split}_accuracy", best["accuracy"])
        self._run.flush()

    def decision(self, step: int, message: str, scalars: Dict[str, float]) -> None:
        """A schedule's decision as TensorBoard text, with the counters behind it as scalars."""
        with self._test.as_default(step=step):
            tf.summary.text("decisions", message)
            for key, value in scalars.items():
                tf.summary.scalar(f"schedule/{key}", value)
        self._test.flush()

    def evaluated(self, step: int, split: str = "test") -> Optional[Dict]:
        """The saved evaluation of `step` on `split`, or None if that step was not evaluated on it."""
        return read_state(self.folder.evaluation(step, split), ("step", "loss", "accuracy"))


class WorkerWriter(Writer):
    """The writer of a cluster's worker that is not the chief: the chief writes the run folder.

    It writes nothing and keeps the evaluations it made, so its schedule reads back the
    same results as the chief's does; evaluations from before this process started come
    from the run folder, as the chief reads them too.
    """

    def __init__(self, run_dir: Path):
        super().__init__(run_dir)
        self._made: Dict = {}

    def evaluation(self, stats: Dict, classes: List[str]) -> None:
        self._made[stats["step"], stats.get("split", "test")] = {**stats, "classes": classes}

    def evaluated(self, step: int, split: str = "test") -> Optional[Dict]:
        return self._made.get((step, split)) or super().evaluated(step, split)

    def train_scalars(self, step: int, scalars: Dict[str, float]) -> None:
        pass

    def input_images(self, step: int, images: np.ndarray) -> None:
        pass

    def hparams(self, values: Dict[str, Any]) -> None:
        pass

    def final(self, step: int, best: Dict[str, float]) -> None:
        pass

    def decision(self, step: int, message: str, scalars: Dict[str, float]) -> None:
        pass


def confusion_image(confusion: List[List[int]], size: int = 256) -> np.ndarray:
    """Rows (true class) normalised to [0, 1], drawn white to dark blue, each cell a square of pixels."""
    matrix = np.asarray(confusion, dtype=np.float64)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    cell = max(1, size // len(matrix))
    heat = np.kron(rows, np.ones((cell, cell)))
    white, blue = np.array([1.0, 1.0, 1.0]), np.array([0.03, 0.19, 0.42])
    return (white + heat[..., None] * (blue - white)).astype(np.float32)
