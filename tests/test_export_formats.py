"""The export formats' table, each file checked against the SavedModel, LiteRT, ONNX, predict from any file and
TF Serving's REST bodies, on a tiny model built here (a few seconds each, no run trained).

The model is a convolution, batch norm and a dense head on 8 x 8 images of 3 classes,
with weights drawn from a fixed seed; the images are coloured squares made here.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worklab.config.schedules import EXPORT_FORMATS, ExportSchedule
from worklab.errors import UserError

SIZE = 8
CLASSES = ["red", "green", "blue"]
TEMPERATURE = 2.5  # a calibrated run's: every format divides the logits by it before the softmax


def tiny_model(size: int = SIZE):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES))(x))


def pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every format of the table written into one export folder, with the export.json predict reads, for a run
    that schedule=calibrate gave a temperature."""
    import tensorflow as tf

    from worklab.config.reader import ReaderConfig
    from worklab.serve.export import Classifier
    from worklab.serve.formats import FORMATS, Writing

    folder = tmp_path_factory.mktemp("export")
    classifier = Classifier(tiny_model(), CLASSES, ReaderConfig(image_size=SIZE), top_k=2, temperature=TEMPERATURE)
    tf.saved_model.save(classifier, str(folder / "saved_model"), signatures=classifier.signatures())
    writing = Writing(classifier, folder, "antialiased bilinear", "uint8",
                      lambda: (image[None] for image in pixels(20, seed=1)))
    notes = {name: f.write(writing) for name, f in FORMATS.items()}
    (folder / "export.json").write_text(json.dumps({"classes": CLASSES, "image_size": SIZE, "top_k": 2,
                                                    "resize": {"mode": "squash"}}))
    return folder, notes


def test_the_exported_probabilities_are_the_softmax_of_the_logits_over_the_temperature(exported):
    import tensorflow as tf

    folder, _ = exported
    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_resized"]
    images = pixels(6, seed=3)
    logits = tiny_model()(images).numpy().astype(np.float64)
    expected = np.exp(logits / TEMPERATURE) / np.exp(logits / TEMPERATURE).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served(images=tf.constant(images))["probabilities"].numpy(), expected, atol=1e-6)
    assert not np.allclose(expected, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-3)


def test_the_table_holds_every_format_the_schema_accepts():
    from worklab.serve.formats import FORMATS, chosen

    assert set(FORMATS) == set(EXPORT_FORMATS) | {"tflite_dynamic"}
    assert [f.name for f in chosen(["keras", "tflite", "onnx"], "dynamic")] == ["keras", "tflite", "tflite_dynamic",
                                                                               "onnx"]
    assert [f.file for f in chosen(["tflite_int8"], None)] == ["model_int8.tflite"]


def test_every_format_loads_and_answers_as_the_saved_model(exported):
    """Float formats within 1e-5 of the SavedModel's serving_resized; the quantized ones agree on most top-1s."""
    from worklab.serve import checks
    from worklab.serve.formats import FORMATS

    folder, notes = exported
    models = {name: f.load(folder / f.file) for name, f in FORMATS.items()}
    assert all(model.input_size == (SIZE, SIZE) for model in models.values())
    images, labels = pixels(64, seed=2), np.arange(64) % 3
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)]
    results = checks.compare(models["saved_model"], models, batches, "test")
    expected = np.concatenate([models["saved_model"](b) for b, _ in batches])
    for name in ("saved_model", "keras", "tflite", "onnx"):
        assert results[name]["max_abs_diff"] <= 1e-5 and results[name]["agreement"] == 1.0, name
    for name in ("tflite_dynamic", "tflite_int8"):
        got = models[name](images)
        assert results[name]["agreement"] == np.mean(got.argmax(1) == expected.argmax(1)) >= 0.9, name
        assert results[name]["max_abs_diff"] == pytest.approx(np.abs(got - expected).max())
    assert results["tflite"]["accuracy"] == np.mean(expected.argmax(1) == labels)
    assert {r["set"] for r in results.values()} == {"test"} and {r["count"] for r in results.values()} == {64}
    assert "opset 17" in notes["onnx"] and "uint8" in notes["tflite_int8"]


