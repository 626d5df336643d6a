"""A trained network as models to deploy: a SavedModel module, a Keras file of built-in layers, TFLite.

`Classifier` wraps the network with the reader's own decoding and resizing
(`reader.load` for encoded files, `reader.resize` for pixels, with the run's reader
settings: the functions the Tester's input pipeline calls, not copies); the scaling the network
expects is the network's own first layer (worklab.model.preprocessing). So a SavedModel
that takes encoded image files or 0-255 pixels of any size answers as the Tester does.
Its class names and k are constants inside the graph.

`keras_model` turns the network into a Keras model that `keras.saving.load_model(path,
safe_mode=True)` loads with nothing but Keras: worklab's ResNet is made of its own layer
classes (ConvBN, Block, Stage), which a plain Keras cannot rebuild, so their `call` is
traced once with Keras' built-in layers (copies carrying the same weights) and ops; the
preprocessing layer becomes the Keras ops it computes. Resizing stays the caller's job
for that format (its input is image_size x image_size).
"""
from __future__ import annotations

import hashlib
import numbers
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import keras
import numpy as np
import tensorflow as tf

from worklab.compat import run_through_graph
from worklab.config.reader import ReaderConfig
from worklab.data import reader

PIXELS = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
ENCODED = tf.TensorSpec([None], tf.string, name="images")


