"""Starting from a pretrained checkpoint: TF1, TF2 (worklab runs) and .h5 sources, rules, mismatches, the report."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from conftest import compose
from worklab import app
from worklab.config.network import NetworkConfig
from worklab.config.training import RestoreConfig, RestoreRule
from worklab.errors import UserError
from worklab.model.resnet import build_resnet
from worklab.model.restore import open_checkpoint, restore

FROZEN = "network.lr_mult=[{pattern: '^(stem|stage)', mult: 0}]"
ALL_FROZEN = ["network.lr_mult=[{pattern: '.', mult: 0}]", "network.weight_decay=0"]
HEAD = "restore.skip=['^head/']"


def train(run_dir, data_dir, steps, *overrides):
    return app.run(compose(["schedule=train", f"schedule.steps={steps}", "schedule.save_every=2",
                            *overrides], run_dir, data_dir))


def model_values(run_dir):
    source = open_checkpoint(str(run_dir / "checkpoints"))
    return {name: source.get(name) for name in source.shapes}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
    """A worklab run of 4 steps on the tiny demo set: its checkpoint is the pretrained model."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    train(run, data_dir, 4)
    return run


def report(run_dir):
    return {row["variable"]: row for row in json.loads((run_dir / "restore_report.json").read_text())["variables"]}


def test_a_worklab_run_reads_by_variable_name(pretrained):
    source = open_checkpoint(str(pretrained / "checkpoints"))
    assert "stage1/block1/conv1/kernel" in source.shapes and "head/kernel" in source.shapes
    assert not any(k.startswith(("optimizer", "step", "lr")) for k in source.shapes)


def test_retrain_with_a_fresh_head_keeps_frozen_pretrained_weights(tmp_path, data_dir, pretrained):
    run = tmp_path / "run"
    train(run, data_dir, 2, f"restore.path={pretrained / 'checkpoints'}", HEAD, FROZEN,
          "reader.demo.seed=1")  # another image set: the demo drawn anew
    assert (data_dir / "demo-16px-4x3-seed1").is_dir()
    rows = report(run)
    assert {r["status"] for name, r in rows.items() if name.startswith("head/")} == {"skipped"}
    assert {r["status"] for name, r in rows.items() if not name.startswith("head/")} == {"restored"}
    before, after = model_values(pretrained), model_values(run)
    for name in before:
        if name.startswith(("stem/", "stage")) and "moving" not in name:
            np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert not np.array_equal(before["head/kernel"], after["head/kernel"])


@pytest.mark.slow
def test_tf1_checkpoint_under_other_names_restores_every_tensor_through_a_rule(tmp_path, data_dir, pretrained):
    values = model_values(pretrained)
    with tf.Graph().as_default():
        saved = [tf.compat.v1.Variable(v, name=f"net/{name}") for name, v in values.items()]
        saver = tf.compat.v1.train.Saver(saved)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, str(tmp_path / "tf1" / "model.ckpt"))
    run = tmp_path / "run"
    train(run, data_dir, 1, f"restore.path={prefix}", "restore.rules=[{pattern: '^(.*)$', to: 'net/\\1'}]",
          *ALL_FROZEN)
    rows = report(run)
    assert {row["status"] for row in rows.values()} == {"restored"}
    assert rows["stage2/block1/conv1/kernel"]["key"] == "net/stage2/block1/conv1/kernel"
    after = model_values(run)
    for name, value in values.items():
        if "moving" not in name:  # batch statistics move in training mode
            np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_shape_mismatch_reports_every_offender(tmp_path, data_dir, pretrained):
    run = tmp_path / "run"
    with pytest.raises(UserError) as error:
        train(run, data_dir, 1, f"restore.path={pretrained / 'checkpoints'}", "network.width=0.25")
    rows = report(run)
    offenders = [name for name, row in rows.items() if row["status"] == "shape mismatch"]
    assert len(offenders) > 20 and f"{len(offenders)} variable(s) cannot be restored" in str(error.value)
    assert "stem/conv/kernel (shape mismatch [7, 7, 3, 8] vs ours [7, 7, 3, 16])" in str(error.value)
    assert all(name in str(error.value) for name in offenders)
    assert not (run / "checkpoints").exists()