def test_the_int8_file_is_full_integer_with_uint8_or_int8_at_its_ends(exported, tmp_path):
    """Every tensor between input and output is int8 (or int32 biases); the ends take the schedule.int8_io type."""
    from worklab.serve.export import tflite_int8
    from worklab.serve.litert import TFLiteModel, interpreter

    folder, _ = exported
    model = TFLiteModel(folder / "model_int8.tflite")
    assert model.input_type == "uint8"
    types = {np.dtype(t["dtype"]).name for t in interpreter(folder / "model_int8.tflite").get_tensor_details()}
    assert "float32" not in types and "int8" in types
    signed = tmp_path / "signed.tflite"
    signed.write_bytes(tflite_int8(folder / "saved_model", lambda: (p[None] for p in pixels(8)), "int8"))
    assert TFLiteModel(signed).input_type == "int8"
    np.testing.assert_allclose(TFLiteModel(signed)(pixels(4)).sum(1), 1, atol=0.05)  # dequantized probabilities


def test_litert_is_the_runtime_where_installed(exported):
    from worklab.serve.litert import interpreter, runtime

    folder, _ = exported
    assert type(interpreter(folder / "model.tflite")).__module__.startswith("ai_edge_litert")
    assert runtime().startswith("ai_edge_litert ")


def test_a_tally_counts_agreement_accuracy_and_the_largest_difference():
    from worklab.serve.checks import Tally

    tally = Tally()
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    tally.add(reference, np.array([[0.7, 0.3], [0.6, 0.4], [0.5, 0.5]]), np.array([0, 0, 1]))
    assert tally.record("val") == {"agreement": 2 / 3, "accuracy": 2 / 3, "max_abs_diff": pytest.approx(0.4),
                                   "set": "val", "count": 3}


# Predict from any exported file --------------------------------------------------------------------