class Classifier(tf.Module):
    """The network with its preprocessing and top-k: what a SavedModel's signatures serve.

    Every entry point returns {"probabilities": float32 [N, classes], "log_probabilities": float32
    [N, classes], "classes": int32 [N, k], "labels": string [N, k], "scores": float32 [N, k]},
    k = min(top_k, number of classes). The log-probabilities are what a loss is taken from:
    a probability underflows to 0 in float32 while its log stays finite and accurate.
    """

    def __init__(self, model: keras.Model, classes: List[str], reading: ReaderConfig, top_k: int,
                 temperature: float = 1.0):
        """`reading`: the run's reader config, whose image_size, resize and crop_fraction the signatures apply;
        `temperature`: schedule=calibrate's, which the logits are divided by before the softmax."""
        super().__init__(name="classifier")
        self._network = _Untracked(model)
        # The tf.Variables under Keras' variables are what the SavedModel saves: tracked
        # through the Keras model they would be saved twice, and the TFLite converter would
        # keep them as variables (NaN outputs) instead of folding them into constants.
        self.network_variables = [v.value for v in model.variables]
        self.class_names = [str(c) for c in classes]
        self._reading = _Untracked(reading)
        self.image_size = int(reading.image_size)
        self.k = min(int(top_k), len(self.class_names))
        self.temperature = float(temperature)
        # Built here because its input shape holds image_size (TFLite needs the static size).
        self.from_resized = tf.function(self._from_resized, input_signature=[
            tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32, name="images")])

    @property
    def model(self) -> keras.Model:
        return self._network.value

    @tf.function(input_signature=[ENCODED])
    def from_bytes(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Encoded JPEG, PNG, BMP, GIF or WebP files (EXIF orientation applied) -> predictions."""
        return self._classify(decoded(images, self._reading.value))

    @tf.function(input_signature=[PIXELS])
    def from_pixels(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Decoded RGB images, 0-255 values, any height and width (resized here as the reader does) -> predictions."""
        return self._classify(reader.resize(images, self._reading.value))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def from_uint8(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """from_pixels for uint8 images."""
        return self._classify(reader.resize(images, self._reading.value))

    def _from_resized(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """0-255 images already at image_size x image_size (the caller resized them) -> predictions.

        What the TFLite files are converted from: TFLite has no kernel for reader.resample's
        filters (ResizeArea, ScaleAndTranslate) nor for decoding, so they take resized pixels, clipped
        to [0, 255], where reader.resize keeps them.
        """
        return self._classify(tf.clip_by_value(images, 0.0, 255.0))

    def _classify(self, resized: tf.Tensor) -> Dict[str, tf.Tensor]:
        """0-255 images at image_size -> the network's (log-)probabilities in inference mode, and the top k."""
        logits = tf.cast(self.model(resized, training=False), tf.float32) / self.temperature
        probabilities = tf.nn.softmax(logits)
        scores, indices = tf.math.top_k(probabilities, k=self.k)
        return {"probabilities": probabilities, "log_probabilities": tf.nn.log_softmax(logits), "classes": indices,
                "labels": tf.gather(tf.constant(self.class_names), indices), "scores": scores}

    def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
        """The SavedModel signatures: serving_default (encoded files), serving_pixels, _uint8 and _resized."""
        return {"serving_default": self.from_bytes.get_concrete_function(),
                "serving_pixels": self.from_pixels.get_concrete_function(),
                "serving_uint8": self.from_uint8.get_concrete_function(),
                "serving_resized": self.from_resized.get_concrete_function()}


def decoded(images: tf.Tensor, reading: ReaderConfig) -> tf.Tensor:
    """Encoded image files [N] -> float32 0-255 pixels [N, S, S, 3], decoded and resized as the Tester's input is."""
    size = reading.image_size
    return tf.map_fn(lambda contents: reader.load(contents, reading), images,
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


class _Untracked:
    """Holds an object out of TensorFlow's tracking (a tf.Module saves what its attributes track)."""

    def __init__(self, value):
        self.value = value


def keras_model(model: keras.Model, image_size: int, temperature: float = 1.0) -> keras.Model:
    """Built-in layers and Keras ops only: 0-255 images at image_size -> the network (preprocessing first), softmax.

    The network's weights are copied, so the returned model does not share a variable
    with `model`. A calibrated run's logits are divided by its `temperature` first.
    """
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="images")
    logits = _flattened(model, inputs)
    if temperature != 1.0:
        logits = keras.layers.Rescaling(1.0 / temperature, dtype="float32", name="temperature")(logits)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=model.name)


def _builtin(layer: keras.layers.Layer) -> bool:
    """A built-in layer, copied as it is; a nested model (a Keras Application's body) is opened instead."""
    return type(layer).__module__.startswith("keras.") and not isinstance(layer, keras.Model)


class _Copies:
    """Copies of built-in layers under names unique in the model (their variables' path, '/' -> '_')."""

    def __init__(self):
        self.pairs: List = []
        self.names: set = set()

    def copy(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization) and not isinstance(config["momentum"], numbers.Number):
            config["momentum"] = float(keras.ops.convert_to_numpy(layer.momentum))  # batchnorm's shared variable
        base = layer.weights[0].path.rsplit("/", 1)[0].replace("/", "_") if layer.weights else layer.name
        name, n = base, 0
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        config["name"] = name
        new = type(layer).from_config(config)
        self.pairs.append((layer, new))
        return new


def _flattened(model: keras.Model, inputs) -> keras.KerasTensor:
    """`model` applied to `inputs` as a graph of built-in layers and Keras ops, in inference mode.

    Each layer of worklab's own classes, and each nested model, is inlined by running its
    `call` on the symbolic tensors, so the network's code decides the graph and nothing is
    written twice here;
    each built-in layer it calls is replaced by a copy with the same weights. Layer.__call__
    is swapped for the duration of the trace and put back (compat.run_through_graph).
    """
    copies = _Copies()

    def call(original, layer, *args, **kwargs):
        if _builtin(layer):
            return original(copies.copy(layer), *args, **kwargs)
        kwargs["training"] = False
        return layer.call(*args, **kwargs)

    outputs = run_through_graph(model, inputs, call)
    for old, new in copies.pairs:
        new.set_weights(old.get_weights())
    return outputs


TFLITE_SIGNATURE = "serving_resized"


def tflite(saved_model: Path, quantize: bool) -> tuple:
    """The SavedModel's serving_resized signature as a TFLite flatbuffer: (bytes, op sets used).

    Not serving_pixels: its resize (ResizeArea or ScaleAndTranslate) is not a TFLite
    built-in, so pixels come resized. TFLite's built-in ops are
    tried first; select TF ops (the Flex delegate) only when they do not suffice.
    """
    def convert(select: bool) -> bytes:
        converter = _converter(saved_model)
        if select:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()

    try:
        return convert(False), "builtins"
    except Exception:  # the converter raises ConverterError for ops outside the built-in set
        return convert(True), "builtins+select_tf_ops"


def tflite_int8(saved_model: Path, calibration: Callable[[], Iterator[np.ndarray]], io_type: str) -> bytes:
    """serving_resized as a full-integer TFLite flatbuffer: int8 weights and activations, `io_type` in and out.

    `calibration()` yields 0-255 images [1, S, S, 3], the representative dataset from which
    the converter sets each activation's range. Only TFLite's int8 built-in ops are
    allowed (what an Edge TPU or a microcontroller runs), so a graph that needs a float op
    fails to convert rather than giving a file that is not full-integer.
    """
    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"images": image} for image in calibration())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.as_dtype(io_type)
    return converter.convert()


def _converter(saved_model: Path) -> "tf.lite.TFLiteConverter":
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[TFLITE_SIGNATURE])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_in(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(Path(folder).rglob("*")) if p.is_file())
