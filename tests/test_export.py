"""schedule=export: the exported models answer as worklab's Tester does, and bad input exports nothing.

The reference is the Tester's own forward pass (its input pipeline and `_predict`) over the
test set of a trained tiny run, at the exported step. The SavedModel and model.keras are
loaded in a fresh Python process that never imports worklab, as a user deploying them would.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import STAGES, TINY, compose, one_device, run_py, train_here
from worklab import app
from worklab.config.schedules import ExportSchedule
from worklab.data.reader import decode

ALL = ["schedule.formats=[saved_model,keras,tflite,tflite_int8,onnx]", "schedule.quantize=dynamic"]

# Loads the export with TensorFlow and Keras only: serving_default on the files' bytes,
# serving_pixels on each decoded image, model.keras (safe mode) on the resized pixels.
FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
import keras
folder, paths, resized, out = sys.argv[1:]
model = tf.saved_model.load(folder + "/saved_model")
files = [open(p, "rb").read() for p in json.load(open(paths))]
by_bytes = model.signatures["serving_default"](images=tf.constant(files))
pixels = [model.signatures["serving_pixels"](images=tf.cast(tf.io.decode_image(f, channels=3), tf.float32)[None])
          for f in files]
result = {k: by_bytes[k].numpy() for k in ("probabilities", "classes", "scores")}
result["labels"] = by_bytes["labels"].numpy().astype(str)
result["pixels"] = np.concatenate([p["probabilities"].numpy() for p in pixels])
if __import__("os").path.isfile(folder + "/model.keras"):
    net = keras.saving.load_model(folder + "/model.keras", safe_mode=True)
    result["keras"] = net.predict(np.load(resized), verbose=0)
assert "worklab" not in sys.modules, "the fresh process imported worklab"
np.savez(out, **result)
"""


def contents(folder: Path):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def train(run: Path, data_dir: Path, *extra: str) -> None:
    result = run_py([*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", STAGES, *extra], run.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def export(run: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_py(["schedule=export", f"resume={run}", *extra], run.parent)


def reference(cfg, step: int):
    """The Tester's probabilities for checkpoint `step`, the test paths, and their resized 0-255 pixels.

    `cfg`: the run's config, composed as in the test (TINY and the run's overrides).
    """
    from worklab.data.reader import resize
    from worklab.run.parts import Parts

    parts = Parts(cfg, None, one_device())
    assert parts.restore_for_inference(step) == step
    tester = parts.tester
    probs = np.concatenate([tester._predict(images)[0].numpy() for images, _ in tester.dataset])
    paths = list(parts.inputs.test_images.paths)
    resized = np.stack([resize(decode(tf.io.read_file(p)), parts.cfg.reader).numpy() for p in paths])
    return probs, paths, resized, list(parts.inputs.classes)


def reference_labels(folder: Path, paths) -> np.ndarray:
    """The test images' labels as class indices: the demo set's files sit in folders named after their class."""
    classes = json.loads((folder / "export.json").read_text())["classes"]
    return np.array([classes.index(Path(p).parent.name) for p in paths])


def fresh_process(folder: Path, paths, resized: np.ndarray, tmp: Path):
    """What the export answers, computed in a process that has TensorFlow and Keras but not worklab."""
    (tmp / "paths.json").write_text(json.dumps(paths))
    np.save(tmp / "resized.npy", resized.astype(np.float32))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", FRESH, str(folder), str(tmp / "paths.json"),
                             str(tmp / "resized.npy"), str(tmp / "out.npz")], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(tmp / "out.npz"))


