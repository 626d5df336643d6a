"""A progress bar for interactive terminals; elsewhere (CI, nohup, pipes) the log lines show progress."""
from __future__ import annotations

import sys
from typing import Optional, Sequence, Tuple

import keras


class Progress:
    """Keras' Progbar when stdout is a terminal, nothing otherwise."""

    def __init__(self, target: int, unit: str = "step"):
        self._bar = keras.utils.Progbar(target, unit_name=unit) if sys.stdout.isatty() else None

    def update(self, current: int, values: Optional[Sequence[Tuple[str, float]]] = None) -> None:
        if self._bar:
            self._bar.update(current, values)

    def break_line(self) -> None:
        """End the bar's line so that a log line printed next starts on a line of its own."""
        if self._bar:
            sys.stdout.write("\n")
            sys.stdout.flush()
