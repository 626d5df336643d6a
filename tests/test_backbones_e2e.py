"""Pretrained backbones through run.py: a Keras Application from a weight file and a SavedModel feature
extractor train, resume without their source files, export and predict; bad backbone input stops with
exit 2 before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import TINY, run_py


SMALL = [o for o in TINY if not o.startswith(("network.", "reader.image_size"))] + ["reader.image_size=32"]
MOBILENET = ["network=applications", "network.arch=MobileNetV2", "network.arch_args.alpha=0.35"]


def train(cwd: Path, run: Path, data_dir: Path, *network: str, steps: int = 4) -> None:
    result = run_py([*SMALL, *network, "schedule=train", f"schedule.steps={steps}", f"data_dir={data_dir}",
                     f"hydra.run.dir={run}"], cwd)
    assert result.returncode == 0, result.stdout + result.stderr


def weights_file(folder: Path) -> Path:
    """A MobileNetV2 (alpha 0.35) weight file with its 1000-class top, as Keras' own save_weights writes it."""
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3))
    path = folder / "mobilenet_v2_0.35.weights.h5"
    model.save_weights(path)
    return path


def feature_extractor(folder: Path) -> Path:
    """A small CNN feature extractor exported as a SavedModel with model.export, taking [0, 1] images."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    path = folder / "extractor"
    keras.Model(inputs, features).export(str(path), verbose=False)
    return path


def steps_done(run: Path) -> int:
    return json.loads((run / "summary.json").read_text())["step"]


@pytest.mark.slow
def test_an_application_from_a_weight_file_trains_resumes_without_it_and_exports(tmp_path, data_dir):
    weights = weights_file(tmp_path)
    inspected = run_py([*[o for o in SMALL if not o.startswith("schedule.")], "schedule=inspect", *MOBILENET,
                        f"network.weights={weights}", "network.freeze=block_2", f"data_dir={data_dir}",
                        f"hydra.run.dir={tmp_path / 'inspected'}"], tmp_path)
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    rows = {line.split()[0]: line for line in inspected.stdout.splitlines() if line.startswith("  ")}
    assert "frozen (network.freeze)" in rows["block_2_project_BN"] and "statistics frozen" in rows["bn_Conv1"]
    assert "lr x1 (no rule)" in rows["block_3_expand"] and "predictions" in inspected.stdout  # the top, skipped
    run = tmp_path / "app"
    train(tmp_path, run, data_dir, *MOBILENET, f"network.weights={weights}")
    log = (run / "run.log").read_text()
    assert "input preprocessing: tf" in log
    assert "network.weights:" in log and "top" in log  # loaded, the 1000-class top skipped and said so

    weights.unlink()  # a resumed run reads its own checkpoint, never the weight file
    resumed = run_py(["schedule.steps=6", f"resume={run}"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert steps_done(run) == 6

    exported = run_py(["schedule=export", f"resume={run}", "schedule.formats=[saved_model,keras]"], tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    info = json.loads((run / "export" / "step-6" / "export.json").read_text())
    assert info["preprocessing"]["mode"] == "tf"
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model = keras.saving.load_model(run / "export" / "step-6" / "model.keras", safe_mode=True)
    import tensorflow as tf
    served = tf.saved_model.load(str(run / "export" / "step-6" / "saved_model"))
    np.testing.assert_allclose(model.predict(pixels, verbose=0),
                               served.signatures["serving_resized"](images=tf.constant(pixels))["probabilities"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_saved_model_extractor_trains_resumes_and_exports_as_a_saved_model(tmp_path, data_dir):
    extractor = feature_extractor(tmp_path)
    run = tmp_path / "sm"
    train(tmp_path, run, data_dir, "network=saved_model", f"network.path={extractor}")
    assert "input preprocessing: unit" in (run / "run.log").read_text()
    resumed = run_py(["schedule.steps=6", f"resume={run}"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    refused = run_py(["schedule=export", f"resume={run}"], tmp_path)  # the default formats include keras
    assert refused.returncode == 2 and "schedule.formats=[saved_model]" in refused.stderr
    assert "with any of tflite, tflite_int8, onnx if wanted" in refused.stderr
    assert not (run / "export").exists()
    exported = run_py(["schedule=export", f"resume={run}", "schedule.formats=[saved_model,tflite_int8,onnx]"],
                      tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (run / "export" / "step-6" / "saved_model" / "saved_model.pb").is_file()
    checks = json.loads((run / "export" / "step-6" / "export.json").read_text())["checks"]
    assert checks["onnx"]["agreement"] == 1.0 and checks["onnx"]["max_abs_diff"] <= 1e-5  # the formats it names
    assert checks["tflite_int8"]["count"] == 30 and checks["tflite_int8"]["max_abs_diff"] <= 0.1


def folder_files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("overrides, message", [
    ([*MOBILENET[:2], "network.arch=MobileNetV9"], "network.arch=MobileNetV9 is not a Keras Applications"),
    ([*MOBILENET, "network.weights=/nowhere/w.h5"], "network.weights=/nowhere/w.h5 does not exist"),
    ([*MOBILENET, "network.weights=README.md"], "is not an HDF5 weight file"),
    (["network=applications", "network.arch=InceptionV3", "reader.image_size=64"],
     "reader.image_size=64 is below InceptionV3's smallest input, 75x75"),
    ([*MOBILENET, "network.arch_args.depth_multiplier=2"], "depth_multiplier is not an argument of MobileNetV2"),
    (["network=saved_model", "network.path=conf"], "network.path=conf"),
])
def test_bad_backbone_input_stops_before_anything_is_written(tmp_path, data_dir, overrides, message):
    (tmp_path / "README.md").write_text("not weights")
    (tmp_path / "conf").mkdir()
    before = folder_files(tmp_path)
    result = run_py([*SMALL, *overrides, f"data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert folder_files(tmp_path) == before


@pytest.mark.slow
def test_freeze_naming_no_layer_is_refused_with_real_names(tmp_path, data_dir):
    result = run_py([*SMALL, *MOBILENET, "network.freeze=stage_9", f"data_dir={data_dir}",
                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "network.freeze=stage_9 names no layer" in said and "Conv1" in said
