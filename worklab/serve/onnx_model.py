"""ONNX: the classifier from 0-255 pixels at the run's size to probabilities, written and run.

Converted with tf2onnx (the `[onnx]` extra) from the same function the TFLite files are
converted from (`Classifier.from_resized`), keeping only its probabilities. tf2onnx rather
than Keras' `Model.export(format="onnx")`: Keras' exporter calls tf2onnx itself on
TensorFlow (keras/src/export/onnx.py), so it needs the same packages, and it exports a
Keras model's call, while the function here is the Classifier's, with its clipping and
softmax, so ONNX answers exactly what the SavedModel's serving_resized signature does.
On tensorflow 2.21, numpy 2.4 and protobuf 7, tf2onnx 1.17 converts and onnxruntime 1.32
runs the result (tests/test_export_formats.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17  # onnxruntime 1.17 and later run it; tf2onnx 1.17 converts to it
INSTALL = 'pip install "worklab[onnx]"'
PACKAGES = ("tf2onnx", "onnx", "onnxruntime")  # the [onnx] extra's, by import name


def missing() -> str:
    """'' when the [onnx] extra is installed, else what is missing and the pip command that installs it."""
    import importlib.util

    absent = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    return f"{', '.join(absent)} not installed; {INSTALL} installs them" if absent else ""


def convert(classifier) -> bytes:
    """`classifier`'s probabilities from resized 0-255 pixels as an ONNX model (opset OPSET), serialized."""
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, classifier.image_size, classifier.image_size, 3], tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def probabilities(images):
        return {"probabilities": classifier.from_resized(images)["probabilities"]}

    model, _ = tf2onnx.convert.from_function(probabilities, input_signature=[spec], opset=OPSET)
    return model.SerializeToString()


class OnnxModel:
    """model.onnx in onnxruntime: 0-255 float pixels [N, S, S, 3] -> probabilities [N, classes]."""

    def __init__(self, path: Path):
        import onnxruntime

        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0]

    @property
    def input_size(self):
        """(height, width) the file takes."""
        return tuple(int(n) for n in self._input.shape[1:3])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._session.run(["probabilities"], {self._input.name: np.asarray(pixels, np.float32)})[0]
