"""The error a user can fix: a bad file, key or value, reported without a stack trace."""


class UserError(Exception):
    """A problem with the user's input: the message names the file, key or value and what would work.

    run.py prints the message and exits non-zero instead of showing a traceback.
    """


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite at `step`; nothing after it was saved."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint at `step`."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum = signum
        self.step = step
