"""network=keras: a Keras model file of somebody else's, retrained with a fresh head."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import compose
from worklab import app
from worklab.errors import UserError


def their_model(size: int = 16) -> keras.Model:
    """A small model with its own layer names and a 3-class head, as a user might be handed."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="norm1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="old_head")(x), name="theirs")


@pytest.fixture
def h5_model(tmp_path):
    model = their_model()
    model.save(tmp_path / "their_model.h5")
    return tmp_path / "their_model.h5", {v.path: v.numpy() for v in model.variables}


def run(tmp_path, data_dir, path, *overrides):
    return app.run(compose(["network=keras", f"network.path={path}", "schedule=train", "schedule.steps=3",
                            *overrides], tmp_path / "run", data_dir))


def test_retrained_with_a_fresh_head_and_frozen_layers_unchanged(tmp_path, data_dir, h5_model):
    path, original = h5_model
    run(tmp_path, data_dir, path, "network.lr_mult=[{pattern: '^(conv1|norm1)/', mult: 0}]")
    stored = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
    value = lambda name: stored.get_tensor("model/" + name.replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE")
    for name in ("conv1/kernel", "conv1/bias", "norm1/gamma", "norm1/moving_mean", "norm1/moving_variance"):
        np.testing.assert_array_equal(value(name), original[name], err_msg=name)  # frozen, batch norm included
    assert not np.array_equal(value("conv2/kernel"), original["conv2/kernel"])
    assert value("head/kernel").shape == (6, 10)  # the demo set's 10 classes
    assert "old_head/kernel" not in {k.split("/.ATTR")[0] for k in stored.get_variable_to_shape_map()}


def test_a_model_file_with_a_lambda_layer_is_refused(tmp_path, data_dir):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="scale")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match=r"lambda.keras has a layer that would run code.*safe mode"):
        run(tmp_path, data_dir, tmp_path / "lambda.keras")


def test_a_legacy_h5_model_file_with_a_lambda_layer_is_refused(tmp_path, data_dir):
    """The Keras 2 full-model .h5 format stores a Lambda's Python bytecode; safe mode must refuse it too."""
    import h5py

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="scale")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "lambda.h5")  # the legacy HDF5 format
    with h5py.File(tmp_path / "lambda.h5", "r") as h5:
        assert '"class_name": "__lambda__"' in h5.attrs["model_config"]  # the bytecode is in the file
    with pytest.raises(UserError, match=r"lambda.h5 has a layer that would run code.*safe mode"):
        run(tmp_path, data_dir, tmp_path / "lambda.h5")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_image_size_must_fit_the_model(tmp_path, data_dir, h5_model):
    with pytest.raises(UserError, match=r"reader.image_size=24, but the model .* takes 16x16 images"):
        run(tmp_path, data_dir, h5_model[0], "reader.image_size=24")


def test_cut_names_a_layer_of_the_model(tmp_path, data_dir, h5_model):
    with pytest.raises(UserError, match=r"network.cut=conv9 is not a layer .*conv1, norm1, conv2, pool, old_head"):
        run(tmp_path, data_dir, h5_model[0], "network.cut=conv9")
    assert run(tmp_path, data_dir, h5_model[0], "network.cut=norm1")["step"] == 3  # pooled, then the head


def test_a_file_that_is_not_a_model(tmp_path, data_dir):
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(UserError, match=r"notes.h5"):
        run(tmp_path, data_dir, tmp_path / "notes.h5")
