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
# Lines that start something of their own even right after a native message: a fatal native line, Python's
# traceback, warning and error lines, worklab's own messages.
_OWN_LINE = re.compile(rb"^(F\d{4} |Traceback|\S+:\d+: \w*Warning|error: |\[)")


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
    """Pass the pipe's lines through to `real`, less native messages, until the pipe closes.

    A native message may span lines (TensorFlow's CPU-feature notice ends with "To enable
    the following instructions: ..."). absl writes each message with one write(), which a
    pipe delivers whole, so the lines that follow a native line in the same read belong to
    it, until the next line that starts a message of its own.
    """
    pending = b""
    while True:
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()  # a line the next read completes
        native = False
        for line in lines:
            native = bool(_NATIVE.match(line)) or (native and not _OWN_LINE.match(line))
            if native:
                log.debug("%s", line.decode(errors="replace").rstrip())
            else:
                os.write(real, line + b"\n")
    if pending:
        os.write(real, pending)
    os.close(read)
