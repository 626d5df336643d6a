"""The network's first layer: each mode's numbers, which mode a config gets, and runs from before it existed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import STAGES, TINY, compose, run_py
from worklab.command import resume_argv
from worklab.config.preprocessing_policy import input_preprocessing
from worklab.errors import UserError
from worklab.model import preprocessing
from worklab.model.preprocessing import Preprocess, settings
from worklab.run.run_config import saved_config

PIXELS = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)


def layer(mode: str, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> Preprocess:
    return Preprocess(mode, **settings(mode, mean, std))


@pytest.mark.parametrize("mode, expected", [
    ("mean_std", lambda x: (x / 255.0 - np.float32([0.5, 0.25, 0.0])) / np.float32([0.5, 2.0, 0.25])),
    ("tf", lambda x: x / 127.5 - 1.0),
    ("unit", lambda x: x / 255.0),
    ("raw", lambda x: x),
    ("caffe", lambda x: x[..., ::-1] - np.float32([103.939, 116.779, 123.68])),
    ("vgg", lambda x: x - np.float32([123.68, 116.78, 103.94])),
    ("ry", lambda x: x[..., ::-1] - np.float32([103.062623801, 115.902882574, 123.151630838])),
])
def test_each_mode_computes_its_formula(mode, expected):
    out = layer(mode, mean=(0.5, 0.25, 0.0), std=(0.5, 2.0, 0.25))(PIXELS).numpy()
    np.testing.assert_allclose(out, expected(PIXELS), rtol=1e-6, atol=1e-5)


def test_mean_std_gives_the_bits_the_reader_gave_before_it_moved_into_the_network():
    """Old runs test the same: (clip(x, 0, 255) / 255 - mean) / std == the old (clip(x / 255, 0, 1) - mean) / std."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    old = (tf.clip_by_value(PIXELS / 255.0, 0.0, 1.0) - mean) / std
    np.testing.assert_array_equal(layer("mean_std", mean, std)(PIXELS).numpy(), old.numpy())


def test_the_layer_stays_float32_under_a_mixed_policy():
    import keras
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = layer("torch")(PIXELS)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == "float32"


def test_which_mode_a_network_gets(tmp_path):
    def mode(*overrides):
        return input_preprocessing(compose(list(overrides), tmp_path / "run", tmp_path))

    assert mode() == "mean_std"
    assert mode("restore.preprocessing=caffe") == "caffe"  # what a shipped mapping says of its checkpoint
    assert mode("restore.preprocessing=caffe", "network.preprocessing=tf") == "tf"  # the user's word wins
    assert mode("network=applications", "network.arch=DenseNet121", "reader.image_size=32") == "torch"
    assert mode("network=applications", "network.arch=MobileNetV3Small", "reader.image_size=32") == "raw"


def test_shipped_mappings_name_their_checkpoints_preprocessing(tmp_path):
    for mapping, expected in (("ry_resnet50", "ry"), ("slim_resnet_v1_50", "vgg"), ("keras_resnet50", "caffe")):
        layout = ["network.layout=slim"] if mapping.startswith("slim") else []
        bias = ["network.conv_bias=true"] if mapping.startswith("keras") else []
        cfg = compose([f"restore={mapping}", "restore.path=x", "network.depth=50", *layout, *bias],
                      tmp_path / "run", tmp_path)
        assert input_preprocessing(cfg) == expected
        assert preprocessing.for_config(cfg).mode == expected


def test_reader_mean_and_std_are_refused_where_they_do_nothing(tmp_path):
    with pytest.raises(UserError, match=r"reader.mean=\[0.5, 0.5, 0.5\] has no effect with network.preprocessing=tf"):
        compose(["network.preprocessing=tf", "reader.mean=[0.5,0.5,0.5]"], tmp_path / "run", tmp_path)


def strip_preprocessing(run: Path) -> None:
    """Make a run folder look like one written before network.preprocessing existed."""
    path = run / ".hydra" / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["network"]["preprocessing"]
    del saved["restore"]["preprocessing"]
    path.write_text(yaml.safe_dump(saved))
    overrides = run / ".hydra" / "overrides.yaml"
    kept = [o for o in yaml.safe_load(overrides.read_text()) if not o.startswith("network.preprocessing=")]
    overrides.write_text(yaml.safe_dump(kept))


def test_a_run_from_before_keeps_mean_std_whatever_its_mapping_now_says(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- restore.preprocessing=caffe\n")
    saved = {"network": {"kind": "resnet", "depth": 10}, "restore": {"preprocessing": "caffe"}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    assert saved_config(run).network.preprocessing == "mean_std"
    argv = resume_argv(["run.py", f"resume={run}"])
    assert "network.preprocessing=mean_std" in argv
    assert "network.preprocessing=tf" in resume_argv(["run.py", f"resume={run}", "network.preprocessing=tf"])
    assert "network.preprocessing=mean_std" not in resume_argv(["run.py", f"resume={run}",
                                                                "network.preprocessing=tf"])


@pytest.mark.slow
def test_a_run_folder_from_before_resumes_and_tests_the_same(tmp_path, data_dir):
    """A run from before network.preprocessing: it started from restore=ry_resnet50, whose mapping now says ry,
    but like every run then it normalised its inputs with mean_std. Tested and resumed, it keeps mean_std: with
    ry the test results would differ."""
    from test_mappings import ry_scheme, trainable_values, write_tf1

    shapes = ry_scheme(50, 0.125)
    write_tf1(shapes, tmp_path / "ResNet-L50.ckpt", trainable_values(shapes))
    run = tmp_path / "run"
    result = run_py([*TINY, STAGES, "network.depth=50", "restore=ry_resnet50",
                     f"restore.path={tmp_path / 'ResNet-L50.ckpt'}", "network.preprocessing=mean_std",
                     f"data_dir={data_dir}", f"hydra.run.dir={run}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input preprocessing: mean_std" in result.stdout
    before = json.loads((run / "evaluations" / "step-000006.json").read_text())
    strip_preprocessing(run)
    assert input_preprocessing(compose(["network.depth=50", "restore=ry_resnet50", "restore.path=x"], run,
                                       data_dir)) == "ry"  # what the mapping says today

    tested = run_py(["schedule=test", f"resume={run}", f"hydra.run.dir={tmp_path / 'test'}"], tmp_path)
    assert tested.returncode == 0, tested.stderr
    assert "input preprocessing: mean_std" in tested.stdout
    after = json.loads((tmp_path / "test" / "evaluations" / "step-000006.json").read_text())
    for key in ("loss", "accuracy", "top_k_accuracy"):
        assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-6), key

    more = "schedule.stages=[{lr: 0.05, steps: 4}, {lr: 0.005, steps: 2}, {lr: 0.001, steps: 2}]"
    resumed = run_py([more, f"resume={run}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "network.preprocessing: " not in resumed.stderr  # not refused as a changed key
    assert "input preprocessing: mean_std" in resumed.stdout
    assert (run / "evaluations" / "step-000008.json").is_file()


def test_a_run_from_before_reader_resample_keeps_the_antialias_filter(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"reader": {"image_size": 32}}))
    assert saved_config(run).reader.resample == "antialias"
    assert "reader.resample=antialias" in resume_argv(["run.py", f"resume={run}"])
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"reader": {"image_size": 32, "resample": "area"}}))
    assert saved_config(run).reader.resample == "area"