def test_not_strict_starts_mismatches_fresh_and_says_so(tmp_path, data_dir, pretrained):
    run = tmp_path / "run"
    train(run, data_dir, 1, f"restore.path={pretrained / 'checkpoints'}", "network.width=0.25",
          "restore.strict=false")
    rows = report(run)
    assert {row["status"] for row in rows.values()} == {"restored", "fresh (shape mismatch)"}
    assert rows["head/kernel"]["status"] == "fresh (shape mismatch)" and rows["head/bias"]["status"] == "restored"


@pytest.mark.slow
def test_a_resumed_run_does_not_restore_again_unless_anyway(tmp_path, data_dir, pretrained, caplog):
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    source = [f"restore.path={pretrained / 'checkpoints'}", HEAD]
    train(run, data_dir, 2, *source)
    caplog.clear()
    train(run, data_dir, 4, *source)
    assert "restore from" not in caplog.text and "ckpt-2: step 2" in caplog.text
    caplog.clear()
    train(run, data_dir, 6, *source, "restore.anyway=true")
    assert "restore from" in caplog.text and "ckpt-4: step 4" in caplog.text


@pytest.mark.slow
def test_keras_h5_weights_restore_by_dataset_name(tmp_path, data_dir, pretrained):
    import h5py

    values = model_values(pretrained)
    with h5py.File(tmp_path / "weights.h5", "w") as h5:
        for name, value in values.items():
            h5[name] = value
    run = tmp_path / "run"
    train(run, data_dir, 1, f"restore.path={tmp_path / 'weights.h5'}", *ALL_FROZEN)
    assert {row["status"] for row in report(run).values()} == {"restored"}
    after = model_values(run)
    for name in values:
        if "moving" not in name:
            np.testing.assert_array_equal(values[name], after[name], err_msg=name)


@pytest.mark.parametrize("overrides, message", [
    (["restore.path=/nowhere/model.ckpt"], "restore.path=/nowhere/model.ckpt does not exist"),
    (["restore.rules=[{pattern: '(', to: x}]"], r"restore.rules\[0\] pattern '\(' is not a valid regular expression"),
    (["restore.skip=['^heda/']"], r"restore.skip: pattern\(s\) \['\^heda/'\] match no variable"),
])
def test_bad_restore_input_is_named_before_training(tmp_path, data_dir, pretrained, overrides, message):
    if not any(o.startswith("restore.path") for o in overrides):
        overrides.append(f"restore.path={pretrained / 'checkpoints'}")
    with pytest.raises(UserError, match=message):
        train(tmp_path / "run", data_dir, 1, *overrides)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path, data_dir):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"notes.txt is not a TensorFlow checkpoint or Keras weights file"):
        train(tmp_path / "run", data_dir, 1, f"restore.path={tmp_path / 'notes.txt'}")


def test_inspect_lists_keys_and_the_mapping(tmp_path, data_dir, pretrained, capsys):
    counts = app.run(compose(["schedule=inspect", f"restore.path={pretrained / 'checkpoints'}",
                              "schedule.filter='^stem/conv'"], tmp_path / "run", data_dir))
    out = capsys.readouterr().out
    assert "stem/conv/kernel" in out and "[7, 7, 3, 8]" in out and "float32" in out
    assert "stage1/" not in out
    assert counts["restored"] == 1 and counts["missing"] == 0


TINY_NET = NetworkConfig(depth=10, width=0.125)
TO_FC = [RestoreRule(pattern="^head/kernel$", to="fc/weights"), RestoreRule(pattern="^head/bias$", to="fc/biases")]


