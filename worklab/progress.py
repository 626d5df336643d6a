"""A progress bar for interactive terminals; elsewhere (CI, nohup, pipes) the log lines show progress."""
from __future__ import annotations

import sys
from typing import Optional, Sequence, Tuple

import keras


class Progress:
    """Keras' Progbar when stdout is a terminal, nothing otherwise."""

    def __init__(self, target: int, unit: str = "step"):
        self._bar = keras.utils.Progbar(target, unit_name=unit) if sys.stdout.isatty() else None
        self._target = target
        self._current = 0

    def update(self, current: int, values: Optional[Sequence[Tuple[str, float]]] = None) -> None:
        self._current = current
        if self._bar:
            self._bar.update(current, values)

    def break_line(self) -> None:
        """End an unfinished bar's line so that a log line printed next starts on a line of its own."""
        if self._bar and self._current < self._target:
            sys.stdout.write("\n")
            sys.stdout.flush()
