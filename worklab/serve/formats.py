"""The export formats, one table: each format's file, how it is written, and how it is loaded to answer.

Every entry is a `Format`: its name (what schedule.formats lists), the file or folder it
writes in the export, the writer (from a `Writing`: the Classifier, the SavedModel already
written, the schedule's keys) and the loader, which opens the file as a `Model`: 0-255
float pixels [N, S, S, 3], already resized, in; float probabilities [N, classes] out.
Export writes through the writers and checks each loaded file against the SavedModel
(worklab.serve.checks); predict loads any exported file through the same loaders, so
what is checked at export is what predict runs. The schema's list of names
(worklab.config.schedules.EXPORT_FORMATS) is what the user may pick from this table;
tflite_dynamic is chosen by schedule.quantize=dynamic instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Protocol, Tuple

import numpy as np

from worklab.errors import UserError


class Model(Protocol):
    """An exported file opened to answer: pixels -> probabilities, and the (height, width) it takes."""

    input_size: Tuple[int, int]

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass
class Writing:
    """What a writer reads: the Classifier, the export folder (the SavedModel is in it already), the settings."""

    classifier: object  # worklab.serve.export.Classifier
    folder: Path
    resizing: str  # how the caller must resize, for the notes: the run's reader.resize in words
    int8_io: str  # schedule.int8_io
    calibration: Callable[[], Iterator[np.ndarray]]  # the representative images, [1, S, S, 3] each

    @property
    def saved_model(self) -> Path:
        return self.folder / "saved_model"

    @property
    def size(self) -> int:
        return self.classifier.image_size


@dataclass(frozen=True)
class Format:
    """One export format. `write` writes `file` into the export and returns its note for export.json."""

    name: str
    file: str
    write: Callable[[Writing], str]
    load: Callable[[Path], Model]


class _SavedModel:
    """The SavedModel's serving_resized signature (what the TFLite files and ONNX are converted from)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self._tf = tf
        self._signature = tf.saved_model.load(str(path)).signatures["serving_resized"]
        self.input_size = tuple(self._signature.structured_input_signature[1]["images"].shape[1:3])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._signature(images=self._tf.constant(pixels, self._tf.float32))["probabilities"].numpy()


class _Keras:
    """model.keras, loaded in safe mode as a user of Keras alone would."""

    def __init__(self, path: Path):
        import keras

        self._model = keras.saving.load_model(path, safe_mode=True)
        self.input_size = tuple(self._model.input_shape[1:3])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(np.asarray(pixels, np.float32), training=False))


def _pixels(w: Writing) -> str:
    return f"float32 [N, {w.size}, {w.size}, 3] RGB 0-255, already resized to {w.size}x{w.size} ({w.resizing})"


def _write_saved_model(w: Writing) -> str:
    """Written first, whatever formats says (the others are converted from it and checked against it)."""
    return "signatures serving_default (encoded files), serving_pixels, serving_uint8 and serving_resized"


def _write_keras(w: Writing) -> str:
    from worklab.serve.export import keras_model

    keras_model(w.classifier.model, w.size, w.classifier.temperature).save(w.folder / "model.keras")
    return f"{_pixels(w)}; output: softmax probabilities"


def _write_tflite(file: str, quantize: bool) -> Callable[[Writing], str]:
    def write(w: Writing) -> str:
        from worklab.serve.export import TFLITE_SIGNATURE, tflite

        data, ops = tflite(w.saved_model, quantize)
        (w.folder / file).write_bytes(data)
        return (f"signature {TFLITE_SIGNATURE}: {_pixels(w)}; TFLite has no kernel for decoding files nor for the "
                f"resize of reader.resample, so those stay the caller's job (ops: {ops})"
                + ("; dynamic-range quantized weights" if quantize else ""))
    return write


def _write_tflite_int8(w: Writing) -> str:
    from worklab.serve.export import TFLITE_SIGNATURE, tflite_int8

    (w.folder / "model_int8.tflite").write_bytes(tflite_int8(w.saved_model, w.calibration, w.int8_io))
    return (f"signature {TFLITE_SIGNATURE}: {w.int8_io} [N, {w.size}, {w.size}, 3] quantized pixels in, {w.int8_io} "
            "quantized probabilities out (each tensor's scale and zero point are in the file); int8 weights and "
            f"activations, TFLite's int8 built-in ops only; resized as for model.tflite ({w.resizing})")


def _write_onnx(w: Writing) -> str:
    from worklab.serve import onnx_model

    (w.folder / "model.onnx").write_bytes(onnx_model.convert(w.classifier))
    return f"input images: {_pixels(w)}; output probabilities; opset {onnx_model.OPSET}"


def _load_tflite(path: Path) -> Model:
    from worklab.serve.litert import TFLiteModel

    return TFLiteModel(path)


def _load_onnx(path: Path) -> Model:
    from worklab.serve.onnx_model import OnnxModel

    return OnnxModel(path)


FORMATS: Dict[str, Format] = {f.name: f for f in (
    Format("saved_model", "saved_model", _write_saved_model, _SavedModel),
    Format("keras", "model.keras", _write_keras, _Keras),
    Format("tflite", "model.tflite", _write_tflite("model.tflite", False), _load_tflite),
    Format("tflite_dynamic", "model_dynamic.tflite", _write_tflite("model_dynamic.tflite", True), _load_tflite),
    Format("tflite_int8", "model_int8.tflite", _write_tflite_int8, _load_tflite),
    Format("onnx", "model.onnx", _write_onnx, _load_onnx),
)}


def chosen(formats: List[str], quantize) -> List[Format]:
    """The formats an export writes, in schedule.formats' order; tflite_dynamic after tflite with quantize=dynamic."""
    names = [n for f in formats for n in ((f, "tflite_dynamic") if f == "tflite" and quantize == "dynamic" else (f,))]
    return [FORMATS[n] for n in names]


def for_file(path: Path, key: str) -> Format:
    """The format of an exported file: by its name as export writes it, else by its suffix; UserError naming `key`."""
    by_name = next((f for f in FORMATS.values() if f.file == path.name), None)
    by_suffix = next((f for f in FORMATS.values() if Path(f.file).suffix and Path(f.file).suffix == path.suffix),
                     None)
    if by_name or by_suffix:
        return by_name or by_suffix
    kinds = ", ".join(sorted({Path(f.file).suffix for f in FORMATS.values() if Path(f.file).suffix}))
    raise UserError(f"{key}={path} is a file of an unknown kind ({path.suffix or 'no suffix'}): pass an export folder "
                    f"(RUN/export/step-N) or a file export wrote ({kinds}).")
