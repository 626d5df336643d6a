"""Faults a long run meets, end to end through run.py: SIGTERM, a double Ctrl-C, SIGKILL at random
moments, a loss that blows up under patience, patience's max_steps, and a resume at a lower rate.

Each case checks what a user would check afterwards: the exit code, the files of the run
folder (checkpoints, summary.json, state.json, best.json, metrics.jsonl) and the weights.
Every case here starts run.py more than once and is marked slow; the default suite stops a
run by SIGTERM in process and resumes it in tests/test_session.py.
"""
from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from conftest import ROOT, STAGES, run_py, tiny


# PLATEAU of test_schedules.py: a rate far too high, so patience drops it twice and stops near step 90.
PLATEAU = ["schedule=patience", "optimizer.lr=0.5", "schedule.eval_every=5", "schedule.save_every=5",
           "schedule.log_every=5", "schedule.patience=2", "schedule.max_decays=2", "runtime.deterministic=true"]
# Patience that tests at 5 and stops there; a resume from checkpoint 5 applies that saved test again.
FIRST_TEST = ["schedule=patience", "schedule.eval_every=5", "schedule.save_every=5", "schedule.log_every=1",
              "schedule.max_steps=5", "runtime.deterministic=true"]


def args(run: Path, data_dir: Path, extra: List[str]) -> List[str]:
    return [*tiny(extra), f"data_dir={data_dir}", f"hydra.run.dir={run}", *extra]


def read(path: Path):
    return json.loads(path.read_text())


