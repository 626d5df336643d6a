"""TensorFlow's C++ log lines are kept off the terminal, whole messages included."""
from __future__ import annotations

import logging
import os
import threading

from worklab import native_log

NOTICE = (b"I0000 00:00:1796376221.606667   12331 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to "
          b"use available CPU instructions in performance-critical operations.\n"
          b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
          b"appropriate compiler flags.\n")


def filtered(*writes: bytes) -> bytes:
    """What reaches the terminal when `writes` go through the filter, each as one write()."""
    read, write = os.pipe()
    out_read, out_write = os.pipe()
    pump = threading.Thread(target=native_log._pump, args=(read, out_write))
    pump.start()
    for data in writes:
        os.write(write, data)
    os.close(write)
    pump.join(timeout=10)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as shown:
        return shown.read()


def test_a_native_message_of_two_lines_is_kept_off_whole_and_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="worklab.native")
    assert filtered(NOTICE, b"error: reader.image_size=0 must be greater than 0.\n") == \
        b"error: reader.image_size=0 must be greater than 0.\n"
    assert "To enable the following instructions" in caplog.text and "cpu_feature_guard" in caplog.text


def test_lines_of_their_own_pass_even_right_after_a_native_line():
    own = (b"Traceback (most recent call last):\n"
           b"F0000 00:00:00.000000 1 check.cc:1] Check failed\n"
           b"/x/y.py:3: UserWarning: careful\n")
    assert filtered(NOTICE.splitlines(keepends=True)[0] + own) == own
    assert filtered(b"plain line\n", b"no newline at the end") == b"plain line\nno newline at the end"
