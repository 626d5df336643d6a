"""How a run ends when it does not finish: bad input, a failed run, or a stop on request.

run.py turns each into a message without a stack trace and its own exit code:

    0    finished
    1    the run failed (RunFailed: the loss diverged, the disk filled up, out of memory)
    2    bad input refused (UserError: a file, key or value); the run folder is left as it was
    130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM (Interrupted); resume to continue
"""
from __future__ import annotations

from typing import Optional

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class UserError(Exception):
    """A problem with the user's input: the message names the file, key or value and what would work.

    run.py prints the message and exits with EXIT_BAD_INPUT instead of showing a traceback.
    """


class RunFailed(Exception):
    """The run started as asked but could not go on; its summary is marked failed, the exit code is EXIT_FAILED."""


class NonFiniteLoss(RunFailed):
    """The training loss became NaN or infinite at `step`; nothing after it was saved."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Interrupted(Exception):
    """A schedule stopped on SIGINT or SIGTERM.

    For training, `step` is the step reached and `saved` the step of the last checkpoint
    (None if there is none), and a resume continues. A schedule that trains nothing
    (watch, predict) says what it did and how to go on in `note` instead.
    """

    def __init__(self, signum: int, step: int, saved: Optional[int] = None, note: Optional[str] = None):
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum = signum
        self.step = step
        self.saved = saved
        self.note = note

    def describe(self) -> str:
        """What the user has: the step reached and the checkpoint a resume starts from (or the note)."""
        if self.note:
            return self.note
        if self.saved is None:
            return f"stopped at step {self.step} before any checkpoint was saved"
        if self.saved == self.step:
            return f"stopped at step {self.step} with a checkpoint saved"
        return f"stopped at step {self.step}; the last checkpoint is step {self.saved}"
