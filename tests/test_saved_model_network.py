"""network=saved_model: a SavedModel folder as the trainable body of a network, built through networks.build."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from worklab.command import check_network_files
from worklab.config.network import NetworkConfig
from worklab.config.reader import ReaderConfig
from worklab.config.root import Config
from worklab.config.schedules import TrainSchedule
from worklab.errors import UserError
from worklab.model import networks
from worklab.model.saved_model import check

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
CLASSES = 3


def config(path, size: int = SIZE, **network) -> Config:
    return Config(reader=ReaderConfig(image_size=size),
                  network=NetworkConfig(kind="saved_model", path=str(path), **network), schedule=TrainSchedule())


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    """0-255 RGB images, as the reader gives them."""
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


class HubStyle(tf.Module):
    """A TF Hub style reusable SavedModel: __call__(x, training), two variables saved under one name."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([3, 5], seed=[1, 2]), name="w")
        self.b = tf.Variable(tf.zeros([5]), name="w")
        self.mean = tf.Variable(tf.zeros([5]), trainable=False, name="mean")

    @tf.function
    def __call__(self, x, training=False):
        y = tf.reduce_mean(tf.einsum("nhwc,cd->nhwd", x, self.w), axis=[1, 2]) + self.b
        if training:
            self.mean.assign(0.5 * self.mean + 0.5 * tf.reduce_mean(y, axis=0))
        return y - self.mean


