"""worklab.compat: each shim over a private Keras, TensorFlow or OmegaConf API does what its caller expects.

An upgrade of Keras, TensorFlow or OmegaConf is tried here first: a case that fails names
the shim whose private API changed.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import MISSING, DictConfig, OmegaConf

from conftest import ROOT
from worklab import compat


def test_the_installed_versions_are_the_tested_ones():
    found = compat.installed_versions()
    assert set(found) == set(compat.TESTED) == {"keras", "tensorflow", "omegaconf"}
    assert compat.version_mismatches() == []


def test_another_version_is_named_in_one_warning(monkeypatch, caplog):
    found = {"keras": "3.16.0", "tensorflow": "2.21.1", "omegaconf": None}
    assert compat.version_mismatches(found) == ["keras 3.16.0 is installed, worklab is tested with keras 3.15.x"]
    monkeypatch.setattr(compat, "installed_versions", lambda: found)
    with caplog.at_level(logging.WARNING, logger="worklab.compat"):
        compat._warn_versions()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "keras 3.16.0 is installed, worklab is tested with keras 3.15.x"]


def test_importing_compat_imports_neither_tensorflow_nor_keras(tmp_path):
    script = "import sys, worklab.compat; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_snake_case_name_is_the_name_keras_saving_gives(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="c")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="d")(x)
    x = keras.layers.BatchNormalization(name="b")(x)
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="n")(x))
    model.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5", "r") as file:
        saved = sorted(f"layers/{name}" for name in file["layers"] if len(file["layers"][name].get("vars", ())))
    assert saved == sorted(f"layers/{compat.snake_case_name(type(layer).__name__)}"
                           for layer in model.layers if layer.weights)
    assert compat.snake_case_name("DepthwiseConv2D") == "depthwise_conv2d"


def test_reset_keras_names_counts_automatic_names_from_zero():
    keras.layers.Dense(1)
    compat.reset_keras_names()
    assert [keras.layers.Dense(1).name, keras.layers.Dense(1).name] == ["dense", "dense_1"]


def nested_model() -> keras.Model:
    inputs = keras.Input((4,), name="x")
    inner = keras.Model(inputs, keras.layers.BatchNormalization(name="b")(keras.layers.Dense(3, name="a")(inputs)),
                        name="inner")
    outer_inputs = keras.Input((4,), name="y")
    return keras.Model(outer_inputs, keras.layers.Dense(2, name="c")(inner(outer_inputs)), name="outer")


def test_flatten_layers_lists_nested_layers_in_keras_order_without_the_model():
    assert [layer.name for layer in compat.flatten_layers(nested_model())] == ["y", "inner", "b", "a", "x", "c"]


def test_run_through_graph_reruns_every_layer_through_the_intercept_and_puts_call_back():
    model = nested_model()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    original = keras.layers.Layer.__call__
    seen = []

    def intercept(call, layer, *args, **kwargs):
        seen.append(layer.name)
        return call(layer, *args, **kwargs)

    outputs = compat.run_through_graph(model, x, intercept)
    assert np.allclose(outputs, model(x))
    assert seen[:2] == ["inner", "a"] and {"b", "c"} <= set(seen)  # the nested model's layers too
    assert keras.layers.Layer.__call__ is original

    def failing(call, layer, *args, **kwargs):
        raise ValueError("stop")

    with pytest.raises(ValueError):
        compat.run_through_graph(model, x, failing)
    assert keras.layers.Layer.__call__ is original


def test_variable_outside_strategy_holds_a_string_and_is_not_mirrored():
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = tf.Variable(0.0)
        state = compat.variable_outside_strategy("{}", tf.string, "state")
    assert isinstance(mirrored, tf.distribute.DistributedValues)  # the strategy intercepts tf.Variable
    assert not isinstance(state, tf.distribute.DistributedValues)
    assert state.numpy() == b"{}" and not state.trainable and state.name.startswith("state")


class _Extractor(tf.Module):
    def __init__(self):
        self.w = tf.Variable([[1.0, 2.0]], name="w")
        self.b = tf.Variable([0.5, 0.0], trainable=False, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def serve(self, x):
        return tf.matmul(x, self.w) + self.b


ADOPTED = []


@compat.tfsm_weight_hook("adopt")
class _Adopting(keras.layers.TFSMLayer):
    def adopt(self, weight):
        ADOPTED.append(weight)
        compat.track_variable(self, keras.Variable(initializer=weight, shape=weight.shape, dtype=weight.dtype,
                                                   trainable=weight.trainable, name=f"mine_{len(ADOPTED)}"))


def test_tfsm_shims_hand_each_saved_variable_to_the_hook_and_track_what_it_makes(tmp_path):
    tf.saved_model.save(_Extractor(), str(tmp_path / "sm"))
    ADOPTED.clear()
    layer = _Adopting(str(tmp_path / "sm"))
    assert sorted(v.name for v in ADOPTED) == ["b:0", "w:0"]
    assert sorted(v.name for v in layer.weights) == ["mine_1", "mine_2"]  # ours, not TFSMLayer's own copies
    assert [v.trainable for v in layer.trainable_weights] == [True] and len(layer.non_trainable_weights) == 1
    assert hasattr(compat.tfsm_loaded_object(layer), "serve")
    assert np.allclose(layer(np.array([[2.0]], "float32")), [[2.5, 4.0]])


def test_batch_norm_settings_make_the_layer_follow_the_momentum_variable_and_synchronize(monkeypatch):
    from keras.src.layers.normalization import batch_normalization

    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    momentum = tf.Variable(0.0)
    compat.batch_norm_settings(layer, momentum, synchronized=False)
    x = np.arange(12, dtype="float32").reshape(4, 3)
    layer(x, training=True)
    assert np.allclose(layer.moving_mean, x.mean(axis=0))  # momentum 0: the batch's statistics
    momentum.assign(1.0)
    layer(x + 5, training=True)
    assert np.allclose(layer.moving_mean, x.mean(axis=0))  # momentum 1: unchanged, read at the call

    moments, seen = batch_normalization.ops.moments, []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("synchronized"))
        return moments(*args, **kwargs)

    monkeypatch.setattr(batch_normalization.ops, "moments", spy)
    compat.batch_norm_settings(layer, momentum, synchronized=True)
    layer(x, training=True)
    assert seen == [True]


@dataclass
class _Inner:
    x: int = 1


@dataclass
class _Outer:
    given: _Inner = field(default_factory=_Inner)
    unset: Optional[_Inner] = None
    missing: _Inner = MISSING
    later: str = "${nowhere}"


def test_omegaconf_child_reads_unresolved_and_missing_nodes_and_is_set_tells_them_apart():
    node = OmegaConf.structured(_Outer)
    children = {key: compat.omegaconf_child(node, key) for key in node}
    assert all(isinstance(children[k], DictConfig) for k in ("given", "unset", "missing"))
    assert {k: compat.omegaconf_is_set(children[k]) for k in ("given", "unset", "missing")} == {
        "given": True, "unset": False, "missing": False}
    assert compat.omegaconf_child(children["given"], "x") == 1
    with pytest.raises(Exception):
        node.later  # resolving fails; the child node is read all the same
    assert OmegaConf.is_interpolation(node, "later") and children["later"] is not None


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    """A SavedModel's function with a Python `training` flag, traced for both values, and a signature."""
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([], tf.bool)])
        def call(self, x, training):
            return x

    path = str(tmp_path_factory.mktemp("restored") / "model")
    tf.saved_model.save(Module(), path)
    return tf.saved_model.load(path)


