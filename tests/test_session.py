"""Checkpoints in the run folder: resume continues exactly, also after SIGTERM, checkpoints are readable by
variable name. The cases share one uninterrupted run of 8 steps on conftest's small network, and copy it to change
it; the cases about the ResNet's variables read the session's trained run."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import compose
from worklab import app
from worklab.errors import Interrupted, RunFailed, UserError
from worklab.progress import Progress
from worklab.run import runfolder
from worklab.schedules import loop


def train(run_dir, data_dir, steps, *overrides):
    return app.run(compose(["schedule=train", f"schedule.steps={steps}", "schedule.save_every=2", "schedule.keep=2",
                            "runtime.deterministic=true", *overrides], run_dir, data_dir))


def checkpoint_values(run_dir):
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "step", "examples", "lr"))}


def steps_on_disk(run_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.index"))


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_dir, small_network):
    """8 steps in one go: checkpoints every 2 steps, the last 2 kept. On conftest's small network: how a run
    saves, stops and resumes does not depend on the network (the ResNet's keys: the session's trained run)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert train(run, data_dir, 8, *small_network)["step"] == 8
    return run


@pytest.fixture
def copied(whole, tmp_path):
    return Path(shutil.copytree(whole, tmp_path / "run"))


def sigterm_after(step: int):
    """A progress bar that sends this process SIGTERM once the first stretch has trained `step` steps."""
    sent = []

    class Sigterm(Progress):
        def update(self, current, values=None):
            super().update(current, values)
            if current >= step and not sent:
                sent.append(current)
                os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's StopRequest, as a `kill` would be
    return Sigterm


def test_a_run_stopped_by_sigterm_and_rerun_ends_where_an_uninterrupted_run_ends(whole, tmp_path, data_dir, caplog,
                                                                                monkeypatch, small_network):
    """SIGTERM at step 3 saves checkpoint 3 (the cadence alone would save none), and a rerun to 8 gives the
    weights, step and input position of 8 steps in one go."""
    split = tmp_path / "split"
    monkeypatch.setattr(loop, "Progress", sigterm_after(3))
    with pytest.raises(Interrupted) as stopped:
        train(split, data_dir, 8, "schedule.save_every=1000", *small_network)
    assert stopped.value.signum == signal.SIGTERM
    assert steps_on_disk(split) == [3]  # saved because of the signal
    summary = json.loads((split / "summary.json").read_text())
    assert (summary["status"], summary["step"]) == ("interrupted", 3)
    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    assert train(split, data_dir, 8, "schedule.save_every=1000", *small_network)["step"] == 8
    assert "ckpt-3: step 3" in caplog.text and "train steps 4-8" in caplog.text
    assert json.loads((split / "summary.json").read_text())["status"] == "finished"
    a, b = checkpoint_values(whole), checkpoint_values(split)
    assert a.keys() == b.keys()
    assert a["examples/.ATTRIBUTES/VARIABLE_VALUE"] == b["examples/.ATTRIBUTES/VARIABLE_VALUE"] == 8 * 8
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_rerun_keeps_the_learning_rate_it_stopped_with(tmp_path, data_dir):
    run = tmp_path / "run"
    cfg = compose(["schedule.stages=[{lr: 0.03, steps: 2}, {lr: 0.003, steps: 6}]"], run, data_dir)
    cfg.schedule.stages[1].steps = 1  # stop early in stage 2, as an interrupted run would
    app.run(cfg)
    assert checkpoint_values(run)["lr/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.003)
    cfg.schedule.stages[1].steps = 6
    results = app.run(cfg)
    assert results["step"] == 8 and results["lr"] == np.float32(0.003)


def test_checkpoint_keys_are_readable_variable_names(trained):
    keys = set(tf.train.load_checkpoint(str(trained / "checkpoints")).get_variable_to_shape_map())
    assert "model/stem.Sconv.Skernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/stage4.Sblock1.Sshortcut.Sbn.Smoving_mean/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_keep_limits_the_checkpoints_on_disk(whole):
    assert sorted(p.name for p in (whole / "checkpoints").glob("*.index")) == ["ckpt-6.index", "ckpt-8.index"]


def test_resume_with_a_different_network_names_the_variables_not_their_values(trained, tmp_path, data_dir):
    copied = Path(shutil.copytree(trained, tmp_path / "run"))  # the session's ResNet run, its checkpoint at step 2
    with pytest.raises(UserError, match=r"ckpt-2 does not fit the configured network: stem/conv/kernel has shape "
                                        r"\[7, 7, 3, 8\] there, \[7, 7, 3, 16\] here") as error:
        train(copied, data_dir, 10, "network.width=0.25")
    assert len(str(error.value)) < 600


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(copied, data_dir, monkeypatch, small_network):
    run = copied
    listed = (run / "checkpoints" / "checkpoint").read_text()

    def full(self, prefix, options=None):
        Path(f"{prefix}.data-00000-of-00001").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full)
    with pytest.raises(RunFailed, match=r"Saving checkpoint ckpt-10 .* failed: the disk is full\. The checkpoints "
                                        r"before it are intact \(latest: step 8\); free some space, then resume"):
        train(run, data_dir, 10, *small_network)
    assert (run / "checkpoints" / "checkpoint").read_text() == listed  # the index a resume starts from
    assert not list((run / "checkpoints").glob("ckpt-10*"))


def test_out_of_memory_says_which_settings_to_lower(tmp_path, data_dir, monkeypatch, small_network):
    from worklab.train.trainer import Trainer

    def oom(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(Trainer, "train", oom)
    with pytest.raises(RunFailed, match=r"out of memory at reader.image_size=16 and reader.batch_size=8: lower one"):
        train(tmp_path / "run", data_dir, 2, *small_network)


def test_a_folder_that_cannot_be_written_is_named_before_anything_runs():
    with pytest.raises(UserError, match=r"Cannot write in /proc/1"):
        runfolder.check_writable(Path("/proc/1"))


def test_low_disk_space_is_a_warning_with_the_sizes(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6,
                                                                                               10**6))
    caplog.set_level(logging.WARNING)
    runfolder.warn_if_disk_low(tmp_path, 5 * 10**6)
    assert "only 1.0 MB free" in caplog.text and "one checkpoint needs about 5.0 MB" in caplog.text


def test_checkpoints_a_live_watcher_has_not_tested_are_kept(tmp_path, data_dir, small_network):
    from worklab.run import watchers

    run = tmp_path / "run"
    run.mkdir()
    watchers.heartbeat(run)
    watchers.record_tested(run, 2)
    train(run, data_dir, 8, "schedule.keep=1", *small_network)  # saves at 2, 4, 6, 8
    steps = lambda: sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert steps() == [4, 6, 8]  # 2 was tested; 4 and 6 wait for the watcher
    watchers.stop_heartbeat(run)  # a watcher that is gone pins nothing
    train(run, data_dir, 10, "schedule.keep=1", *small_network)
    assert steps() == [10]


def test_a_run_config_reads_outside_the_job_that_wrote_it(tmp_path):
    from worklab.config.schedules import TestSchedule
    from worklab.run.run_config import load_run_config

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "run_dir: ${hydra:runtime.output_dir}\nnetwork: {depth: 34}\nschedule: {steps: 3}\n")
    cfg = load_run_config(tmp_path, TestSchedule(step=2))
    assert cfg.network.depth == 34 and cfg.run_dir == str(tmp_path) and cfg.schedule.step == 2