def files(tmp_path: Path, count: int = 6):
    """Encoded PNGs of several sizes (resized to SIZE by the classifier) and their bytes."""
    out = []
    for i in range(count):
        image = Image.fromarray(np.random.default_rng(i).integers(0, 256, (5 + i, 9 + i, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("name", ["model.keras", "model.tflite", "model_dynamic.tflite", "model_int8.tflite",
                                  "model.onnx"])
def test_predict_from_any_file_gives_the_saved_models_top_k(exported, tmp_path, name):
    """Encoded files of any size, decoded and resized as the SavedModel's serving_default does them."""
    import tensorflow as tf

    from worklab.serve.exported import from_file

    folder, _ = exported
    images = tf.constant(files(tmp_path))
    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"](images=images)
    classify, names, origin = from_file(folder / name, "schedule.model")
    got = classify(images)
    assert names == CLASSES and origin["model"] == str(folder / name)
    tolerance = 1e-5 if "_" not in name else 0.06  # the quantized files
    assert np.abs(got["probabilities"] - served["probabilities"].numpy()).max() <= tolerance
    assert got["labels"].shape == (6, 2) and set(got["labels"].ravel()) <= {c.encode() for c in CLASSES}
    if tolerance < 1e-3:
        np.testing.assert_array_equal(got["classes"], served["classes"].numpy())
        np.testing.assert_array_equal(got["labels"], served["labels"].numpy())


def test_predict_refuses_an_unknown_kind_and_a_file_of_another_size(exported, tmp_path):
    import tensorflow as tf

    from worklab.config.reader import ReaderConfig
    from worklab.serve.export import Classifier, tflite
    from worklab.serve.exported import from_file

    folder, _ = exported
    (tmp_path / "model.pt").write_bytes(b"not ours")
    with pytest.raises(UserError, match=r"schedule.model=.*model.pt is a file of an unknown kind \(.pt\).*"
                                        r"\.keras, \.onnx, \.tflite"):
        from_file(tmp_path / "model.pt", "schedule.model")
    other = Classifier(tiny_model(12), CLASSES, ReaderConfig(image_size=12), top_k=2)
    tf.saved_model.save(other, str(tmp_path / "saved_model"), signatures=other.signatures())
    (tmp_path / "model.tflite").write_bytes(tflite(tmp_path / "saved_model", False)[0])
    (tmp_path / "export.json").write_text((folder / "export.json").read_text())  # image_size 8
    with pytest.raises(UserError, match=r"model.tflite takes 12x12 images, but the images are resized to 8x8 "
                                        r"\(image_size in .*export.json\)"):
        from_file(tmp_path / "model.tflite", "schedule.model")
    (tmp_path / "export.json").unlink()
    with pytest.raises(UserError, match="no export.json beside it"):
        from_file(tmp_path / "model.tflite", "schedule.model")


# TF Serving's REST API -------------------------------------------------------------------------------


def serving_inputs(body: dict, signature) -> dict:
    """A REST request body as TF Serving decodes it for `signature`, by its documented rules (REST API, "Encoding
    binary values"): the row format {"instances": [...]} lists one value per example of the single input; the
    column format {"inputs": {name: [...]}} gives each input's values; an object {"b64": "..."} whose only key is
    b64 is standard base64 decoded to the bytes of a string tensor; other values are the tensor's elements."""
    import tensorflow as tf

    def value(v):
        if isinstance(v, dict):
            assert list(v) == ["b64"], "a binary value is an object whose only key is b64"
            return base64.b64decode(v["b64"], validate=True)
        return [value(e) for e in v] if isinstance(v, list) else v

    specs = signature.structured_input_signature[1]
    columns = body["inputs"] if "inputs" in body else {next(iter(specs)): body["instances"]}
    return {name: tf.constant(value(v), dtype=specs[name].dtype) for name, v in columns.items()}


def test_the_saved_model_answers_tf_servings_rest_bodies(exported, tmp_path):
    """Both body formats with b64 files for serving_default, and a pixel array for serving_uint8."""
    import tensorflow as tf

    folder, _ = exported
    model = tf.saved_model.load(str(folder / "saved_model"))
    encoded = files(tmp_path, 3)
    b64 = [{"b64": base64.b64encode(f).decode()} for f in encoded]
    bodies = [{"instances": b64}, {"signature_name": "serving_default", "inputs": {"images": b64}}]
    expected = model.signatures["serving_default"](images=tf.constant(encoded))["probabilities"].numpy()
    for body in json.loads(json.dumps(bodies)):  # as sent: JSON text
        signature = model.signatures[body.get("signature_name", "serving_default")]
        np.testing.assert_array_equal(signature(**serving_inputs(body, signature))["probabilities"].numpy(), expected)
    decoded = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB").resize((SIZE, SIZE))) for f in encoded]
    body = json.loads(json.dumps({"signature_name": "serving_uint8", "instances": [d.tolist() for d in decoded]}))
    signature = model.signatures[body["signature_name"]]
    got = signature(**serving_inputs(body, signature))["probabilities"].numpy()
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, model.signatures["serving_pixels"](
        images=tf.constant(np.stack(decoded), tf.float32))["probabilities"].numpy(), atol=1e-6)


# Bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys, says", [
    ({"calibration_images": 0}, "schedule.calibration_images=0 must be greater than 0"),
    ({"calibration_images": -3}, "schedule.calibration_images=-3 must be greater than 0"),
    ({"int8_io": "float16"}, "schedule.int8_io='float16' is not one of uint8, int8"),
    ({"min_agreement": 1.5}, "schedule.min_agreement=1.5 must be in [0, 1]"),
])
def test_bad_export_keys_are_refused_naming_the_key(keys, says):
    with pytest.raises(UserError) as refused:
        ExportSchedule(formats=["tflite_int8"], **keys)
    assert says in str(refused.value)


def test_onnx_without_its_extra_gives_the_pip_command(monkeypatch):
    from worklab.serve import onnx_model

    assert onnx_model.missing() == ""
    monkeypatch.setattr(onnx_model, "PACKAGES", ("tf2onnx", "worklab_no_such_package"))
    assert onnx_model.missing() == 'worklab_no_such_package not installed; pip install "worklab[onnx]" installs them'
