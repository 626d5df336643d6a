"""TFLite files run with LiteRT: `ai_edge_litert`'s interpreter where installed, `tf.lite`'s otherwise.

`tf.lite.Interpreter` is deprecated, its deletion announced; LiteRT (the `ai-edge-litert`
package, in worklab's `[test]` extra) is the same runtime under its new name. Export's
checks, predict and the tests all run a TFLite file through `TFLiteModel`, so they run it
the same way and the choice of runtime is made here once.

A full-integer file (model_int8.tflite) takes uint8 or int8 pixels and gives quantized
probabilities; `TFLiteModel` quantizes its input and dequantizes its output with the
file's own scale and zero point, so every TFLite file answers 0-255 float pixels with
float probabilities.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np


def interpreter(path: Path):
    """An interpreter for the TFLite file at `path`, from ai_edge_litert when installed, else tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    return Interpreter(model_path=str(path))


def runtime() -> str:
    """The runtime `interpreter` uses, for logs and records: ai_edge_litert X.Y.Z or tf.lite."""
    try:
        from ai_edge_litert import __version__
    except ImportError:
        return "tf.lite"
    return f"ai_edge_litert {__version__}"


class TFLiteModel:
    """A TFLite file's one signature: 0-255 float pixels [N, S, S, 3] -> float probabilities [N, classes]."""

    def __init__(self, path: Path):
        signatures = (runner := interpreter(path)).get_signature_list()
        self.signature = next(iter(signatures))
        self._run = runner.get_signature_runner(self.signature)
        self._input = self._run.get_input_details()["images"]
        self._output = self._run.get_output_details()["probabilities"]

    @property
    def input_size(self) -> Tuple[int, int]:
        """(height, width) the file takes."""
        return tuple(int(n) for n in self._input["shape_signature"][1:3])

    @property
    def input_type(self) -> str:
        return np.dtype(self._input["dtype"]).name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        images = _quantized(np.asarray(pixels, np.float32), self._input)
        return _dequantized(self._run(images=images)["probabilities"], self._output)


def _quantized(values: np.ndarray, detail) -> np.ndarray:
    """Float values as the tensor's type: unchanged for float32, else value / scale + zero point, rounded."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return values
    scale, zero = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero, limits.min, limits.max).astype(dtype)


def _dequantized(values: np.ndarray, detail) -> np.ndarray:
    """A tensor's values as float32: (value - zero point) * scale for an integer tensor."""
    if np.dtype(detail["dtype"]) == np.float32:
        return values
    scale, zero = detail["quantization"]
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)
