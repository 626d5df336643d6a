"""TensorFlow's C++ log lines kept off the terminal.

TensorFlow's shared libraries print to file descriptor 2 directly, before and after
TF_CPP_MIN_LOG_LEVEL applies ("All log messages before absl::InitializeLog() is called
are written to STDERR", oneDNN and CUDA notices, "failed call to cuInit" on a machine
without a GPU). `filter_stderr` puts a pipe behind descriptor 2 and a thread that
passes every other line through to the real stderr, sends C++ lines to the logger
`worklab.native` at DEBUG (shown with hydra.verbose=worklab.native), and lets fatal
ones (F...) through. It is for the command line only: run.py installs it once; the
library and the tests never touch descriptor 2.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

log = logging.getLogger("worklab.native")

# absl's format: a severity letter, MMDD, time, thread, file:line] message; and absl's pre-init notice.
_NATIVE = re.compile(rb"^([IWE])\d{4} \d\d:\d\d:\d\d|^WARNING: All log messages before absl::InitializeLog")


def filter_stderr() -> None:
    """Route descriptor 2 through the filter until the process exits."""
    sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    thread = threading.Thread(target=_pump, args=(read, real), name="native-log", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the thread drains it and ends
        thread.join(timeout=5)

    atexit.register(restore)


def _pump(read: int, real: int) -> None:
    with os.fdopen(read, "rb") as lines:
        for line in lines:
            if _NATIVE.match(line):
                log.debug("%s", line.decode(errors="replace").rstrip())
            else:
                os.write(real, line)
