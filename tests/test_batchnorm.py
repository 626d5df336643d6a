"""Batch-norm care: frozen layers keep their statistics, momentum warm-up, recalibration, the finetune preset."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import compose
from test_trainer import make_trainer
from worklab import app
from worklab.config.network import LrRule, NetworkConfig
from worklab.model import batchnorm
from worklab.model.resnet import build_resnet


def statistics(model):
    return {layer.moving_mean.path: (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in batchnorm.batch_norm_layers(model)}


def prepared(rules, **network):
    cfg = NetworkConfig(depth=10, width=0.125, lr_mult=rules, **network)
    model = build_resnet(cfg, 3, 16)
    momentum = batchnorm.Momentum(cfg)
    return model, momentum, batchnorm.prepare(model, rules, momentum)


def test_mult_zero_freezes_batch_norm_statistics_unless_bn_train():
    rules = [LrRule(pattern="^stem/", mult=0.0), LrRule(pattern="^stage1/", mult=0.0, bn="train")]
    trainer, _ = make_trainer(rules)
    bns = batchnorm.batch_norm_layers(trainer.model)
    assert [batchnorm.layer_path(l) for l in bns if not l.trainable] == ["stem/bn"]
    before = statistics(trainer.model)
    trainer.train(2)
    after = statistics(trainer.model)
    assert all(np.array_equal(a, b) for a, b in zip(before["stem/bn/moving_mean"], after["stem/bn/moving_mean"]))
    assert not np.array_equal(before["stage1/block1/bn1/moving_mean"][0], after["stage1/block1/bn1/moving_mean"][0])


def test_frozen_batch_norm_normalises_with_its_moving_statistics():
    model, _, frozen = prepared([LrRule(pattern="^stem/bn/", mult=0.0, bn="frozen")])
    assert frozen == ["stem/bn"]
    layer = next(l for l in batchnorm.batch_norm_layers(model) if batchnorm.layer_path(l) == "stem/bn")
    x = tf.random.normal((4, 8, 8, layer.moving_mean.shape[0]), mean=3.0)
    inference = layer(x, training=False)
    assert np.allclose(layer(x, training=True), inference)  # training mode changes nothing when frozen


def test_momentum_warm_up_moves_fresh_statistics_faster():
    warm, _ = make_trainer([], bn_warmup_steps=5, bn_warmup_momentum=0.0)
    plain, _ = make_trainer([])
    warm.train(1)
    plain.train(1)
    assert float(warm.bn_momentum.variable.numpy()) == 0.0  # still warming up after step 1
    fast = statistics(warm.model)["stem/bn/moving_mean"][0]
    slow = statistics(plain.model)["stem/bn/moving_mean"][0]
    np.testing.assert_allclose(fast, 10 * slow, rtol=1e-3, atol=1e-6)  # momentum 0 vs 0.9 from a zero start
    warm.train(5)
    assert float(warm.bn_momentum.variable.numpy()) == np.float32(0.9)


def distinct_batches(count):
    """`count` batches of 4 images, batch i centred on i, so every batch has its own statistics."""
    rng = np.random.default_rng(5)
    images = rng.normal(loc=np.arange(count)[:, None, None, None, None], size=(count, 4, 16, 16, 3))
    return images.astype("float32"), np.zeros((count, 4), "int32")


def test_recalibration_is_the_plain_average_over_distinct_batches_and_leaves_frozen_layers():
    model, momentum, _ = prepared([LrRule(pattern="^stem/", mult=0.0)])
    initial = statistics(model)
    images, labels = distinct_batches(4)
    alone = []  # each batch's own statistics: recalibrating over one batch keeps only that batch's
    for i in range(4):
        batchnorm.recalibrate(model, tf.data.Dataset.from_tensors((images[i], labels[i])), momentum, 1)
        alone.append(statistics(model))
    batchnorm.recalibrate(model, tf.data.Dataset.from_tensor_slices((images, labels)), momentum, 4)
    averaged = statistics(model)
    assert float(momentum.variable.numpy()) == np.float32(0.9)
    for name in averaged:
        for j in (0, 1):  # moving mean, moving variance
            if name.startswith("stem/"):
                assert np.array_equal(initial[name][j], averaged[name][j]), name
                continue
            plain = np.mean([batch[name][j] for batch in alone], axis=0)
            np.testing.assert_allclose(averaged[name][j], plain, rtol=1e-4, atol=1e-6, err_msg=name)
            assert not np.allclose(averaged[name][j], alone[-1][name][j], rtol=1e-3), name  # not the last batch


def test_recalibrate_schedule_rewrites_the_latest_checkpoint_and_tests(tmp_path, data_dir, trained):
    run = Path(shutil.copytree(trained, tmp_path / "run"))  # 2 steps of schedule=train
    before = tf.train.load_checkpoint(str(run / "checkpoints"))
    key = "model/stage1.Sblock1.Sbn1.Smoving_mean/.ATTRIBUTES/VARIABLE_VALUE"
    old = before.get_tensor(key)
    result = app.run(compose(["schedule=recalibrate", "schedule.batches=3"], run, data_dir))
    assert result["step"] == 2 and (run / "evaluations" / "step-000002.json").is_file()
    assert not np.array_equal(old, tf.train.load_checkpoint(str(run / "checkpoints")).get_tensor(key))


def finetune(tmp_path, data_dir):
    return compose(["network=finetune", "schedule=train", "schedule.steps=1"], tmp_path / "run", data_dir)


def test_finetune_preset_freezes_the_early_layers(tmp_path, data_dir):
    model, _, frozen = prepared(finetune(tmp_path, data_dir).network.lr_mult)
    assert "stem/bn" in frozen and "stage1/block1/bn1" in frozen and not any(f.startswith("stage2") for f in frozen)


@pytest.mark.slow  # a run: the default suite trains frozen layers in test_trainer and test_freeze
def test_finetune_preset_trains(tmp_path, data_dir):
    assert app.run(finetune(tmp_path, data_dir))["step"] == 1