def tflite(path: Path, resized: np.ndarray) -> np.ndarray:
    from worklab.serve.litert import TFLiteModel

    return TFLiteModel(path)(resized)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A tiny fixed-schedule run (checkpoints and tests at steps 4 and 6), exported at step 4 in every format."""
    run = tmp_path_factory.mktemp("export") / "run"
    train(run, data_dir)
    checkpoints, config = contents(run / "checkpoints"), contents(run / ".hydra")
    result = export(run, "schedule.step=4", *ALL)
    assert result.returncode == 0, result.stdout + result.stderr
    return run, checkpoints, config, result.stdout


@pytest.mark.slow
def test_every_format_gives_the_testers_probabilities(trained, tmp_path, data_dir):
    """SavedModel (fresh process, bytes): 1e-5; serving_pixels = serving_default: 1e-5; model.keras: 1e-5;
    TFLite float: 1e-4; dynamic-range TFLite: top-1 as the checkpoint on >= 98% of the test images, which on
    the tiny set's 30 images means all 30 (29 would be 96.7%)."""
    run, _, _, log = trained
    folder = run / "export" / "step-4"
    expected, paths, resized, classes = reference(compose(["schedule=test"], run, data_dir), 4)
    assert len(paths) == 30
    got = fresh_process(folder, paths, resized, tmp_path)
    assert np.abs(got["probabilities"] - expected).max() <= 1e-5
    assert np.abs(got["pixels"] - got["probabilities"]).max() <= 1e-5
    assert np.abs(got["keras"] - expected).max() <= 1e-5
    top = np.argsort(-expected, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got["classes"], top)
    np.testing.assert_array_equal(got["labels"], np.asarray(classes)[top])
    np.testing.assert_allclose(got["scores"], np.take_along_axis(expected, top, 1), atol=1e-5)
    assert np.abs(tflite(folder / "model.tflite", resized) - expected).max() <= 1e-4
    dynamic = tflite(folder / "model_dynamic.tflite", resized)
    assert np.mean(dynamic.argmax(1) == expected.argmax(1)) >= 0.98
    from worklab.serve.onnx_model import OnnxModel

    assert np.abs(OnnxModel(folder / "model.onnx")(resized) - expected).max() <= 1e-4
    int8 = tflite(folder / "model_int8.tflite", resized)
    assert np.mean(int8.argmax(1) == expected.argmax(1)) >= 0.9 and np.abs(int8 - expected).max() <= 0.1
    for name in ("model.keras", "model.tflite", "model_dynamic.tflite", "model_int8.tflite", "model.onnx",
                 "saved_model/saved_model.pb"):
        assert f"export: wrote {name}" in log
    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_resized"](
        images=tf.constant(resized, tf.float32))["probabilities"].numpy()
    checks = json.loads((folder / "export.json").read_text())["checks"]
    assert checks["tflite_int8"] == {"agreement": np.mean(int8.argmax(1) == served.argmax(1)),
                                     "accuracy": np.mean(int8.argmax(1) == reference_labels(folder, paths)),
                                     "max_abs_diff": pytest.approx(np.abs(int8 - served).max(), abs=1e-7),
                                     "set": "test", "count": 30}
    for name in ("saved_model", "keras", "tflite", "tflite_dynamic", "tflite_int8", "onnx"):
        assert f"export: check {name:<14} agreement {checks[name]['agreement']:.4f}" in log
    assert "exported step 4 to" in log


@pytest.mark.slow
def test_export_json_describes_the_export(trained):
    run, *_ = trained
    folder = run / "export" / "step-4"
    info = json.loads((folder / "export.json").read_text())
    evaluation = json.loads((run / "evaluations" / "step-000004.json").read_text())
    assert info["step"] == 4 and info["run"] == str(run.resolve())
    assert info["classes"] == json.loads((run / "classes.json").read_text())["classes"]
    assert (info["image_size"], info["top_k"], info["formats"]) == (16, 5, ["saved_model", "keras", "tflite",
                                                                          "tflite_int8", "onnx"])
    assert (info["onnx_opset"], info["calibration_images"]) == (17, 40)  # 40: the whole training list
    assert info["preprocessing"] == {"mode": "mean_std", "bgr": False, "divisor": 255.0,
                                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert info["test"] == {k: evaluation[k] for k in ("loss", "accuracy", "top_k", "top_k_accuracy", "count")}
    assert info["tensorflow"] == tf.__version__ and info["keras"]
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"export.json"}
    assert set(info["sha256"]) == files
    for name, digest in info["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(trained):
    run, *_ = trained
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--dir", str(run / "export" / "step-4" / "saved_model"), "--all"],
                           capture_output=True, text=True, timeout=120).stdout
    for name in ("serving_default", "serving_pixels", "serving_uint8", "serving_resized"):
        assert f"signature_def['{name}']" in shown
    default = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['images']" in default and "DT_STRING" in default
    for output in ("probabilities", "classes", "labels", "scores"):
        assert f"outputs['{output}']" in default


