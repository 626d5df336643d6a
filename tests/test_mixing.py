"""reader.augment.mixup, cutmix, mix_prob: the mix itself, its seeding, and what the training step makes of it."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import compose, one_device
from worklab.config.reader import AugmentConfig
from worklab.config.training import OptimizerConfig
from worklab.errors import UserError
from worklab.interrupt import StopRequest
from worklab.model.rules import lr_multipliers
from worklab.run.parts import Parts
from worklab.train.losses import Objective
from worklab.train.mixing import Mixing, batch_mixing, mix
from worklab.train.trainer import OptimizerGroups, Trainer

BATCH, SIZE, CLASSES = 6, 8, 3
BOTH = AugmentConfig(mixup=0.4, cutmix=1.0)


def flat_images(batch=BATCH, size=SIZE):
    """Example i is filled with the value i + 1, so every pixel tells which example it came from."""
    values = np.arange(1, batch + 1, dtype="float32")[:, None, None, None]
    return tf.constant(values * np.ones((batch, size, size, 3), "float32"))


LABELS = tf.constant(np.arange(BATCH) % CLASSES, tf.int32)
NEIGHBOURS = [1, 0, 3, 2, 5, 4]  # each example's partner in a batch of BATCH


def mixed_at(cfg, position, seed=0, images=None):
    return [t.numpy() for t in Mixing(cfg, seed)(flat_images() if images is None else images, LABELS, position)]


def test_alpha_0_is_the_identity_with_weights_1_and_no_mixing_in_the_step():
    images = tf.random.stateless_uniform((BATCH, SIZE, SIZE, 3), [1, 2], 0, 255)
    out, labels, partners, weights = mix(images, LABELS, tf.constant([0, 0], tf.int64), AugmentConfig())
    assert np.array_equal(out, images) and np.array_equal(labels, LABELS)
    assert np.array_equal(weights, np.ones(BATCH)) and np.array_equal(partners, LABELS.numpy()[NEIGHBOURS])
    assert batch_mixing(AugmentConfig(), 0) is None and batch_mixing(AugmentConfig(cutmix=1.0), 0) is not None


def test_mixup_blends_each_example_with_its_neighbour_by_its_weight():
    images = flat_images().numpy()
    blends = 0
    for position in range(0, 80, BATCH):
        out, labels, partners, weights = mixed_at(AugmentConfig(mixup=0.4), position)
        assert np.array_equal(partners, LABELS.numpy()[NEIGHBOURS]) and np.all((weights >= 0) & (weights <= 1))
        w = weights[:, None, None, None]
        np.testing.assert_allclose(out, w * images + (1 - w) * images[NEIGHBOURS], rtol=1e-6)
        blends += bool(np.all((weights > 0.01) & (weights < 0.99)))
    assert blends >= 3  # the weights are drawn, not stuck at 0 or 1


def test_cutmix_weight_is_the_fraction_of_pixels_kept_after_the_box_is_clipped():
    images = flat_images(size=13).numpy()  # odd size: boxes at the edges are clipped
    clipped = 0
    for position in range(0, 120, BATCH):
        out, _, _, weights = mixed_at(AugmentConfig(cutmix=1.0), position, images=tf.constant(images))
        from_partner = np.mean(out[..., 0] == images[NEIGHBOURS, :1, :1, 0], axis=(1, 2))
        kept = np.mean(out[..., 0] == images[:, :1, :1, 0], axis=(1, 2))
        assert np.all(kept + from_partner == 1)  # an even batch: no example is its own partner
        np.testing.assert_allclose(weights, kept, rtol=1e-6)
        box = out[0, ..., 0] == images[1, 0, 0, 0]
        rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
        clipped += bool(box.any()) and (rows[0] == 0 or rows[-1] == 12 or cols[0] == 0 or cols[-1] == 12)
    assert clipped >= 2  # some boxes met an edge, so the weight is not just the drawn one


def test_an_odd_batch_leaves_its_last_example_as_it_is():
    images = flat_images(batch=5)
    out, labels, partners, weights = Mixing(BOTH, 0)(images, LABELS[:5], 12)
    assert np.array_equal(partners, LABELS.numpy()[[1, 0, 3, 2, 4]])
    np.testing.assert_array_equal(out[4], images[4])


@pytest.mark.parametrize("cfg", [AugmentConfig(mixup=0.4), AugmentConfig(cutmix=1.0), BOTH])
def test_replicas_with_even_shares_mix_the_global_batch_as_one_device(cfg):
    """2, 3 or 6 replicas, each mixing its share with the global batch's position, give the whole batch's mix."""
    images = tf.random.stateless_uniform((12, SIZE, SIZE, 3), [3, 4], 0, 255)
    labels = tf.range(12) % CLASSES
    for position in range(0, 120, 12):
        whole = [t.numpy() for t in Mixing(cfg, 0)(images, labels, position)]
        assert not np.array_equal(whole[0], images.numpy())
        for size in (6, 4, 2):
            parts = [Mixing(cfg, 0)(images[i:i + size], labels[i:i + size], position) for i in range(0, 12, size)]
            for found, expected in zip(zip(*parts), whole):
                np.testing.assert_array_equal(np.concatenate([t.numpy() for t in found]), expected)


def test_the_same_seed_and_position_mix_alike_another_position_or_seed_differently():
    first = mixed_at(BOTH, 24)
    again = mixed_at(BOTH, 24)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(mixed_at(BOTH, 30)[3], first[3])
    assert not np.array_equal(mixed_at(BOTH, 24, seed=1)[3], first[3])


def test_with_both_each_batch_is_a_blend_or_a_box_and_mix_prob_leaves_batches_whole():
    kinds = set()
    for position in range(0, 240, BATCH):
        out, _, _, weights = mixed_at(BOTH, position)
        boxed = np.isin(out, np.arange(1, BATCH + 1)).all()  # a box only moves pixels; a blend makes new values
        kinds.add("box" if boxed and weights[0] < 1 else "blend" if not boxed else "whole")
    assert kinds == {"box", "blend"}
    whole = [np.all(mixed_at(AugmentConfig(mixup=0.4, mix_prob=0.5), p)[3] == 1) for p in range(0, 240, BATCH)]
    assert 8 <= sum(whole) <= 32  # about half of 40 batches
    assert all(np.all(mixed_at(AugmentConfig(mixup=0.4, mix_prob=0.0), p)[3] == 1) for p in range(0, 60, BATCH))


def linear_trainer(data, mixing=None, objective=None, examples=0, xla=False, seed=5):
    """A linear classifier on (SIZE, SIZE, 3) images under plain SGD at lr 1, so a step's change is -gradient."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(keras.layers.Flatten()(inputs)))
    plan = lr_multipliers([], [v.path for v in model.variables])
    lr = tf.Variable(1.0)
    groups = OptimizerGroups(OptimizerConfig(name="sgd", lr=1.0), model, plan, lr)
    trainer = Trainer(model, groups, data, tf.Variable(examples // BATCH, dtype=tf.int64),
                      tf.Variable(examples, dtype=tf.int64), lr, 0.0, tf.distribute.get_strategy(), xla=xla,
                      objective=objective, mixing=mixing)
    return trainer, model


def noise_batches(start_batch=0):
    """Batch k of an endless stream: images drawn from k, so a stream opened at batch k is the tail of the whole."""
    def batch(k):
        return tf.random.stateless_uniform((BATCH, SIZE, SIZE, 3), tf.stack([k, k]), -1, 1), LABELS
    return tf.data.Dataset.range(start_batch, 10 ** 6).map(batch)


def test_the_mixed_loss_gradient_accuracy_and_reported_loss_are_the_weighted_sums():
    """One step at examples 12: the change is -(w g(labels) + (1 - w) g(partners)) of the objective on the mixed
    images (smoothing and class weights kept); loss and accuracy are the weighted plain ones."""
    mixing, weights_per_class = Mixing(BOTH, 3), [1.0, 2.0, 0.5]
    trainer, model = linear_trainer(noise_batches(), mixing, Objective(0.1, weights_per_class), examples=12)
    images, labels = next(iter(noise_batches()))
    mixed, labels, partners, w = mixing(images, labels, 12)
    assert 0 < float(w[0]) < 1
    before = [v.numpy().copy() for v in model.trainable_variables]

    def gradient(target):  # of the batch mean of the smoothed, class-weighted cross-entropy against `target`
        smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
        with tf.GradientTape() as tape:
            losses = smoothed(tf.one_hot(target, CLASSES), model(mixed)) * tf.gather(weights_per_class, target)
            loss = tf.reduce_mean(losses)
        return tape.gradient(loss, model.trainable_variables)

    lam = float(w[0])
    own, other = gradient(labels), gradient(partners)
    logits = model(mixed).numpy()
    plain = [tf.nn.sparse_softmax_cross_entropy_with_logits(t, logits).numpy() for t in (labels, partners)]
    hit = [(logits.argmax(-1) == t.numpy()).astype("float32") for t in (labels, partners)]
    scalars = trainer.train(1)
    for v, start, a, b in zip(model.trainable_variables, before, own, other):
        np.testing.assert_allclose(v.numpy() - start, -(lam * a + (1 - lam) * b), rtol=1e-4, atol=1e-6, err_msg=v.path)
        assert not np.allclose(a, b)
    assert scalars["loss"] == pytest.approx(np.mean(lam * plain[0] + (1 - lam) * plain[1]), rel=1e-5)
    assert scalars["accuracy"] == pytest.approx(np.mean(lam * hit[0] + (1 - lam) * hit[1]), rel=1e-5)


def test_a_resumed_run_mixes_as_an_uninterrupted_one():
    """4 steps in one go, or 2 and then a new trainer on the stream and `examples` a checkpoint would restore."""
    whole, whole_model = linear_trainer(noise_batches(), Mixing(BOTH, 7))
    whole.train(4)
    first, model = linear_trainer(noise_batches(), Mixing(BOTH, 7))
    first.train(2)
    resumed = Trainer(model, first.optimizers, noise_batches(start_batch=2), tf.Variable(2, dtype=tf.int64),
                      tf.Variable(2 * BATCH, dtype=tf.int64), first.lr, 0.0, tf.distribute.get_strategy(),
                      mixing=Mixing(BOTH, 7))
    resumed.train(2)
    fresh, fresh_model = linear_trainer(noise_batches(), None)
    fresh.train(4)
    for a, b, c in zip(whole_model.variables, model.variables, fresh_model.variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
        assert not np.allclose(a.numpy(), c.numpy())  # the mixing made a difference


def test_mixing_that_never_applies_trains_as_no_mixing():
    plain, plain_model = linear_trainer(noise_batches())
    never, never_model = linear_trainer(noise_batches(), Mixing(AugmentConfig(mixup=0.4, mix_prob=0.0), 0))
    for trainer in (plain, never):
        trainer.train(3)
    for a, b in zip(plain_model.variables, never_model.variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.path


@pytest.mark.slow  # an XLA compilation
def test_xla_mixes_alike():
    eager, eager_model = linear_trainer(noise_batches(), Mixing(BOTH, 0))
    xla, xla_model = linear_trainer(noise_batches(), Mixing(BOTH, 0), xla=True)
    for trainer in (eager, xla):
        trainer.train(3)
    for c, d in zip(eager_model.variables, xla_model.variables):
        np.testing.assert_allclose(d.numpy(), c.numpy(), rtol=1e-5, atol=1e-6, err_msg=c.path)


def test_parts_mix_the_first_inputs_for_tensorboard_as_the_trainer_mixes_them(tmp_path, data_dir):
    cfg = compose(["schedule=train", "reader.augment.cutmix=1.0", "seed=3"], tmp_path / "run", data_dir)
    parts = Parts(cfg, StopRequest(), one_device())
    written = []
    parts.writer.input_images = lambda step, images: written.append(images)
    parts.restore()
    trainer = parts.trainer
    images, labels = next(iter(parts.reader.train(parts.inputs.train_images)))
    expected = Mixing(cfg.reader.augment, cfg.seed)(images, labels, 0)
    assert float(expected[3][0]) < 1
    np.testing.assert_array_equal(written[0], expected[0])
    in_training = trainer._mix(images, labels)  # what the first step trains on
    assert all(np.array_equal(a, b) for a, b in zip(in_training, expected))


@pytest.mark.parametrize("override, message", [
    ("reader.augment.mixup=-0.2", r"reader.augment.mixup=-0.2 must be 0 \(off\) or a finite positive number"),
    ("reader.augment.cutmix=inf", r"reader.augment.cutmix=inf must be 0 \(off\) or a finite positive number"),
    ("reader.augment.cutmix=nan", r"reader.augment.cutmix=nan must be 0 \(off\)"),
    ("reader.augment.mix_prob=1.5", r"reader.augment.mix_prob=1.5 must be in \[0, 1\]"),
    ("reader.augment.mix_prob=0.5", r"reader.augment.mix_prob=0.5 has no effect with reader.augment.mixup=0"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, data_dir, override, message):
    with pytest.raises(UserError, match=message):
        compose([override], tmp_path / "run", data_dir)
