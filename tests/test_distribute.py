"""runtime.strategy=mirrored on two logical CPU devices: the same training and test results as one device.

TensorFlow fixes its devices at the first op, and this test process has long passed it,
so every case with two devices runs in a process of its own (run.py, or a short script).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TINY, compose, run_py
from worklab.errors import UserError

TWO_CPUS = ["runtime.strategy=mirrored", "runtime.devices=[CPU:0,CPU:1]"]
# Every cross-replica path of the step: batch norm (synchronized), two learning-rate groups,
# decoupled decay, clipping of the all-reduced gradient, the weight average, and mixup or
# cutmix drawn for the global batch. Tests after steps 4 and 6, in batches of 9 that two
# replicas split only with padding.
RECIPE = [*TINY, "optimizer=adamw", "optimizer.clip_norm=0.5", "network.ema=0.5",
          "reader.augment.mixup=0.4", "reader.augment.cutmix=1.0",
          "network.lr_mult=[{pattern: '^head/', mult: 10}]", "reader.test_batch_size=9",
          "schedule.stages=[{lr: 0.01, steps: 4}, {lr: 0.001, steps: 2}]"]
# Adam's steps and a clipped gradient do not change when every gradient is multiplied by a
# constant, so RECIPE would pass with the replicas' gradients summed where they should be
# averaged. Momentum SGD without clipping, with the coupled L2 of network.weight_decay, moves
# each weight by the gradient itself: a wrong scale changes the weights and the train loss.
# The default suite trains it on conftest's small_network (network=keras, 10 variables
# where the ResNet-10 has 62: the two-device step traces the network once per replica and
# updates each variable on each device), the slow one RECIPE on the ResNet.
NOT_MOMENTUM = ("optimizer", "schedule.stages", "network.depth", "network.width")  # the ResNet's size too
MOMENTUM = [*[o for o in RECIPE if not o.startswith(NOT_MOMENTUM)], "optimizer=momentum",
            "schedule.stages=[{lr: 0.05, steps: 4}, {lr: 0.01, steps: 2}]"]
# float32 sums taken in another order (each replica's half, then across replicas; the
# batch norm's moments as means of the replicas' means) differ in the last bits, about
# 1e-7 relative per operation; six steps of this tiny network keep them below 1e-4.
TOLERANCE = 1e-4


def checkpoint_values(run_dir) -> dict:
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {key: np.asarray(reader.get_tensor(key)) for key in reader.get_variable_to_shape_map()
            if not key.startswith("_CHECKPOINTABLE")}


def train_losses(run_dir) -> dict:
    """The train loss the run reported at each logged step (TensorBoard's train scalars)."""
    return {event.step: float(tf.make_ndarray(value.tensor))
            for path in sorted((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value
            if value.tag == "loss"}


def assert_same_state(found: dict, expected: dict) -> None:
    """Every variable of two checkpoints: floats within TOLERANCE, counters equal (the saves' own count and the
    schedule's state aside)."""
    assert found.keys() == expected.keys()
    for key in expected:
        if expected[key].dtype.kind == "f":
            np.testing.assert_allclose(found[key], expected[key], rtol=TOLERANCE, atol=TOLERANCE, err_msg=key)
        elif not key.startswith(("save_counter", "schedule")):
            assert (found[key] == expected[key]).all(), key


def assert_same_run(found: Path, expected: Path) -> None:
    """The same weights and statistics, the same reported train losses, the same tests after steps 4 and 6."""
    assert_same_state(checkpoint_values(found), checkpoint_values(expected))
    losses = train_losses(expected)
    assert sorted(losses) == [2, 4, 6]
    assert train_losses(found) == pytest.approx(losses, rel=TOLERANCE)
    for step in (4, 6):
        one_test, two_test = (json.loads((run / "evaluations" / f"step-{step:06d}.json").read_text())
                              for run in (expected, found))
        assert two_test["count"] == np.sum(two_test["confusion"]) == 30  # every test image once
        assert two_test["confusion"] == one_test["confusion"]
        assert two_test["loss"] == pytest.approx(one_test["loss"], rel=TOLERANCE)


@pytest.mark.parametrize("case", [pytest.param("momentum", id="momentum"),
                                  pytest.param("adamw_clipped", id="adamw_clipped", marks=pytest.mark.slow)])
def test_two_devices_train_and_test_as_one_device_with_the_same_global_batch(tmp_path, data_dir, request, case):
    """One device in this process, two in a run.py of their own (TensorFlow fixes its devices at the first op)."""
    from worklab import app
    from worklab.run import runfolder

    recipe = [*MOMENTUM, *request.getfixturevalue("small_network")] if case == "momentum" else RECIPE
    one, two = tmp_path / "one", tmp_path / "two"
    try:
        app.run(compose(recipe, one, data_dir))
    finally:
        runfolder.release(one)
    done = run_py([*recipe, *TWO_CPUS, f"data_dir={data_dir}", f"hydra.run.dir={two}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replicas of 4 images each" in (two / "run.log").read_text()
    found = checkpoint_values(one)
    moving = [key for key in found if "moving_variance" in key and not key.startswith("average")]
    assert moving and any(np.abs(found[key] - 1).max() > 1e-2 for key in moving)  # the statistics did move
    assert_same_run(two, one)


@pytest.mark.slow
def test_a_run_started_on_one_device_resumes_on_two_as_if_uninterrupted(tmp_path, data_dir):
    runs = {"whole": [[]], "split": [["schedule.stages=[{lr: 0.01, steps: 4}]"], TWO_CPUS]}
    for name, commands in runs.items():
        for extra in commands:
            done = run_py([*RECIPE, *extra, f"data_dir={data_dir}", f"hydra.run.dir={tmp_path / name}"], tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
    assert "restored" in (tmp_path / "split" / "run.log").read_text()
    assert_same_state(checkpoint_values(tmp_path / "split"), checkpoint_values(tmp_path / "whole"))


TESTER_SCRIPT = textwrap.dedent("""
    import json, sys
    import keras, numpy as np, tensorflow as tf
    from worklab.train.tester import Tester

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(23, 4)).astype("float32")
    labels = rng.integers(0, 4, 23).astype("int32")
    results = {}
    for name, strategy in (("one", tf.distribute.get_strategy()),
                           ("two", tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]))):
        with strategy.scope():
            inputs = keras.Input((4,))
            model = keras.Model(inputs, keras.layers.Dense(4, use_bias=False, kernel_initializer="identity")(inputs))
            dataset = tf.data.Dataset.from_tensor_slices((logits, labels)).batch(5)
            stats = Tester(model, dataset, 23, 5, top_k=2, strategy=strategy).evaluate()
        results[name] = {k: np.asarray(v).tolist() for k, v in stats.items()}
    json.dump(results, sys.stdout)
""")


def test_the_tester_counts_every_example_once_across_two_replicas():
    # 23 examples in batches of 5: every batch is odd, so each is padded for two replicas.
    done = subprocess.run([sys.executable, "-c", TESTER_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = results["one"], results["two"]
    assert sum(map(sum, two["confusion"])) == 23
    assert two.keys() == one.keys()
    records = ("worst", "confused", "reliability")  # lists of records: the same examples, pairs and bins
    assert [row["index"] for row in two["worst"]] == [row["index"] for row in one["worst"]]
    assert two["confused"] == one["confused"]
    assert [b["count"] for b in two["reliability"]] == [b["count"] for b in one["reliability"]]
    for key in one.keys() - set(records):  # pytest.approx takes no nested lists: each statistic as an array
        np.testing.assert_allclose(two[key], one[key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("overrides, message", [
    (["runtime.strategy=ring"], "runtime.strategy='ring' is not one of default, mirrored"),
    (["runtime.devices=[CPU:0,CPU:1]"], "runtime.devices=['CPU:0', 'CPU:1'] needs runtime.strategy=mirrored"),
    (["runtime.strategy=mirrored", "runtime.devices=[gpu0]"], "'gpu0' is not a device name such as GPU:0"),
    (["runtime.strategy=mirrored", "runtime.devices=[CPU:0,CPU:0]"], "names a device twice"),
    ([*TWO_CPUS, "reader.batch_size=7"], "reader.batch_size=7 does not divide by the 2 devices"),
])
def test_bad_strategy_settings_name_the_key(tmp_path, data_dir, overrides, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compose(overrides, tmp_path / "run", data_dir)


@pytest.mark.parametrize("overrides, message", [
    (["runtime.strategy=mirrored", "runtime.devices=[GPU:99]"], "runtime.devices: this machine has no GPU:99"),
    pytest.param(["runtime.strategy=mirrored"], "runtime.strategy=mirrored found no GPU on this machine",
                 marks=pytest.mark.slow),  # the default suite refuses a missing device with GPU:99
    ([*TWO_CPUS, "runtime.xla=true"], "runtime.xla=true with runtime.strategy=mirrored over 2 replicas"),
])
def test_devices_the_machine_lacks_are_refused_and_the_run_is_left_as_it_was(trained, monkeypatch, overrides,
                                                                            message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # no GPU, on any machine
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    refused = run_py([f"resume={trained}", *overrides], trained.parent)
    assert refused.returncode == 2
    output = refused.stdout + refused.stderr
    assert message in output and "Traceback" not in output
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before