def write_tf1(values, prefix):
    """A TF1 checkpoint of `values` (name -> array, any dtype), as another framework's model would be saved."""
    with tf.Graph().as_default():
        saved = [tf.compat.v1.Variable(v, name=name) for name, v in values.items()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver(saved).save(session, str(prefix))


def their_values(classes):
    """Random values for every variable of the tiny ResNet with `classes` classes, the head as fc/."""
    rng = np.random.default_rng(0)
    names = {"head/kernel": "fc/weights", "head/bias": "fc/biases"}
    return {names.get(v.path, v.path): rng.normal(size=v.shape).astype("float32")
            for v in build_resnet(TINY_NET, classes, 16).variables}


def test_a_head_for_another_class_count_starts_fresh_and_everything_else_restores(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    values = their_values(5)
    prefix = write_tf1(values, tmp_path / "theirs" / "model.ckpt")
    ours = {v.path: v for v in build_resnet(TINY_NET, 10, 16).variables}
    fresh_head = {name: ours[name].numpy().copy() for name in ("head/kernel", "head/bias")}
    restore(ours, RestoreConfig(path=prefix, rules=TO_FC), tmp_path / "report.json")

    written = json.loads((tmp_path / "report.json").read_text())
    rows = {row["variable"]: row for row in written["variables"]}
    for name, key in (("head/kernel", "fc/weights"), ("head/bias", "fc/biases")):
        assert rows[name]["status"] == "skipped" and rows[name]["key"] == key
        assert rows[name]["reason"] == "class count: checkpoint 5, ours 10"
        assert rows[name]["found"][-1] == 5
        np.testing.assert_array_equal(ours[name].numpy(), fresh_head[name])  # untouched: not the checkpoint's
    assert "head/kernel starts fresh (class count: checkpoint 5, ours 10" in caplog.text
    assert "skipped (class count: checkpoint 5, ours 10)" in caplog.text  # the logged table
    assert written["unused_keys"] == ["fc/biases", "fc/weights"]
    others = [name for name in ours if not name.startswith("head/")]
    assert {rows[name]["status"] for name in others} == {"restored"}
    for name in others:
        np.testing.assert_array_equal(ours[name].numpy(), values[name], err_msg=name)


@pytest.mark.parametrize("name, shape, message", [
    ("fc/weights", (3, 5), r"head/kernel -> fc/weights \(shape mismatch \[3, 5\] vs ours \[64, 10\]\)"),
    ("stem/bn/gamma", (9,), r"stem/bn/gamma \(shape mismatch \[9\] vs ours \[8\]\)"),
])
def test_other_mismatches_still_stop_the_restore(tmp_path, name, shape, message):
    """A head that differs in more than its class count, or a last dimension outside the head, is a problem."""
    values = their_values(5)
    values[name] = np.zeros(shape, "float32")
    prefix = write_tf1(values, tmp_path / "model.ckpt")
    ours = {v.path: v for v in build_resnet(TINY_NET, 10, 16).variables}
    with pytest.raises(UserError, match=r"1 variable\(s\) cannot be restored.*" + message):
        restore(ours, RestoreConfig(path=prefix, rules=TO_FC), tmp_path / "report.json")


def test_a_dtype_mismatch_is_named_with_both_dtypes(tmp_path):
    values = their_values(10)
    values["stage1/block1/conv1/kernel"] = values["stage1/block1/conv1/kernel"].astype("float16")
    prefix = write_tf1(values, tmp_path / "model.ckpt")
    ours = {v.path: v for v in build_resnet(TINY_NET, 10, 16).variables}
    with pytest.raises(UserError, match=r"1 variable\(s\) cannot be restored") as error:
        restore(ours, RestoreConfig(path=prefix, rules=TO_FC), tmp_path / "report.json")
    assert "stage1/block1/conv1/kernel (dtype mismatch: checkpoint float16, ours float32)" in str(error.value)
    assert report_rows(tmp_path / "report.json")["stage1/block1/conv1/kernel"]["status"] == "dtype mismatch"


def report_rows(path):
    return {row["variable"]: row for row in json.loads(path.read_text())["variables"]}