def test_restored_functions_tell_their_traces_and_argument_names_and_a_signature_is_one_trace(restored):
    traces = compat.restored_traces(restored.call)
    assert len(traces) == 1 and traces[0].structured_input_signature[0][0].shape.as_list() == [None, 2]
    assert compat.restored_argument_names(restored.call) == ["x", "training"]
    signature = restored.signatures["serving_default"]
    assert compat.restored_traces(signature) == [signature] and compat.restored_argument_names(signature) == []


@pytest.mark.parametrize("shim", ["snake_case_name", "flatten_layers", "run_through_graph",
                                  "variable_outside_strategy", "tfsm_weight_hook", "batch_norm_settings",
                                  "omegaconf_child", "omegaconf_is_set", "restored_traces",
                                  "restored_argument_names"])
def test_a_missing_private_name_raises_a_runtime_error_naming_the_shim(monkeypatch, shim, restored):
    from keras.src.ops.function import Function
    from keras.src.utils import naming
    from omegaconf.base import Container, Node
    from tensorflow.python.ops import resource_variable_ops

    model, layer, node = nested_model(), keras.layers.BatchNormalization(), OmegaConf.create({"a": 1})
    cases = {
        "snake_case_name": (naming, "to_snake_case", lambda: compat.snake_case_name("Conv2D"), "keras"),
        "flatten_layers": (keras.layers.Layer, "_flatten_layers", lambda: compat.flatten_layers(model), "keras"),
        "run_through_graph": (Function, "_run_through_graph",
                              lambda: compat.run_through_graph(model, np.zeros((1, 4)), None), "keras"),
        "variable_outside_strategy": (resource_variable_ops, "ResourceVariable",
                                      lambda: compat.variable_outside_strategy("", tf.string, "s"), "tensorflow"),
        "tfsm_weight_hook": (keras.layers.TFSMLayer, "_add_existing_weight",
                             lambda: compat.tfsm_weight_hook("adopt"), "keras"),
        "batch_norm_settings": (layer, "synchronized", lambda: compat.batch_norm_settings(layer, 0.9, False),
                                "keras"),
        "omegaconf_child": ((DictConfig, Container), "_get_node", lambda: compat.omegaconf_child(node, "a"),
                            "omegaconf"),
        "omegaconf_is_set": (Node, "_is_none", lambda: compat.omegaconf_is_set(node), "omegaconf"),
        "restored_traces": (restored.call, "concrete_functions", lambda: compat.restored_traces(restored.call),
                            "tensorflow"),
        "restored_argument_names": (type(restored.call).__mro__[1], "function_spec",
                                    lambda: compat.restored_argument_names(restored.call), "tensorflow"),
    }
    owners, name, call, package = cases[shim]
    for owner in owners if isinstance(owners, tuple) else (owners,):  # the class and the bases defining it
        monkeypatch.delattr(owner, name)
    with pytest.raises(RuntimeError, match=rf"^worklab\.compat\.{shim}: \S*{name} is missing in {package} "
                                           rf"{compat.installed_versions()[package]}; worklab is tested with "
                                           rf"{package} {compat.TESTED[package]}\.x"):
        call()
