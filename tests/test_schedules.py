"""Patience, hyper and watch: their decisions, and their state after a SIGKILL and a rerun."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_py, tiny


# A rate far too high for the tiny network: the test loss plateaus at once, so the
# schedule drops the rate twice and stops within about a hundred steps.
PLATEAU = ["schedule=patience", "optimizer.lr=0.5", "schedule.eval_every=5", "schedule.save_every=5",
           "schedule.log_every=5", "schedule.patience=2", "schedule.max_decays=2", "runtime.deterministic=true"]
HYPER = ["schedule=hyper", "schedule.param=optimizer.lr", "schedule.values=[0.000001,0.05,0.2,0.3]",
         "schedule.eval_every=5", "schedule.save_every=5", "schedule.log_every=5", "schedule.patience=1",
         "schedule.max_decays=1", "runtime.deterministic=true"]


def args(run: Path, data_dir: Path, extra):
    return [*tiny(extra), f"data_dir={data_dir}", f"hydra.run.dir={run}", *extra]


def read(path: Path):
    return json.loads(path.read_text())


def killed_then_rerun(run: Path, data_dir: Path, extra, marker: str, count: int = 1):
    """Start run.py, SIGKILL it after `marker` has appeared `count` times in its output, then rerun it."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args(run, data_dir, extra)], cwd=run.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = 0
    for line in proc.stdout:
        seen += marker in line
        if seen >= count:
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    result = run_py(args(run, data_dir, extra), run.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_patience_decays_reverts_and_stops_after_max_decays(tmp_path, data_dir):
    run = tmp_path / "run"
    result = run_py(args(run, data_dir, PLATEAU), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    state = read(run / "state.json")
    assert state["done"] and state["decays"] == 2
    assert state["lr"] == pytest.approx(0.5 * 0.1 * 0.1)
    assert result.stdout.count("reverting to step") == 2
    assert "did not improve on" in result.stdout and "(2/2)" in result.stdout
    assert "no improvement after 2 learning-rate drop(s): stopping" in result.stdout
    best = read(run / "best.json")
    assert best["step"] == state["best_step"] and best["loss"] == min(m["loss"] for m in metrics(run))
    kept = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert kept == sorted({state["best_step"], state["tested"]})  # the best and the latest


def metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_patience_killed_and_rerun_ends_as_an_uninterrupted_run(tmp_path, data_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_py(args(whole, data_dir, PLATEAU), tmp_path).returncode == 0
    killed_then_rerun(killed, data_dir, PLATEAU, "did not improve on", count=2)
    a, b = read(whole / "state.json"), read(killed / "state.json")
    for key in ("step", "best_step", "decays", "tested", "done"):
        assert a[key] == b[key], key
    assert a["lr"] == pytest.approx(b["lr"]) and a["best_loss"] == pytest.approx(b["best_loss"], rel=1e-4)
    steps = [m["step"] for m in metrics(killed)]
    assert steps == sorted(set(steps)) == [m["step"] for m in metrics(whole)]  # none lost, none twice


@pytest.mark.slow
def test_hyper_runs_values_in_order_and_stops_after_the_first_worse_one(tmp_path, data_dir):
    run = tmp_path / "run"
    result = run_py(args(run, data_dir, HYPER), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    state = read(run / "state.json")
    rows = state["results"]
    values = [0.000001, 0.05, 0.2, 0.3]
    assert [row["value"] for row in rows] == values[:len(rows)]  # in order
    losses = [row["loss"] for row in rows]
    # it stops at the first value that does not beat the best before it, and not earlier
    assert losses[-1] >= min(losses[:-1]) and all(losses[i] < min(losses[:i]) for i in range(1, len(rows) - 1))
    assert len(rows) < len(values)
    folders = sorted(p.name for p in run.iterdir() if p.name.startswith("optimizer.lr="))
    assert folders == sorted(row["folder"] for row in rows)
    assert all((run / row["folder"] / "best.json").is_file() for row in rows)
    order = [result.stdout.index(f"{row['folder']} best") for row in rows]
    assert order == sorted(order)
    best = min(rows, key=lambda row: row["loss"])
    assert [line for line in (run / "hyper.txt").read_text().splitlines() if line.endswith("<- best")] == \
        [line for line in (run / "hyper.txt").read_text().splitlines() if line.split()[0] == str(best["value"])]


@pytest.mark.slow
def test_hyper_killed_in_its_second_value_and_rerun_gives_the_same_table(tmp_path, data_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_py(args(whole, data_dir, HYPER), tmp_path).returncode == 0
    killed_then_rerun(killed, data_dir, HYPER, "test step", count=6)
    a, b = read(whole / "state.json")["results"], read(killed / "state.json")["results"]
    assert [(r["value"], r["step"]) for r in a] == [(r["value"], r["step"]) for r in b]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)


@pytest.mark.slow
def test_each_hyper_value_trains_as_a_run_of_its_own_would(tmp_path, data_dir):
    """The seed is applied again for every value: the second value ends as a plain run with that value ends."""
    import numpy as np
    import tensorflow as tf

    short = ["schedule.eval_every=4", "schedule.save_every=4", "schedule.max_steps=4", "runtime.deterministic=true"]
    search = run_py(args(tmp_path / "search", data_dir, ["schedule=hyper", "schedule.param=optimizer.lr",
                                                         "schedule.values=[0.05,0.02]", "schedule.hyper_patience=2",
                                                         *short]), tmp_path)
    assert search.returncode == 0, search.stdout + search.stderr
    alone = run_py(args(tmp_path / "alone", data_dir, ["schedule=patience", "optimizer.lr=0.02", *short]), tmp_path)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    a = tf.train.load_checkpoint(str(tmp_path / "search" / "optimizer.lr=0.02" / "checkpoints"))
    b = tf.train.load_checkpoint(str(tmp_path / "alone" / "checkpoints"))
    keys = [k for k in b.get_variable_to_shape_map() if k.startswith("model/")]
    assert keys
    for key in keys:
        np.testing.assert_allclose(a.get_tensor(key), b.get_tensor(key), rtol=1e-5, atol=1e-6, err_msg=key)


def test_bad_hyper_and_patience_settings_are_named_before_training(tmp_path, data_dir):
    """In this process (the config's checks, then hyper's of its key before any step); a watch of a folder that
    is not a run through run.py, exit 2 and nothing written."""
    from conftest import compose
    from worklab import app
    from worklab.errors import UserError
    from worklab.run import runfolder

    for extra, message in ((["schedule=hyper", "schedule.param=network.widht"], "schedule.param=network.widht"),
                           (["schedule=hyper", "schedule.values=[]"], "schedule.values is empty"),
                           (["schedule=hyper", "schedule.values=[1,2,1]"], "schedule.values repeats 1"),
                           (["schedule=patience", "schedule.eval_every=0"], "schedule.eval_every=0"),
                           (["schedule=patience", "schedule.patience=0"], "schedule.patience=0")):
        try:
            with pytest.raises(UserError, match=re.escape(message)):
                app.run(compose(extra, tmp_path / "run", data_dir))
        finally:
            runfolder.release(tmp_path / "run")
        assert not (tmp_path / "run" / "checkpoints").exists()
    result = run_py(args(tmp_path / "run", data_dir, ["schedule=watch", f"schedule.run={tmp_path}"]), tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not a run folder" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_watch_tests_every_checkpoint_in_order_and_a_restart_only_new_ones(tmp_path, data_dir):
    run = tmp_path / "run"
    train = ["schedule=train", "schedule.steps=120", "schedule.save_every=10", "schedule.keep=100"]
    trainer = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args(run, data_dir, train)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run / ".hydra" / "config.yaml").exists():
        time.sleep(0.1)
    watch = ["schedule=watch", f"schedule.run={run}", "schedule.poll=0.2", f"hydra.run.dir={tmp_path / 'w1'}"]
    first = run_py(watch, tmp_path)
    assert trainer.wait(timeout=300) == 0
    assert first.returncode == 0, first.stdout + first.stderr
    tested = [m["step"] for m in metrics(run / "watch")]
    assert tested == list(range(10, 121, 10))  # every checkpoint, in order, once
    assert read(run / "watch" / "ledger.json")["tested"] == tested

    more = run_py(args(run, data_dir, ["schedule=train", "schedule.steps=140", "schedule.save_every=10",
                                       "schedule.keep=100"]), tmp_path)
    assert more.returncode == 0, more.stdout + more.stderr
    second = run_py([*watch[:-1], f"hydra.run.dir={tmp_path / 'w2'}"], tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert [m["step"] for m in metrics(run / "watch")] == list(range(10, 141, 10))
    assert second.stdout.count("test step") == 2
