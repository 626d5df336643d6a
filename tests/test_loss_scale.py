"""float16 with dynamic loss scaling: an overflow is skipped for every variable and halves the scale,
good steps double it, the scale is checkpointed, and a tiny float16 network learns."""
from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, run_py
from worklab.config.network import LrRule, NetworkConfig
from worklab.config.training import OptimizerConfig
from worklab.model import batchnorm
from worklab.model.resnet import build_resnet
from worklab.model.rules import lr_multipliers
from worklab.train.loss_scale import LossScale
from worklab.train.trainer import OptimizerGroups, Trainer

SIZE, CLASSES, BATCH = 16, 3, 12


@contextlib.contextmanager
def float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def separable() -> tf.data.Dataset:
    """Each class a constant image colour with a little noise: easy, so a few steps must learn it."""
    rng = np.random.default_rng(0)
    labels = np.arange(BATCH, dtype="int32") % CLASSES
    images = (np.eye(3)[labels][:, None, None, :] * 2.0 - 1.0
              + rng.normal(scale=0.1, size=(BATCH, SIZE, SIZE, 3))).astype("float32")
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def float16_trainer(scale: LossScale):
    """A ResNet-10 in mixed_float16 with two learning-rate groups (the head at 10x), Adam."""
    tf.keras.utils.set_random_seed(1)
    rules = [LrRule(pattern="^head/", mult=10.0)]
    cfg = NetworkConfig(depth=10, width=0.125, lr_mult=rules)
    with float16():
        model = build_resnet(cfg, CLASSES, SIZE)
    momentum = batchnorm.Momentum(cfg)
    batchnorm.prepare(model, rules, momentum)
    lr = tf.Variable(0.01)
    step, examples = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    groups = OptimizerGroups(OptimizerConfig(name="adam", lr=0.01), model, lr_multipliers(rules, [
        v.path for v in model.variables]), lr)
    trainer = Trainer(model, groups, separable(), step, examples, lr, 0.0, tf.distribute.get_strategy(),
                      bn_momentum=momentum, loss_scale=scale)
    return trainer, model, groups


def test_the_scale_halves_on_a_skipped_step_doubles_after_growth_steps_and_stays_at_least_one():
    scale = LossScale(initial=4.0, growth_steps=3)
    for applied, expected in [(False, 2.0), (False, 1.0), (False, 1.0), (True, 1.0), (True, 1.0), (True, 2.0),
                              (True, 2.0), (False, 1.0), (True, 1.0)]:
        scale.update(tf.constant(applied))
        assert scale.scale.numpy() == expected
    assert scale.good_steps.numpy() == 1


def test_a_planted_overflow_is_skipped_for_every_variable_and_halves_the_scale():
    # 2**40 times the loss is finite in float32 but overflows float16 in the backward pass.
    scale = LossScale(initial=2.0 ** 40)
    trainer, model, groups = float16_trainer(scale)
    assert model.layers[1].compute_dtype == "float16" and model.variables[0].dtype == "float32"
    before = [v.numpy().copy() for v in model.variables]
    result = trainer.train(1)
    assert scale.scale.numpy() == 2.0 ** 39
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.variables))  # statistics included
    assert [int(opt.iterations.numpy()) for opt, _, _ in groups.groups] == [0, 0]
    assert int(trainer.bad_step.numpy()) == -1  # an overflow is the scale's business, not a blow-up
    assert result["step"] == 1


def test_float16_training_learns_and_settles_the_scale():
    scale = LossScale(initial=2.0 ** 24)
    trainer, model, groups = float16_trainer(scale)
    first = trainer.train(5)
    last = trainer.train(30)
    assert scale.scale.numpy() < 2.0 ** 24  # the overflows halved it until steps applied
    assert 25 <= int(groups.groups[0][0].iterations.numpy()) < 35
    assert last["loss"] < 0.5 * first["loss"] and last["accuracy"] > 0.9  # the mean over its 30 steps
    assert int(trainer.bad_step.numpy()) == -1


def test_a_non_finite_loss_under_float16_is_still_reported_as_a_blow_up():
    scale = LossScale()
    trainer, model, groups = float16_trainer(scale)
    trainer.lr.assign(float("nan"))
    trainer.train(2)  # the first step's update makes every weight NaN, the second's loss is NaN
    assert int(trainer.bad_step.numpy()) == 2
    assert scale.scale.numpy() == pytest.approx(2.0 ** 15 / 2)


@tf.custom_gradient
def exploding(x):
    """The identity, whose gradient is infinite: an overflow that no loss scale can avoid."""
    return tf.identity(x), lambda upstream: upstream * float("inf")


def test_an_overflow_at_a_scale_of_one_is_reported_as_a_blow_up():
    """Skipped while halving the scale can help; at a scale of 1 the gradient is too large for float16 itself."""
    tf.keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Lambda(exploding)(keras.layers.Dense(4, name="body")(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(hidden))
    lr = tf.Variable(0.01)
    groups = OptimizerGroups(OptimizerConfig(name="sgd", lr=0.01), model,
                             lr_multipliers([], [v.path for v in model.variables]), lr)
    scale = LossScale(initial=4.0)
    trainer = Trainer(model, groups, separable(), tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64), lr,
                      0.0, tf.distribute.get_strategy(), loss_scale=scale)
    trainer.train(2)
    assert scale.scale.numpy() == 1.0 and int(trainer.bad_step.numpy()) == -1
    trainer.train(1)
    assert int(trainer.bad_step.numpy()) == 3


@pytest.mark.slow  # float16 convolutions are slow on a CPU
def test_a_float32_run_resumes_in_float16_and_its_checkpoints_keep_the_scale(tmp_path, data_dir):
    run = tmp_path / "run"
    base = [*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", "schedule=train"]
    assert run_py([*base, "schedule.steps=2"], tmp_path).returncode == 0
    float16_run = run_py([*base, "schedule.steps=4", "runtime.precision=mixed_float16"], tmp_path)
    assert float16_run.returncode == 0, float16_run.stderr[-3000:]
    assert "restored" in float16_run.stdout + float16_run.stderr
    stored = tf.train.load_checkpoint(str(run / "checkpoints" / "ckpt-4"))
    keys = {key.split("/.ATTRIBUTES")[0] for key in stored.get_variable_to_shape_map()}
    assert {"loss_scale/scale", "loss_scale/good_steps"} <= keys
    assert stored.get_tensor("loss_scale/good_steps/.ATTRIBUTES/VARIABLE_VALUE") == 2  # two steps in float16
    back = run_py([*base, "schedule.steps=5"], tmp_path)  # and on in float32: the scale is not read
    assert back.returncode == 0, back.stderr[-3000:]