@pytest.mark.slow
def test_exporting_again_gives_the_same_predictions_and_changes_no_checkpoint(trained, data_dir):
    run, checkpoints, config, _ = trained
    folder = run / "export" / "step-4"
    images = tf.constant([p.read_bytes() for p in sorted(data_dir.rglob("*.png"))[:10]])
    assert images.shape[0] == 10
    before = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"](images=images)
    result = export(run, "schedule.step=4")
    assert result.returncode == 0, result.stdout + result.stderr
    after = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"](images=images)
    np.testing.assert_array_equal(before["probabilities"].numpy(), after["probabilities"].numpy())
    assert json.loads((folder / "export.json").read_text())["formats"] == ["saved_model", "keras"]
    assert not (folder / "model.tflite").exists()  # replaced by the new export, not merged into it
    assert [p.name for p in (run / "export").iterdir()] == ["step-4"]  # no temporary folder left
    assert contents(run / "checkpoints") == checkpoints
    assert contents(run / ".hydra") == config
    latest = export(run)  # the default: the latest step
    assert latest.returncode == 0 and "exported step 6" in latest.stdout
    assert contents(run / "checkpoints") == checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("case", ["frozen_bn", "image_size_24", "keras_network", "resize_crop"])
def test_other_networks_export_with_the_testers_probabilities(case, tmp_path, data_dir):
    """Frozen batch norm (inference-mode layers), a resize from the files' 16 px to 24 px, a Keras model file,
    reader.resize=crop (the centre 12 px of the files' 16, resized to the run's 16)."""
    overrides = {"frozen_bn": ["network.lr_mult=[{pattern: '^stem/', mult: 0}]"],
                 "image_size_24": ["reader.image_size=24"],
                 "resize_crop": ["reader.resize=crop", "reader.crop_fraction=0.75"],
                 "keras_network": ["network=keras", f"network.path={tmp_path / 'theirs.keras'}"]}[case]
    if case == "keras_network":
        from test_imported import their_model

        their_model().save(tmp_path / "theirs.keras")
    run = tmp_path / "run"
    app.run(compose(["schedule=train", "schedule.steps=4", *overrides], run, data_dir))
    cfg = compose(["schedule=test", *overrides], run, data_dir)  # the run's config, with a reading schedule
    app.run(dataclasses.replace(cfg, schedule=ExportSchedule()))
    expected, paths, resized, _ = reference(cfg, 4)
    model = tf.saved_model.load(str(run / "export" / "step-4" / "saved_model"))
    got = model.signatures["serving_default"](images=tf.constant([Path(p).read_bytes() for p in paths]))
    assert np.abs(got["probabilities"].numpy() - expected).max() <= 1e-5
    import keras

    net = keras.saving.load_model(run / "export" / "step-4" / "model.keras", safe_mode=True)
    assert np.abs(net.predict(resized, verbose=0) - expected).max() <= 1e-5
    if case == "resize_crop":
        info = json.loads((run / "export" / "step-4" / "export.json").read_text())
        assert info["resize"] == {"mode": "crop", "crop_fraction": 0.75}
        pixels = np.stack([decode(tf.io.read_file(p)).numpy() for p in paths]).astype(np.float32)
        by_pixels = model.signatures["serving_pixels"](images=tf.constant(pixels))["probabilities"].numpy()
        assert np.abs(by_pixels - expected).max() <= 1e-5
        squashed = reference(compose(["schedule=test"], run, data_dir), 4)[0]  # the same checkpoint, squashed
        assert np.abs(squashed - expected).max() > 1e-3  # so the crop was applied


@pytest.mark.slow
def test_bad_input_exits_2_naming_the_path_or_key_and_exports_nothing(trained, tmp_path):
    run, checkpoints, config, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copytree(run / ".hydra", empty / ".hydra")
    shutil.copy(run / "classes.json", empty / "classes.json")
    result = export(empty)
    assert result.returncode == 2 and f"No checkpoint in {empty / 'checkpoints'}" in result.stdout + result.stderr
    assert not (empty / "export").exists()

    exported = contents(run / "export")
    result = export(run, "schedule.step=99")
    assert result.returncode == 2
    assert "schedule.step=99" in result.stdout and "available: [4, 6]" in result.stdout
    result = export(run, "schedule.formats=[saved_model,coreml]")
    assert result.returncode == 2 and "schedule.formats" in result.stderr and "coreml" in result.stderr
    before = contents(run)
    result = export(run, "schedule.formats=[tflite_int8]", "schedule.calibration_images=41")
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("schedule.calibration_images=41 is more than the training list holds (40 images): pass at most 40."
            in result.stdout)
    result = export(run, "schedule.formats=[tflite_int8]", "schedule.calibration_images=0")
    assert result.returncode == 2 and "schedule.calibration_images=0 must be greater than 0" in result.stderr
    assert contents(run) == before  # byte for byte
    assert contents(run / "export") == exported and contents(run / "checkpoints") == checkpoints
    assert contents(run / ".hydra") == config

    result = export(tmp_path / "nothing")
    assert result.returncode == 2 and "is not a run folder" in result.stderr and "nothing" in result.stderr
    assert not (tmp_path / "nothing").exists()


