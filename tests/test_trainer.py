"""The training step: lr_mult rules, frozen variables, weight decay, the non-finite guard."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from worklab.config.network import LrRule, NetworkConfig
from worklab.config.training import OptimizerConfig
from worklab.errors import UserError
from worklab.model import batchnorm
from worklab.model.resnet import build_resnet
from worklab.model.rules import lr_multipliers
from worklab.train.trainer import OptimizerGroups, Trainer

SIZE, CLASSES, BATCH = 16, 3, 4


def batches(nan: bool = False) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype("float32")
    if nan:
        images[0, 0, 0, 0] = np.nan
    labels = np.arange(BATCH, dtype="int32") % CLASSES
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def make_trainer(rules, optimizer="sgd", weight_decay=0.0, nan=False, **network):
    """A trainer wired as Parts wires it: batch norm prepared by the rules, one optimizer per multiplier."""
    tf.keras.utils.set_random_seed(1)
    cfg = NetworkConfig(depth=10, width=0.125, lr_mult=rules, **network)
    model = build_resnet(cfg, CLASSES, SIZE)
    momentum = batchnorm.Momentum(cfg)
    batchnorm.prepare(model, rules, momentum)
    plan = lr_multipliers(rules, [v.path for v in model.variables])
    lr = tf.Variable(0.1)
    step, examples = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    groups = OptimizerGroups(OptimizerConfig(name=optimizer, lr=0.1), model, plan, lr)
    trainer = Trainer(model, groups, batches(nan), step, examples, lr, weight_decay, tf.distribute.get_strategy(),
                      bn_momentum=momentum)
    return trainer, {v.path: v for v in model.variables}


def values(variables):
    return {k: v.numpy().copy() for k, v in variables.items()}


def test_mult_zero_is_bit_identical_and_others_move():
    trainer, variables = make_trainer([LrRule(pattern="^stem/", mult=0.0)], optimizer="momentum", weight_decay=1e-2)
    before = values(variables)
    scalars = trainer.train(3)
    after = values(variables)
    assert scalars["steps"] == 3 and scalars["step"] == 3
    for name in ("stem/conv/kernel", "stem/bn/gamma", "stem/bn/beta"):
        assert np.array_equal(before[name], after[name]), name
    assert not np.array_equal(before["stage1/block1/conv1/kernel"], after["stage1/block1/conv1/kernel"])
    assert not np.array_equal(before["head/kernel"], after["head/kernel"])


def test_tenth_multiplier_moves_a_tenth_under_plain_sgd():
    name = "stage2/block1/shortcut/conv/kernel"  # block convs start with a zero gradient (zero-init bn2)
    full, full_vars = make_trainer([])
    tenth, tenth_vars = make_trainer([LrRule(pattern="^stage2/block1/shortcut/conv/", mult=0.1)])
    start = full_vars[name].numpy().copy()
    assert np.array_equal(start, tenth_vars[name].numpy())  # same initialisation
    full.train(1)
    tenth.train(1)
    moved_full = full_vars[name].numpy() - start
    moved_tenth = tenth_vars[name].numpy() - start
    assert np.abs(moved_full).max() > 0
    np.testing.assert_allclose(moved_tenth, 0.1 * moved_full, rtol=1e-3, atol=2e-7)  # float32 weight rounding


@pytest.mark.slow
def test_weight_decay_pulls_kernels_to_zero_by_decay_times_lr():
    """With a zero data gradient for the head (mult 0 elsewhere), one SGD step shrinks it by lr*decay."""
    trainer, variables = make_trainer([LrRule(pattern="^head/", mult=1.0, decay_mult=2.0)], weight_decay=0.5)
    no_decay, plain_vars = make_trainer([LrRule(pattern="^head/", mult=1.0, decay_mult=0.0)], weight_decay=0.5)
    start = variables["head/kernel"].numpy().copy()
    trainer.train(1)
    no_decay.train(1)
    decay_part = variables["head/kernel"].numpy() - plain_vars["head/kernel"].numpy()
    np.testing.assert_allclose(decay_part, -0.1 * 0.5 * 2.0 * start, rtol=1e-4, atol=1e-7)


def test_adam_groups_scale_the_rate_not_the_gradient():
    """Adam ignores gradient scale, so a 0.1 multiplier must act on the rate: first step is lr*mult*sign(g)."""
    name = "head/bias"
    trainer, variables = make_trainer([LrRule(pattern="^head/bias", mult=0.1)], optimizer="adam")
    start = variables[name].numpy().copy()
    trainer.train(1)
    step = np.abs(variables[name].numpy() - start)
    np.testing.assert_allclose(step[step > 0], 0.1 * 0.1, rtol=1e-3)


def test_non_finite_loss_skips_the_update_and_keeps_every_variable():
    """Weights, optimizer slots and the batch-norm statistics the forward pass moved all stay as they were."""
    trainer, variables = make_trainer([], optimizer="momentum", nan=True)
    before = values(variables)
    trainer.train(2)
    assert int(trainer.bad_step.numpy()) == 1
    after = values(variables)
    assert "stem/bn/moving_mean" in after
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed == []
    assert all(np.all(np.isfinite(v.numpy())) for _, vs, _ in trainer.optimizers.groups for v in vs)


def test_frozen_batch_norm_statistics_with_a_rate_train_gamma_and_beta():
    """`bn: frozen` freezes the statistics (inference mode); the rule's mult still trains gamma and beta."""
    rules = [LrRule(pattern="^stage1/", mult=0.5, bn="frozen")]
    trainer, variables = make_trainer(rules)
    before = values(variables)
    trainer.train(3)
    after = values(variables)
    for name in ("stage1/block1/bn1/moving_mean", "stage1/block1/bn1/moving_variance"):
        assert np.array_equal(before[name], after[name]), name
    for name in ("stage1/block1/bn1/gamma", "stage1/block1/bn1/beta"):
        assert not np.array_equal(before[name], after[name]), name
    assert not np.array_equal(before["stage2/block1/bn1/moving_mean"], after["stage2/block1/bn1/moving_mean"])


def test_rule_that_matches_nothing_is_an_error_naming_it():
    with pytest.raises(UserError, match=r"\^stem_typo/"):
        make_trainer([LrRule(pattern="^stem_typo/", mult=0.0)])


def test_invalid_regex_is_an_error_naming_the_rule():
    with pytest.raises(UserError, match=r"network.lr_mult\[1\].*'\(unclosed'"):
        make_trainer([LrRule(pattern="^stem/", mult=0.0), LrRule(pattern="(unclosed", mult=0.0)])


def test_first_matching_rule_wins():
    names = ["stage1/block1/conv1/kernel", "stage1/block1/bn1/gamma", "head/kernel"]
    plan = lr_multipliers([LrRule(pattern="conv", mult=0.5), LrRule(pattern="^stage1/", mult=0.0)], names)
    assert plan["stage1/block1/conv1/kernel"].lr == 0.5
    assert plan["stage1/block1/bn1/gamma"].lr == 0.0
    assert plan["head/kernel"].lr == 1.0
