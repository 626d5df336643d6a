"""Decoupled weight decay (optimizer.weight_decay, optimizer=adamw) and the weight average (network.ema)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import compose, one_device
from test_cosine import StopAt, train
from worklab.config.network import LrRule, NetworkConfig
from worklab.config.training import OptimizerConfig
from worklab.errors import UserError
from worklab.model import batchnorm
from worklab.model.resnet import build_resnet
from worklab.model.rules import lr_multipliers
from worklab.run.parts import Parts
from worklab.run.session import checkpoint_path
from worklab.schedules import cosine
from worklab.train.averaging import WARMUP, WeightAverage, changing_variables
from worklab.train.trainer import OptimizerGroups, Trainer

SIZE, CLASSES, BATCH, LR = 16, 3, 4, 0.1


def batches() -> tf.data.Dataset:
    """A stream of different batches, so every step has its own gradient."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8 * BATCH, SIZE, SIZE, 3)).astype("float32")
    labels = np.arange(8 * BATCH, dtype="int32") % CLASSES
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH).repeat()


def make(optimizer="sgd", rules=(), ema=None, **settings):
    """A small ResNet and its trainer, wired as Parts wires them; returns (trainer, variables by path)."""
    tf.keras.utils.set_random_seed(1)
    rules = list(rules)
    network = NetworkConfig(depth=10, width=0.125, lr_mult=rules)
    model = build_resnet(network, CLASSES, SIZE)
    momentum = batchnorm.Momentum(network)
    batchnorm.prepare(model, rules, momentum)
    plan = lr_multipliers(rules, [v.path for v in model.variables])
    lr = tf.Variable(LR)
    groups = OptimizerGroups(OptimizerConfig(name=optimizer, lr=LR, **settings), model, plan, lr)
    average = WeightAverage(changing_variables(model, lambda p: plan[p].lr > 0), ema) if ema else None
    trainer = Trainer(model, groups, batches(), tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64),
                      lr, 0.0, tf.distribute.get_strategy(), bn_momentum=momentum, average=average)
    return trainer, {v.path: v for v in model.variables}


def one_step(optimizer="sgd", **settings):
    """The weights before and after one training step."""
    trainer, variables = make(optimizer, **settings)
    before = {k: v.numpy().copy() for k, v in variables.items()}
    trainer.train(1)
    return before, {k: v.numpy() for k, v in variables.items()}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_decoupled_decay_takes_lr_times_decay_of_each_kernel_and_nothing_else(optimizer):
    """The step with decay minus the step without is -lr * weight_decay * w for kernels, 0 elsewhere.

    Exact after one step for both: neither SGD's nor Adam's first update depends on the
    weight, so the only difference is the decay, which stays out of the gradient (AdamW's
    decay does not pass through the moments, unlike L2).
    """
    start, plain = one_step("adam" if optimizer == "adamw" else "sgd")
    _, decayed = one_step(optimizer, weight_decay=0.01)
    for path in start:
        expected = -LR * 0.01 * start[path] if path.endswith("kernel") and "bn" not in path else 0.0
        np.testing.assert_allclose(decayed[path] - plain[path], expected, atol=2e-7, err_msg=path)
    assert np.abs(start["head/kernel"]).max() > 0.01  # the decay moved something that can be seen


def test_decay_mult_and_the_exclude_pattern_choose_who_decays_and_by_how_much():
    start, plain = one_step()
    rules = [LrRule(pattern="^head/", decay_mult=0.5), LrRule(pattern="^stem/", decay_mult=0.0)]
    _, decayed = one_step(rules=rules, weight_decay=0.01, decay_exclude="^stage1/")
    change = {p: decayed[p] - plain[p] for p in start}
    np.testing.assert_allclose(change["head/kernel"], -LR * 0.005 * start["head/kernel"], atol=2e-7)
    np.testing.assert_allclose(change["stage2/block1/conv1/kernel"], -LR * 0.01 * start["stage2/block1/conv1/kernel"],
                               atol=2e-7)
    for path in ("stem/conv/kernel", "stage1/block1/conv1/kernel", "head/bias"):
        assert np.array_equal(change[path], np.zeros_like(change[path])), path


def test_decay_that_matches_no_variable_is_refused_naming_the_key():
    with pytest.raises(UserError, match=r"optimizer.weight_decay=0.01: no trained variable matches "
                                        r"optimizer.decay_include='weights\$'"):
        make(weight_decay=0.01, decay_include="weights$")