@pytest.mark.slow
def test_a_failed_export_leaves_no_partial_folder_and_the_previous_export_intact(tmp_path, data_dir, monkeypatch):
    """A failure part-way (here the TFLite conversion) removes the temporary folder; step-N stays as it was."""
    run = tmp_path / "run"
    app.run(compose(["schedule=train", "schedule.steps=4"], run, data_dir))
    cfg = compose(["schedule=test"], run, data_dir)
    app.run(dataclasses.replace(cfg, schedule=ExportSchedule()))
    before = contents(run / "export")

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr("worklab.serve.export.tflite", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        app.run(dataclasses.replace(cfg, schedule=ExportSchedule(formats=["saved_model", "tflite"])))
    assert contents(run / "export") == before
    assert [p.name for p in (run / "export").iterdir()] == ["step-4"]


@pytest.mark.slow
def test_the_default_step_is_the_runs_best_when_it_has_one(trained):
    """patience and hyper write best.json; export (like predict) takes that step, not the latest."""
    run = trained[0]
    (run / "best.json").write_text(json.dumps({"step": 4, "loss": 1.0, "accuracy": 0.5}))
    try:
        result = export(run, "schedule.formats=[saved_model]")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "exported step 4" in result.stdout
        assert json.loads((run / "export" / "step-4" / "export.json").read_text())["step"] == 4
    finally:
        (run / "best.json").unlink()


@pytest.mark.slow
def test_a_quantized_file_giving_wrong_classes_is_warned_about_or_refused_with_strict(tmp_path, data_dir,
                                                                                       monkeypatch):
    """The silent failure users report (a quantized model that "always predicts the same class"), simulated by a
    model_int8.tflite whose answers are shifted by one class: agreement 0, a warning, and with schedule.strict a
    refusal that leaves the run folder byte for byte; so does onnx without its packages."""
    from worklab.errors import UserError
    from worklab.serve.formats import FORMATS

    run = train_here(tmp_path / "run", data_dir, ["schedule=train", "schedule.steps=4"])  # the lock let go
    cfg = compose(["schedule=test"], run, data_dir)
    before = contents(run)
    real = FORMATS["tflite_int8"]

    def shifted(path):
        model = real.load(path)
        return dataclasses.replace(SimpleModel(model.input_size), call=lambda pixels: np.roll(model(pixels), 1, 1))

    monkeypatch.setitem(FORMATS, "tflite_int8", dataclasses.replace(real, load=shifted))
    with pytest.raises(UserError, match=r"tflite_int8 agrees with the SavedModel's top-1 on 0\.0000 of the 30 test "
                                        r"images, below schedule.min_agreement=0\.98. schedule.strict=true: nothing "
                                        r"was written"):
        app.run(dataclasses.replace(cfg, schedule=ExportSchedule(formats=["tflite", "tflite_int8"], strict=True)))
    assert contents(run) == before and not (run / "export").exists()
    monkeypatch.setattr("worklab.serve.onnx_model.PACKAGES", ("onnx", "worklab_no_such_package"))
    with pytest.raises(UserError, match=r'schedule.formats has onnx, but worklab_no_such_package not installed; '
                                        r'pip install "worklab\[onnx\]" installs them; nothing was written'):
        app.run(dataclasses.replace(cfg, schedule=ExportSchedule(formats=["saved_model", "onnx"])))
    assert contents(run) == before and not (run / "export").exists()
    app.run(dataclasses.replace(cfg, schedule=ExportSchedule(formats=["tflite", "tflite_int8"])))
    checks = json.loads((run / "export" / "step-4" / "export.json").read_text())["checks"]
    assert checks["tflite_int8"]["agreement"] == 0.0 and checks["tflite"]["agreement"] == 1.0


@dataclasses.dataclass
class SimpleModel:
    """A stand-in for a loaded export file (worklab.serve.formats.Model)."""

    input_size: tuple
    call: object = None

    def __call__(self, pixels):
        return self.call(pixels)
