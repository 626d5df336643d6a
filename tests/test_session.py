"""Checkpoints in the run folder: resume continues exactly, checkpoints are readable by variable name."""
from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from conftest import compose
from worklab import app


def train(run_dir, data_dir, steps, *overrides):
    return app.run(compose(["schedule=train", f"schedule.steps={steps}", "schedule.save_every=2",
                            "runtime.deterministic=true", *overrides], run_dir, data_dir))


def checkpoint_values(run_dir):
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "step", "examples", "lr"))}


def test_a_run_stopped_and_rerun_ends_where_an_uninterrupted_run_ends(tmp_path, data_dir, caplog):
    """4 steps, then a rerun to 8, gives the weights, step and input position of 8 steps in one go."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(whole, data_dir, 8)["step"] == 8
    assert train(split, data_dir, 4)["step"] == 4
    caplog.set_level(logging.INFO)
    assert train(split, data_dir, 8)["step"] == 8
    assert "ckpt-4: step 4" in caplog.text and "train steps 5-8" in caplog.text
    a, b = checkpoint_values(whole), checkpoint_values(split)
    assert a.keys() == b.keys()
    assert a["examples/.ATTRIBUTES/VARIABLE_VALUE"] == b["examples/.ATTRIBUTES/VARIABLE_VALUE"] == 8 * 8
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_rerun_keeps_the_learning_rate_it_stopped_with(tmp_path, data_dir):
    run = tmp_path / "run"
    cfg = compose(["schedule.stages=[{lr: 0.03, steps: 2}, {lr: 0.003, steps: 6}]"], run, data_dir)
    cfg.schedule.stages[1].steps = 1  # stop early in stage 2, as an interrupted run would
    app.run(cfg)
    assert checkpoint_values(run)["lr/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.003)
    cfg.schedule.stages[1].steps = 6
    results = app.run(cfg)
    assert results["step"] == 8 and results["lr"] == np.float32(0.003)


def test_checkpoint_keys_are_readable_variable_names(tmp_path, data_dir):
    run = tmp_path / "run"
    train(run, data_dir, 2)
    keys = set(tf.train.load_checkpoint(str(run / "checkpoints")).get_variable_to_shape_map())
    assert "model/stem.Sconv.Skernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/stage4.Sblock1.Sshortcut.Sbn.Smoving_mean/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_keep_limits_the_checkpoints_on_disk(tmp_path, data_dir):
    run = tmp_path / "run"
    train(run, data_dir, 10, "schedule.keep=2")
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-10.index", "ckpt-8.index"]


def test_resume_with_a_different_network_is_a_clear_error(tmp_path, data_dir):
    import pytest

    from worklab.errors import UserError

    run = tmp_path / "run"
    train(run, data_dir, 2)
    with pytest.raises(UserError, match=r"ckpt-2 does not fit the configured network"):
        train(run, data_dir, 4, "network.width=0.25")


def test_checkpoints_a_live_watcher_has_not_tested_are_kept(tmp_path, data_dir):
    from worklab import watchers

    run = tmp_path / "run"
    run.mkdir()
    watchers.heartbeat(run)
    watchers.record_tested(run, 2)
    train(run, data_dir, 8, "schedule.keep=1")  # saves at 2, 4, 6, 8
    steps = lambda: sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert steps() == [4, 6, 8]  # 2 was tested; 4 and 6 wait for the watcher
    watchers.stop_heartbeat(run)  # a watcher that is gone pins nothing
    train(run, data_dir, 10, "schedule.keep=1")
    assert steps() == [10]
