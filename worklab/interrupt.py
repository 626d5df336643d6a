"""Ctrl-C and SIGTERM as a request to stop cleanly: the training loop saves, then the run exits.

A second signal while the first is being handled falls back to the default behaviour,
so a user can always force a stop.
"""
from __future__ import annotations

import logging
import signal
from typing import Optional

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context in which SIGINT/SIGTERM set `signal` instead of killing the process."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        log.warning("%s received: saving a checkpoint and stopping (send it again to stop at once)",
                    signal.Signals(signum).name)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