def metrics(run: Path) -> List[Dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def saved_steps(run: Path) -> List[int]:
    """The steps of the checkpoints the run folder's index lists (a resume starts from the last)."""
    text = (run / "checkpoints" / "checkpoint").read_text()
    return sorted(int(n) for n in re.findall(r'^all_model_checkpoint_paths: "ckpt-(\d+)', text, re.MULTILINE))


def checkpoint(run: Path) -> Dict[str, np.ndarray]:
    """The latest checkpoint's values by key: every model variable, the step, the input position and the rate."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "step/", "examples/", "lr/"))}


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = checkpoint(a), checkpoint(b)
    assert x.keys() == y.keys() and any(key.startswith("model/") for key in x)
    for key in x:
        np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-6, err_msg=key)


class Running:
    """run.py in the background, its output (stdout and stderr together) read line by line by a thread."""

    def __init__(self, run: Path, data_dir: Path, extra: List[str]):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args(run, data_dir, extra)],
                                     cwd=run.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, *markers: str, timeout: float = 240) -> bool:
        """Read until each marker has appeared in a line, in order; False if the output ended first."""
        deadline = time.monotonic() + timeout
        pending = list(markers)
        while pending:
            line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                self._queue.put(None)
                return False
            self.lines.append(line)
            if pending[0] in line:
                pending.pop(0)
        return True

    def finish(self, timeout: float = 240):
        """Wait for the process to end; its exit code and whole output."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return code, "".join(self.lines)


@pytest.mark.slow
def test_sigterm_mid_stretch_saves_and_a_rerun_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, data_dir):
    train = ["schedule=train", "schedule.steps=80", "schedule.save_every=1000", "schedule.log_every=2",
             "runtime.deterministic=true"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    result = run_py(args(whole, data_dir, train), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    running = Running(stopped, data_dir, train)
    assert running.wait_for("] train step "), "".join(running.lines)
    running.proc.send_signal(signal.SIGTERM)
    code, output = running.finish()
    assert code == 143, output
    found = re.search(r"stopped at step (\d+)(?: with a checkpoint saved|; the last checkpoint is step (\d+))",
                      output)
    assert found, output
    step = int(found[1])
    assert 0 < step < 80, "SIGTERM came after the run had finished"
    assert saved_steps(stopped) == [int(found[2] or step)] == [step]  # saved because of the signal alone
    assert int(checkpoint(stopped)["step/.ATTRIBUTES/VARIABLE_VALUE"]) == step
    summary = read(stopped / "summary.json")
    assert summary["status"] == "interrupted" and summary["step"] == step

    again = run_py(args(stopped, data_dir, train), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"train steps {step + 1}-80 " in again.stdout
    assert saved_steps(stopped)[-1] == 80 and read(stopped / "summary.json")["status"] == "finished"
    assert_same_weights(whole, stopped)


@pytest.mark.slow
def test_two_quick_ctrl_c_stop_at_once_without_a_traceback_and_a_rerun_resumes(tmp_path, data_dir):
    train = ["schedule=train", "schedule.steps=200", "runtime.deterministic=true"]  # saves every 4 steps
    run = tmp_path / "run"
    running = Running(run, data_dir, train)
    assert running.wait_for("saved checkpoint", "] train step "), "".join(running.lines)
    running.proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    running.proc.send_signal(signal.SIGINT)
    code, output = running.finish()
    assert "Traceback" not in output
    assert read(run / "summary.json")["status"] == "interrupted"
    last = saved_steps(run)[-1]
    assert last < 200

    again = run_py(args(run, data_dir, train), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"ckpt-{last}: step {last}" in again.stdout and f"train steps {last + 1}-200 " in again.stdout
    assert saved_steps(run)[-1] == 200 and read(run / "summary.json")["status"] == "finished"
    # last, so that what the folder holds is checked whichever way the stop went
    assert code == 130, f"exit status {code} after two quick Ctrl-C:\n{output}"


@pytest.mark.slow
def test_patience_counts_a_nan_training_loss_as_a_failed_test_and_goes_back_at_a_lower_rate(tmp_path, data_dir):
    """A first good test at 5, then a resume at a rate that makes the training loss NaN within a few steps."""
    run = tmp_path / "run"
    first = run_py(args(run, data_dir, [*FIRST_TEST, "optimizer=sgd", "optimizer.lr=0.05"]), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    huge, factor = 1e10, 1e-11
    result = run_py([f"resume={run}", f"optimizer.lr={huge}", f"schedule.factor={factor}", "schedule.max_steps=null",
                     "schedule.patience=1", "schedule.max_decays=1"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"training loss became NaN or infinite at step \d+: counted as a failed test", result.stdout)
    assert "reverting to step 5, learning rate 1e+10 -> 0.1" in result.stdout
    assert re.search(r"counted as a failed test\n.*restored \S+/ckpt-5: step \d+\n.*reverting to step 5",
                     result.stdout)  # the weights of step 5 are back
    state = read(run / "state.json")
    assert state["done"] and state["decays"] == 1
    assert state["lr"] == pytest.approx(huge * factor ** state["decays"])
    assert read(run / "best.json")["step"] == state["best_step"]
    assert all(np.isfinite(value).all() for value in checkpoint(run).values())
    assert all(m["lr"] == pytest.approx(huge * factor) for m in metrics(run) if m["step"] > 5)
    assert read(run / "summary.json")["status"] == "finished"


@pytest.mark.slow
def test_patience_max_loss_drops_at_once_and_stops_after_max_decays(tmp_path, data_dir):
    """Tests at 5 and 10 with no limit, then a resume with a max_loss every later test exceeds."""
    run = tmp_path / "run"
    first = run_py(args(run, data_dir, [*FIRST_TEST, "schedule.max_steps=10", "optimizer.lr=0.05"]), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    best = 5  # the state checkpoint 10 holds: step 10's test is decided again on the resume
    result = run_py([f"resume={run}", "schedule.max_loss=0.001", "schedule.max_steps=null", "schedule.patience=3",
                     "schedule.max_decays=1"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    decisions = [line.split("] ", 1)[1] for line in result.stdout.splitlines()
                 if "blew up" in line or "reverting" in line or "stopping" in line or "improve" in line]
    blew = r"test loss \d+\.\d+ blew up \(schedule\.max_loss=0\.001\)"
    assert len(decisions) == 4, decisions
    assert re.fullmatch(blew, decisions[0])  # the test of step 10, decided again under the new limit
    assert decisions[1] == f"reverting to step {best}, learning rate 0.05 -> 0.005"  # at once, not after 3
    assert re.fullmatch(blew, decisions[2])
    assert decisions[3] == "no improvement after 1 learning-rate drop(s): stopping"
    state = read(run / "state.json")
    assert state["done"] and state["decays"] == 1 and state["best_step"] == best
    assert state["lr"] == pytest.approx(0.005)
    assert [m["step"] for m in metrics(run)] == [5, 10, 15]
    assert read(run / "best.json")["step"] == best


@pytest.mark.slow
def test_patience_whose_first_test_blows_up_is_a_failed_run(tmp_path, data_dir):
    run = tmp_path / "run"
    result = run_py(args(run, data_dir, [*FIRST_TEST, "schedule.max_steps=null", "schedule.max_loss=0.001"]),
                    tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The first test (step 5) already blew up" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert read(run / "summary.json")["status"] == "failed"
    assert [m["step"] for m in metrics(run)] == [5]


@pytest.mark.slow
def test_patience_stops_at_max_steps_with_a_test_there_off_the_eval_cadence(tmp_path, data_dir):
    run = tmp_path / "run"
    extra = ["schedule=patience", "optimizer.lr=0.05", "schedule.eval_every=5", "schedule.save_every=5",
             "schedule.patience=10", "schedule.max_steps=12"]
    result = run_py(args(run, data_dir, extra), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [m["step"] for m in metrics(run)] == [5, 10, 12]
    state = read(run / "state.json")
    assert state["done"] and state["step"] == state["tested"] == 12
    assert saved_steps(run)[-1] == 12
    assert read(run / "summary.json")["status"] == "finished"


@pytest.mark.slow
def test_train_resumed_at_a_lower_rate_trains_and_saves_at_that_rate(tmp_path, data_dir):
    run = tmp_path / "run"
    first = run_py(args(run, data_dir, ["schedule=train", "schedule.steps=4", "optimizer.lr=0.05"]), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    result = run_py([f"resume={run}", "optimizer.lr=0.001", "schedule.steps=8"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train steps 5-8 at learning rate 0.001" in result.stdout
    values = checkpoint(run)
    assert values["step/.ATTRIBUTES/VARIABLE_VALUE"] == 8
    assert values["lr/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.001)


@pytest.mark.slow
def test_patience_resumed_with_another_rate_goes_on_at_that_rate(tmp_path, data_dir):
    run = tmp_path / "run"
    extra = ["schedule=patience", "optimizer.lr=0.05", "schedule.eval_every=2", "schedule.save_every=2",
             "schedule.patience=10", "schedule.max_steps=4"]
    first = run_py(args(run, data_dir, extra), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert read(run / "state.json")["lr"] == pytest.approx(0.05)
    result = run_py([f"resume={run}", "optimizer.lr=0.001", "schedule.max_steps=8"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    state = read(run / "state.json")
    assert state["step"] == 8 and state["lr"] == pytest.approx(0.001) and state["decays"] == 0
    assert {m["step"]: m["lr"] for m in metrics(run)} == pytest.approx({2: 0.05, 4: 0.05, 6: 0.001, 8: 0.001})
    assert "train steps 5-6 at learning rate 0.001" in result.stdout
    assert checkpoint(run)["lr/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.001)


@pytest.mark.slow
def test_fixed_resumed_at_the_end_of_stage_1_tests_it_and_trains_stage_2_at_its_rate(tmp_path, data_dir):
    """Stage 1 trained but not tested (as when stopped during its test), with a third rate in its checkpoint."""
    run = tmp_path / "run"
    first = run_py(args(run, data_dir, ["schedule=fixed", "schedule.stages=[{lr: 0.3, steps: 4}]"]), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert checkpoint(run)["lr/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.3)
    (run / "evaluations" / "step-000004.json").unlink()  # stopped during the test of step 4
    (run / "metrics.jsonl").unlink()
    result = run_py(args(run, data_dir, ["schedule=fixed", STAGES]), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train steps" not in result.stdout.split("stage 2/2", 1)[0]  # stage 1 is only tested
    assert "train steps 5-6 at learning rate 0.005" in result.stdout
    assert {m["step"]: m["lr"] for m in metrics(run)} == pytest.approx({4: 0.05, 6: 0.005})
    values = checkpoint(run)
    assert values["step/.ATTRIBUTES/VARIABLE_VALUE"] == 6
    assert values["lr/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.005)


@pytest.mark.slow
def test_patience_killed_at_random_moments_ends_as_an_uninterrupted_run(tmp_path, data_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    running = Running(whole, data_dir, PLATEAU)
    assert running.wait_for("] train step "), "".join(running.lines)
    started = time.monotonic()
    code, output = running.finish()
    assert code == 0, output
    training = time.monotonic() - started  # not asserted: it scales the moments to this machine's speed

    rng = random.Random(20261125)
    delays = [rng.uniform(0.05, 0.18) * training for _ in range(4)]  # together less than the whole run
    for delay in delays:
        running = Running(killed, data_dir, PLATEAU)
        assert running.wait_for("] train step "), "".join(running.lines)
        with pytest.raises(subprocess.TimeoutExpired):  # the run is still going when it is killed
            running.proc.wait(timeout=delay)
        running.proc.kill()
        code, output = running.finish()
        assert code == -signal.SIGKILL, output
    result = run_py(args(killed, data_dir, PLATEAU), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    steps = [m["step"] for m in metrics(killed)]
    assert steps == sorted(set(steps)) == [m["step"] for m in metrics(whole)]  # none lost, none twice
    a, b = read(whole / "state.json"), read(killed / "state.json")
    for key in ("best_step", "decays", "done", "tested"):
        assert a[key] == b[key], key
    assert a["lr"] == pytest.approx(b["lr"])
    assert read(whole / "best.json")["step"] == read(killed / "best.json")["step"]
    assert read(killed / "summary.json")["status"] == "finished"
    assert_same_weights(whole, killed)
