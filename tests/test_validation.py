"""A validation set for every decision: the split, decisions made on it, and the test reported apart."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import compose, one_device
from worklab import runtime
from worklab.data.imagelist import ImageList
from worklab.data.split import hold_out, split
from worklab.errors import UserError
from worklab.interrupt import StopRequest
from worklab.run import runfolder
from worklab.run.parts import Parts
from worklab.run.session import checkpoint_path, model_key
from worklab.schedules import fixed, patience, test
from worklab.train.stats import evaluation_statistics

CLASSES = ["a", "b", "c"]


def listed(counts):
    """An image list with counts[c] images of class c, paths named after their class."""
    paths, labels = [], []
    for label, count in enumerate(counts):
        paths += [f"/data/{CLASSES[label]}/{i:03d}.jpg" for i in range(count)]
        labels += [label] * count
    return ImageList("train.json", paths, labels)


def test_the_split_is_stratified_disjoint_whole_and_seeded():
    images = listed([40, 10, 3])
    held = hold_out(images, CLASSES, 0.1, seed=0)
    train, val = split(images, held)
    per_class = {name: sum(1 for p in val.paths if f"/{name}/" in p) for name in CLASSES}
    assert per_class == {"a": 4, "b": 1, "c": 1}  # round(0.1 n), at least one
    assert set(train.paths).isdisjoint(val.paths) and sorted(train.paths + val.paths) == sorted(images.paths)
    assert [label for p, label in zip(val.paths, val.labels)] == [CLASSES.index(p.split("/")[2]) for p in val.paths]
    assert hold_out(images, CLASSES, 0.1, seed=0) == held
    assert hold_out(images, CLASSES, 0.1, seed=1) != held


def test_a_class_left_without_training_images_is_refused():
    with pytest.raises(UserError, match=r"reader.val_split=0.5 leaves class 'c' no training image: it has 1"):
        hold_out(listed([4, 4, 1]), CLASSES, 0.5, seed=0)


def lock(cfg):
    runtime.configure(cfg.runtime, cfg.seed)
    runfolder.lock(cfg.run_dir)


def test_the_split_is_saved_and_a_resumed_run_keeps_it(tmp_path, data_dir):
    cfg = compose(["reader.val_split=0.25"], tmp_path / "run", data_dir)
    lock(cfg)
    try:
        first = Parts(cfg, StopRequest(), one_device())
        val = list(first.inputs.val_images.paths)
        assert len(val) == 10 and set(val).isdisjoint(first.inputs.train_images.paths)  # 1 of 4 per class, 10 classes
        saved = json.loads((tmp_path / "run" / "split.json").read_text())
        assert sorted(saved["val"]) == sorted(val)
        again = Parts(cfg, StopRequest(), one_device())
        assert list(again.inputs.val_images.paths) == val
        assert list(again.inputs.train_images.paths) == list(first.inputs.train_images.paths)
        other = compose(["reader.val_split=0.5"], tmp_path / "run", data_dir)
        with pytest.raises(UserError, match="this run was validated on the split of val_split=0.25"):
            Parts(other, StopRequest(), one_device()).inputs.val_images
    finally:
        runfolder.release(cfg.run_dir)


@pytest.mark.parametrize("overrides, message", [
    (["reader.val_split=1"], r"reader.val_split=1.0 must be in \[0, 1\)"),
    (["reader.val_split=0.1", "reader.val=x.json"], "give one validation set, not both"),
])
def test_bad_validation_settings_are_refused(tmp_path, data_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        compose(overrides, tmp_path / "run", data_dir)


def test_a_validation_list_with_a_class_the_training_list_lacks_is_refused(tmp_path, data_dir):
    """Refused as the lists are read, before anything is built."""
    image, val = tmp_path / "unicorn.png", tmp_path / "val.json"
    Image.new("RGB", (16, 16)).save(image)  # its own image: the demo set may not be drawn yet when this case runs
    val.write_text(json.dumps({str(image): "unicorn"}))
    cfg = compose([f"reader.val={val}"], tmp_path / "run", data_dir)
    with pytest.raises(UserError, match=f"Image list {val}: 1 label.* not in the class map.*'unicorn'"):
        Parts(cfg, StopRequest(), one_device()).inputs.val_images


class Scripted:
    """A Tester whose loss at each global step is given: what a validation or test set would say."""

    def __init__(self, parts, losses, seen=None):
        self.parts, self.losses, self.seen, self.batches = parts, losses, seen, 1

    def evaluate(self, on_batch=None, temperature=1.0):
        step = int(self.parts.step.numpy())
        if self.seen is not None:
            self.seen.append(self.parts.model.get_layer("head").kernel.numpy().copy())
        loss = self.losses[step] if self.seen is None else self.losses
        return {**evaluation_statistics(np.array([0, 1]), np.eye(2), np.zeros(2)),  # the rest of a real record
                "loss": loss, "accuracy": 1.0 - loss, "top_k": 5, "top_k_accuracy": 1.0, "f1_macro": 0.5,
                "count": 10, "confusion": [[1, 0], [0, 1]]}


PATIENCE = ["schedule=patience", "schedule.eval_every=2", "schedule.max_steps=8", "schedule.patience=10",
            "schedule.log_every=2", "schedule.save_every=2", "schedule.keep=4", "optimizer.lr=0.01"]
VAL_LOSSES = {2: 0.5, 4: 0.3, 6: 0.4, 8: 0.6}
TEST_LOSSES = {2: 0.5, 4: 0.6, 6: 0.2, 8: 0.7}


def run_patience(cfg, test_losses):
    lock(cfg)
    try:
        parts = Parts(cfg, StopRequest(), one_device())
        seen = []
        parts.__dict__["tester"] = Scripted(parts, test_losses, seen if parts.inputs.has_validation else None)
        parts.__dict__["validator"] = Scripted(parts, VAL_LOSSES)
        return patience.run(parts), seen
    finally:
        runfolder.release(cfg.run_dir)


def test_patience_chooses_on_validation_and_tests_the_chosen_step_once(tmp_path, data_dir, caplog, small_network):
    with caplog.at_level(logging.INFO):
        plain, _ = run_patience(compose([*PATIENCE, *small_network], tmp_path / "plain", data_dir), TEST_LOSSES)
    assert plain["step"] == 6 and plain["split"] == "test" and "test" not in plain  # no validation: test decides
    assert "decisions (best step, rate drops, best value) are made on the test set" in caplog.text

    run = tmp_path / "validated"
    best, seen = run_patience(compose([*PATIENCE, *small_network, "reader.val_split=0.25"], run, data_dir), 0.6)
    assert best["step"] == 4 and best["split"] == "val" and best["loss"] == 0.3  # not step 6, test's favourite
    assert best["test"]["loss"] == 0.6 and json.loads((run / "best.json").read_text())["test"]["loss"] == 0.6
    assert len(seen) == 1  # the test set, once, on the weights of the chosen checkpoint
    stored = tf.train.load_checkpoint(str(checkpoint_path(run, 4)))
    np.testing.assert_array_equal(seen[0], stored.get_tensor(model_key("head/kernel")))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(2, "val"), (4, "val"), (6, "val"), (8, "val"), (4, "test")]
    assert json.loads((run / "evaluations" / "step-000004.json").read_text())["split"] == "test"
    assert sorted(p.name for p in (run / "evaluations" / "val").iterdir()) == \
        [f"step-{s:06d}.json" for s in (2, 4, 6, 8)]


@pytest.mark.slow
def test_fixed_tests_stages_on_validation_and_the_test_set_at_the_end(tmp_path, data_dir, caplog):
    cfg = compose(["reader.val_split=0.25", "schedule.stages=[{lr: 0.05, steps: 2}, {lr: 0.01, steps: 2}]",
                   "schedule.log_every=2", "schedule.save_every=2"], tmp_path / "run", data_dir)
    lock(cfg)
    try:
        parts = Parts(cfg, StopRequest(), one_device())
        result = fixed.run(parts)
    finally:
        runfolder.release(cfg.run_dir)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(2, "val"), (4, "val"), (4, "test")]
    assert result["split"] == "test" and result["count"] == 30  # the whole test set
    validated = json.loads((tmp_path / "run" / "evaluations" / "val" / "step-000004.json").read_text())
    assert validated["count"] == 10

    reading = compose(["reader.val_split=0.25", "schedule=test", "schedule.split=val"], tmp_path / "run", data_dir)
    again = test.run(Parts(reading, StopRequest(), one_device()))
    assert (again["split"], again["count"]) == ("val", 10)  # the saved split, read back by a later test
    assert again["loss"] == pytest.approx(validated["loss"], rel=1e-5)
    with pytest.raises(UserError, match="schedule.split=val: .* has no validation set"):
        cfg = compose(["schedule=test", "schedule.split=val"], tmp_path / "run", data_dir)
        test.run(Parts(cfg, StopRequest(), one_device()))


@pytest.mark.slow  # the patience case checks the line by default
def test_without_validation_the_log_says_the_test_set_decides(tmp_path, data_dir, caplog):
    cfg = compose(["schedule.stages=[{lr: 0.05, steps: 2}]", "schedule.log_every=2", "schedule.save_every=2"],
                  tmp_path / "run", data_dir)
    lock(cfg)
    try:
        with caplog.at_level(logging.INFO):
            fixed.run(Parts(cfg, StopRequest(), one_device()))
    finally:
        runfolder.release(cfg.run_dir)
    assert "decisions (best step, rate drops, best value) are made on the test set" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(2, "test")]


@pytest.mark.slow
def test_hyper_compares_values_on_validation_and_shows_each_test_apart(tmp_path, data_dir, monkeypatch):
    """Scripted losses that rank the two values one way on validation and the other way on the test set: the
    search takes validation's choice and reports that value's test result beside it."""
    from worklab import app

    scripts = {0.05: ({2: 0.3, 4: 0.4}, 0.9), 0.01: ({2: 0.5, 4: 0.6}, 0.1)}  # value: (val losses, test loss)
    tested = []
    run_patience = patience.run

    def scripted(parts):
        val, test_loss = scripts[parts.cfg.optimizer.lr]
        parts.__dict__["validator"] = Scripted(parts, val)
        parts.__dict__["tester"] = Scripted(parts, test_loss, tested)
        return run_patience(parts)

    monkeypatch.setattr(patience, "run", scripted)  # as hyper calls it for each value
    run = tmp_path / "run"
    app.run(compose(["schedule=hyper", "schedule.param=optimizer.lr", "schedule.values=[0.05,0.01]",
                     "schedule.hyper_patience=2", "schedule.eval_every=2", "schedule.save_every=2",
                     "schedule.log_every=2", "schedule.patience=5", "schedule.max_decays=0", "schedule.max_steps=4",
                     "reader.val_split=0.25"], run, data_dir))
    assert len(tested) == 2  # each value's test set once, at its chosen step
    header, *rows = (run / "hyper.txt").read_text().splitlines()
    assert header.split() == ["optimizer.lr", "val", "loss", "accuracy", "step", "test", "loss"]
    bests = {value: json.loads((run / f"optimizer.lr={value}" / "best.json").read_text()) for value in (0.05, 0.01)}
    for value, (val, test_loss) in scripts.items():
        assert (bests[value]["split"], bests[value]["step"], bests[value]["loss"]) == ("val", 2, val[2])
        assert bests[value]["test"]["loss"] == test_loss
    assert [(float(row.split()[0]), float(row.split()[1]), float(row.split()[4])) for row in rows] == \
        [(0.05, 0.3, 0.9), (0.01, 0.5, 0.1)]
    assert [row.endswith("<- best") for row in rows] == [True, False]  # validation's choice, not the test set's
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["best"]["split"], summary["best"]["loss"]) == ("val", 0.3)
    assert summary["test"]["loss"] == 0.9