def test_the_average_is_the_hand_computed_one_after_a_few_steps():
    """average_t = d_t * average_(t-1) + (1 - d_t) * w_t, d_t = min(decay, (1 + t) / (WARMUP + t)), from w_0."""
    trainer, variables = make("momentum", ema=0.6)
    names = ["head/kernel", "stage1/block1/conv1/kernel", "stem/bn/moving_mean", "stem/bn/moving_variance"]
    expected = {n: variables[n].numpy().copy() for n in names}
    for t in range(4):
        trainer.train(1)
        decay = min(0.6, (1 + t) / (WARMUP + t))
        for n in names:
            expected[n] = decay * expected[n] + (1 - decay) * variables[n].numpy()
    for n in names:
        np.testing.assert_allclose(trainer.average.averages[n].numpy(), expected[n], rtol=1e-5, atol=1e-7,
                                   err_msg=n)
        assert not np.allclose(expected[n], variables[n].numpy()), n  # the average lags the weights


def test_swapped_puts_the_average_in_and_the_trained_weights_back():
    trainer, variables = make("momentum", ema=0.5)
    trainer.train(3)
    trained = variables["head/kernel"].numpy().copy()
    with trainer.average.swapped():
        np.testing.assert_array_equal(variables["head/kernel"].numpy(), trainer.average.averages["head/kernel"])
    np.testing.assert_array_equal(variables["head/kernel"].numpy(), trained)


EMA = ["schedule=cosine", "schedule.steps=8", "schedule.eval_every=4", "schedule.log_every=1",
       "schedule.save_every=1", "optimizer.lr=0.05", "network.ema=0.7"]


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_average_and_tests_and_exports_use_it(tmp_path, data_dir):
    _, whole = train(cosine, compose(EMA, tmp_path / "whole", data_dir))
    cfg = compose(EMA, tmp_path / "split", data_dir)
    train(cosine, cfg, StopAt(3))
    train(cosine, cfg)
    averages = {}
    for run in ("whole", "split"):
        reader = tf.train.load_checkpoint(str(checkpoint_path(tmp_path / run, 8)))
        keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("average/")]
        averages[run] = {k: reader.get_tensor(k) for k in keys}
    assert len(averages["whole"]) > 10
    for key, value in averages["whole"].items():
        np.testing.assert_allclose(averages["split"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    parts = Parts(compose(EMA, tmp_path / "whole", data_dir), StopAt(0), one_device())
    assert parts.restore_for_inference() == 8
    kernel = parts.model.get_layer("head").kernel
    np.testing.assert_array_equal(kernel.numpy(), parts.average.averages["head/kernel"].numpy())
    assert not np.allclose(kernel.numpy(), whole["head/kernel"])  # the average, not the last step's weights
    logged = json.loads((tmp_path / "whole" / "evaluations" / "step-000008.json").read_text())
    assert parts.tester.evaluate()["loss"] == pytest.approx(logged["loss"], rel=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["network.ema=1"], r"network.ema=1.0 must be in \(0, 1\)"),
    (["network.ema=0"], r"network.ema=0.0 must be in \(0, 1\)"),
    (["optimizer.weight_decay=0.05"], r"network.weight_decay=0.0001 \(L2 in the loss\) and optimizer.weight_decay"),
    (["optimizer=adamw", "optimizer.weight_decay=-1"], r"optimizer.weight_decay=-1.0 must be in \[0, 1\)"),
    (["optimizer=adamw", "optimizer.decay_exclude='a['"], r"optimizer.decay_exclude='a\[' is not a valid regular"),
    (["network.ema=0.9", "schedule.recalibrate=2"], r"network.ema=0.9 with schedule.recalibrate"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, data_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        compose(overrides, tmp_path / "run", data_dir)


def test_adamw_turns_off_the_coupled_decay(tmp_path, data_dir):
    """The default network's L2 is replaced by AdamW's decoupled decay, not added to it; a decay given on the
    command line is the one used."""
    plain = compose([], tmp_path / "run", data_dir)
    cfg = compose(["optimizer=adamw"], tmp_path / "run", data_dir)
    assert plain.network.weight_decay > 0 and plain.optimizer.weight_decay == 0
    assert cfg.optimizer.name == "adamw" and cfg.optimizer.weight_decay > 0 and cfg.network.weight_decay == 0
    assert compose(["optimizer=adamw", "optimizer.weight_decay=0.2"], tmp_path / "run",
                   data_dir).optimizer.weight_decay == 0.2