class NotFeatures(tf.Module):
    """Endpoints whose outputs are not one feature vector or map."""

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3])])
    def two(self, x):
        return {"mean": tf.reduce_mean(x, axis=[1, 2]), "max": tf.reduce_max(x, axis=[1, 2])}

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3])])
    def scalar(self, x):
        return tf.reduce_mean(x)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The SavedModels the tests build on, and the Keras models exported to them."""
    root = tmp_path_factory.mktemp("saved_models")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, name="conv")(x)
    vector = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="vector")
    vector.get_layer("stem").trainable = False  # listed as not trainable in the SavedModel
    vector.export(str(root / "vector"), verbose=False)
    feature_map = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(6, 3, strides=2, name="conv")])
    feature_map.export(str(root / "map"), verbose=False)
    hub = HubStyle()
    spec = tf.TensorSpec([None, None, None, 3])
    for training in (False, True):
        hub.__call__.get_concrete_function(spec, training=training)
    tf.saved_model.save(hub, str(root / "hub"))
    tf.saved_model.save(NotFeatures(), str(root / "not_features"))
    (root / "not_a_saved_model").mkdir()
    (root / "not_a_saved_model" / "model.keras").write_text("")
    return {"root": root, "vector": vector, "map": feature_map}


def train(model: keras.Model, steps: int = 3) -> None:
    """A few plain SGD steps; every trainable variable must get a gradient."""
    optimizer = keras.optimizers.SGD(0.5)
    labels = np.arange(4) % CLASSES
    for step in range(steps):
        with tf.GradientTape() as tape:
            logits = model(images(seed=step), training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in gradients), [v.path for v, g in zip(model.trainable_variables, gradients)
                                                        if g is None]
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))


def values(model: keras.Model) -> dict:
    return {v.path: np.array(v.numpy()) for v in model.variables}


def test_the_network_is_the_exported_model_and_training_moves_its_weights(saved):
    folder = saved["root"] / "vector"
    model = networks.build(config(folder), CLASSES)
    backbone = model.get_layer(networks.BACKBONE)
    paths = [v.path for v in model.variables]
    assert len(set(paths)) == len(paths)
    assert sorted(paths) == sorted([f"backbone/{v.path}" for v in saved["vector"].variables] + ["head/kernel",
                                                                                              "head/bias"])
    trainable = {v.path for v in model.trainable_variables}
    assert trainable == {"backbone/bn/gamma", "backbone/bn/beta", "backbone/conv/kernel", "backbone/conv/bias",
                         "head/kernel", "head/bias"}  # stem frozen before export, moving statistics

    x = images()
    unit = x / 255.0  # network.preprocessing defaults to unit for a SavedModel
    expected = saved["vector"](unit).numpy()
    np.testing.assert_allclose(backbone(unit).numpy(), expected, rtol=1e-5, atol=1e-6)
    reloaded = tf.saved_model.load(str(folder))  # held: its functions need its variables alive
    np.testing.assert_allclose(reloaded.serve(unit).numpy(), expected, rtol=1e-5, atol=1e-6)
    head = model.get_layer("head")
    np.testing.assert_allclose(model(x).numpy(), head(expected).numpy(), rtol=1e-5, atol=1e-5)

    before = values(model)
    train(model)
    after = values(model)
    moved = {p for p in paths if not np.array_equal(before[p], after[p])}
    assert moved == trainable
    assert not np.allclose(backbone(unit).numpy(), expected, atol=1e-4)  # the SavedModel's function sees them


def test_checkpointed_weights_come_back_in_a_fresh_process(saved, tmp_path):
    folder = saved["root"] / "vector"
    model = networks.build(config(folder), CLASSES)
    train(model)
    prefix = tf.train.Checkpoint(model={v.path: v for v in model.variables}).write(str(tmp_path / "ckpt"))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        from worklab.config.network import NetworkConfig
        from worklab.config.reader import ReaderConfig
        from worklab.config.root import Config
        from worklab.config.schedules import TrainSchedule
        from worklab.model import networks

        def build(path):
            cfg = Config(reader=ReaderConfig(image_size={SIZE}), schedule=TrainSchedule(),
                         network=NetworkConfig(kind="saved_model", path=path))
            return networks.build(cfg, {CLASSES})

        model = build({str(folder)!r})
        tf.train.Checkpoint(model={{v.path: v for v in model.variables}}).read({prefix!r}).assert_consumed()
        np.savez({str(tmp_path / "restored.npz")!r}, **{{v.path: v.numpy() for v in model.variables}})
        hub = build({str(saved["root"] / "hub")!r})
        json.dump([v.path for v in hub.variables], sys.stdout)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    restored = np.load(tmp_path / "restored.npz")
    trained = values(model)
    assert sorted(restored.files) == sorted(trained)
    for path, value in trained.items():
        np.testing.assert_array_equal(restored[path], value, err_msg=path)
    hub = networks.build(config(saved["root"] / "hub"), CLASSES)
    assert json.loads(done.stdout) == [v.path for v in hub.variables]


def test_a_hub_style_saved_model_trains_through_its_training_call(saved):
    model = networks.build(config(saved["root"] / "hub"), CLASSES)
    assert [v.path for v in model.variables] == ["backbone/w", "backbone/w_1", "backbone/mean", "head/kernel",
                                                 "head/bias"]  # two variables saved as `w`
    assert [v.path for v in model.non_trainable_variables] == ["backbone/mean"]
    mean = model.get_layer(networks.BACKBONE).non_trainable_variables[0]
    model(images(), training=False)
    assert not np.any(mean.numpy())
    before = values(model)
    train(model, steps=1)  # __call__(x, training=True): the statistic moves, and the weights train
    after = values(model)
    assert all(not np.array_equal(before[p], after[p]) for p in ("backbone/w", "backbone/w_1", "backbone/mean"))


def test_a_feature_map_is_pooled_before_the_head(saved):
    model = networks.build(config(saved["root"] / "map"), CLASSES)
    assert tuple(model.get_layer(networks.BACKBONE).output.shape) == (None, 15, 15, 6)
    assert tuple(model.get_layer("head").input.shape) == (None, 6)
    x = images()
    pooled = saved["map"](x / 255.0).numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(model(x).numpy(), model.get_layer("head")(pooled).numpy(), rtol=1e-5, atol=1e-5)


def test_a_signature_with_one_output_gives_that_tensor(saved):
    folder = saved["root"] / "vector"
    model = networks.build(config(folder, endpoint="serving_default"), CLASSES)
    unit = images() / 255.0
    np.testing.assert_allclose(model.get_layer(networks.BACKBONE)(unit).numpy(), saved["vector"](unit).numpy(),
                               rtol=1e-5, atol=1e-6)


FOLDERS = [  # refused before Hydra too
    ("missing", {}, SIZE, r"^network\.path=\S*missing does not exist: give a SavedModel folder"),
    ("not_a_saved_model", {}, SIZE,
     r"^network\.path=\S*not_a_saved_model is not a SavedModel folder: it has no saved_model\.pb\. Give the folder"),
    ("vector/saved_model.pb", {}, SIZE, r"^network\.path=\S*vector/saved_model\.pb is a file, not a SavedModel "
                                        r"folder: give the folder that holds it, network\.path=\S*vector\.$"),
]
FUNCTIONS = [  # refused when the network is built, in the job
    ("vector", {"endpoint": "predict"}, SIZE,
     r"^network\.endpoint=predict is not a function of the SavedModel .*its functions: serve, serving_default\."),
    ("vector", {"training_endpoint": "train"}, SIZE,
     r"^network\.training_endpoint=train is not a function .*its functions: serve, serving_default\."),
    ("not_features", {}, SIZE,
     r"has none of serve, serving_default, __call__; its functions: scalar, two\. Set network\.endpoint"),
    ("not_features", {"endpoint": "two"}, SIZE,
     r"^network\.endpoint=two .* outputs a dict of 2 tensors: max \[None, 3\], mean \[None, 3\]"),
    ("not_features", {"endpoint": "scalar"}, SIZE, r"^network\.endpoint=scalar .* outputs a scalar"),
    ("vector", {}, 48,
     r"^reader\.image_size=48, but network\.endpoint=serve .* takes 32x32 images: set reader\.image_size=32\."),
]
BAD = FOLDERS + FUNCTIONS


@pytest.mark.parametrize("folder, network, size, message", BAD, ids=[f"{b[0]}-{b[1]}-{b[2]}" for b in BAD])
def test_bad_saved_models_are_refused_naming_the_key(saved, folder, network, size, message):
    cfg = config(saved["root"] / folder, size, **network)
    with pytest.raises(UserError, match=message):
        check(cfg.network, size)  # reads no weights: the build asks it before reading them
    with pytest.raises(UserError, match=message):
        networks.build(cfg, CLASSES)


def test_before_hydra_only_the_folder_is_checked(saved):
    for folder, network, size, message in FOLDERS:
        with pytest.raises(UserError, match=message):
            check_network_files(config(saved["root"] / folder, size, **network).network)
    for folder, network, size, _ in FUNCTIONS:  # their functions need TensorFlow: left to the build
        check_network_files(config(saved["root"] / folder, size, **network).network)


def test_check_reads_no_weights_and_unreadable_weights_are_named(saved, tmp_path):
    folder = tmp_path / "no_variables"
    shutil.copytree(saved["root"] / "vector", folder, ignore=shutil.ignore_patterns("variables.*"))
    assert check(config(folder).network, SIZE).call == "serve"
    with pytest.raises(UserError, match=r"^network\.path=\S+no_variables: the SavedModel's variables cannot be read"):
        networks.build(config(folder), CLASSES)
