"""runtime.strategy=multi_worker: two worker processes on loopback ports train as one process does.

Every worker runs the same run.py command with its own TF_CONFIG and the same run folder.
The chief (worker 0) holds the lock and writes the run folder; worker 1 trains beside it,
takes part in every save into a temporary folder it removes, and logs to workers/.
Every case that starts a cluster of processes is marked slow; the default suite checks the
cluster's description and the refusals, and tests/test_distribute.py two replicas in one process.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Set

import numpy as np
import pytest

from conftest import ROOT, TINY, run_py
from test_distribute import MOMENTUM, RECIPE, assert_same_run, assert_same_state, checkpoint_values
from worklab import cluster
from worklab.errors import UserError

MULTI = ["runtime.strategy=multi_worker", "runtime.intra_op_threads=1"]


def tf_config(ports: List[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start_workers(args: List[str], cwd: Path, count: int = 2) -> List[subprocess.Popen]:
    """`python run.py ARGS` in `count` processes, one per worker of a loopback cluster."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return [subprocess.Popen([sys.executable, str(ROOT / "run.py"), *MULTI, *args], cwd=cwd, text=True,
                             env={**env, "TF_CONFIG": config}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for config in cluster.loopback(count)]


def finish(workers: List[subprocess.Popen], timeout: float = 600) -> List[subprocess.CompletedProcess]:
    done = []
    for worker in workers:
        out, err = worker.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(worker.args, worker.returncode, out, err))
    return done


def files(run: Path) -> Set[str]:
    """The files of a run folder, TensorBoard's (named by time, host and process) as `<folder>/events`."""
    return {re.sub(r"events\.out\.tfevents\..*", "events", str(p.relative_to(run))) for p in run.rglob("*")
            if p.is_file()}


def saves_left() -> List[str]:
    return [p.name for p in Path(tempfile.gettempdir()).glob("worklab-worker-save-*")]


# The cluster's description ------------------------------------------------------------------

@pytest.mark.parametrize("env, message", [
    ({}, "runtime.strategy=multi_worker needs its cluster: set TF_CONFIG"),
    ({"TF_CONFIG": "{cluster: 1"}, "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 0}})}, "TF_CONFIG has no cluster"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]}})}, "TF_CONFIG lacks this process's task"),
    ({"TF_CONFIG": tf_config([1, 2], 2)}, "TF_CONFIG's task {\"type\": 'worker', \"index\": 2} is not in its cluster"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker",
                                                                                    "index": 0}})},
     "TF_CONFIG's cluster names ps"),
    ({"SLURM_PROCID": "x", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n1"}, "SLURM_PROCID='x'"),
])
def test_a_missing_or_bad_cluster_is_named(monkeypatch, env, message):
    for name in ("TF_CONFIG", *cluster.SLURM_NEEDS):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        cluster.task()


@pytest.mark.parametrize("env, chief, index", [
    ({"TF_CONFIG": tf_config([1, 2], 0)}, True, 0),
    ({"TF_CONFIG": tf_config([1, 2], 1)}, False, 1),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                               "task": {"type": "worker", "index": 0}})}, False, 0),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                               "task": {"type": "chief", "index": 0}})}, True, 0),
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]"}, True, 0),
    ({"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]"}, False, 3),
])
def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch, env, chief, index):
    for name in ("TF_CONFIG", *cluster.SLURM_NEEDS):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    task = cluster.task()
    assert (task.chief, task.index) == (chief, index)


def test_slurm_variables_give_tensorflow_the_cluster_of_the_job_step(monkeypatch):
    from worklab.distribute import _resolver

    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "node[1-2]",
                        "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}.items():
        monkeypatch.setenv(name, value)
    resolver = _resolver()
    assert resolver.cluster_spec().as_dict() == {"worker": ["node1:8888", "node1:8889", "node2:8888", "node2:8889"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)


# Refused before anything is written ------------------------------------------------------------

@pytest.mark.parametrize("env, overrides, message", [
    ({}, [], "runtime.strategy=multi_worker needs its cluster: set TF_CONFIG"),
    ({"TF_CONFIG": "not json"}, [], "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": tf_config([1, 2], 0)}, ["schedule=hyper", "schedule.param=optimizer.lr",
                                            "schedule.values=[0.1]"], "schedule=hyper runs in one process"),
])
def test_a_refused_cluster_leaves_the_run_as_it_was(trained, monkeypatch, env, overrides, message):
    for name in ("TF_CONFIG", *cluster.SLURM_NEEDS):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    refused = run_py([f"resume={trained}", *MULTI, *overrides], trained.parent)
    assert refused.returncode == 2
    output = refused.stdout + refused.stderr
    assert message in output and "Traceback" not in output
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_batch_the_workers_cannot_share_is_refused_by_both_and_the_run_is_left_as_it_was(trained, tmp_path):
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    refused = finish(start_workers([f"resume={trained}", "reader.batch_size=9"], tmp_path))
    for worker in refused:
        output = worker.stdout + worker.stderr
        assert worker.returncode == 2, output[-3000:]
        assert "reader.batch_size=9 does not divide by the 2 replicas of runtime.strategy=multi_worker" in output
        assert "Traceback" not in output
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before
    assert not (trained / "workers").exists()


def test_a_cluster_must_name_its_shared_run_folder(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    refused = run_py([*TINY, f"data_dir={data_dir}", *MULTI], tmp_path)
    assert refused.returncode == 2
    assert "name the run folder every worker shares" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_run_of_a_cluster_is_read_without_one(trained, monkeypatch):
    for name in ("TF_CONFIG", *cluster.SLURM_NEEDS):
        monkeypatch.delenv(name, raising=False)
    done = run_py([f"resume={trained}", *MULTI, "schedule=inspect"], trained.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage1" in done.stdout + done.stderr  # the layer table of the run's network


def test_a_schedule_that_reads_a_run_runs_on_the_chief_alone(trained, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    done = run_py([f"resume={trained}", *MULTI, "schedule=inspect"], trained.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reads a run on the chief alone; nothing to do here" in done.stdout + done.stderr


# Two workers on loopback ports ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("recipe", [pytest.param(MOMENTUM, id="momentum"), pytest.param(RECIPE, id="adamw_clipped")])
def test_two_workers_train_test_and_save_as_one_process(tmp_path, data_dir, recipe):
    left = set(saves_left())
    one, two = tmp_path / "one", tmp_path / "two"
    done = run_py([*recipe, f"data_dir={data_dir}", f"hydra.run.dir={one}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    chief, worker = finish(start_workers([*recipe, f"data_dir={data_dir}", f"hydra.run.dir={two}"], tmp_path))
    assert chief.returncode == 0 and worker.returncode == 0, chief.stderr[-3000:] + worker.stderr[-3000:]

    assert_same_run(two, one)  # weights, reported train losses and tests
    # The chief wrote the run folder once: what one process writes, and the other worker's log.
    assert files(two) - files(one) == {"workers/worker-1.log"} and files(one) - files(two) == set()
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 2
    assert "2 replicas of 4 images each" in (two / "run.log").read_text()
    assert "train step 6/6" in (two / "workers" / "worker-1.log").read_text()
    assert set(saves_left()) == left  # the worker's own saves are gone


def wait_for_checkpoint(run: Path, step: int, workers: List[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not (run / "checkpoints" / f"ckpt-{step}.index").is_file():
        assert time.time() < deadline and all(w.poll() is None for w in workers), "no checkpoint came"
        time.sleep(0.2)


LONG = [*TINY, "schedule.stages=[{lr: 0.01, steps: 30}, {lr: 0.001, steps: 30}]", "schedule.save_every=10",
        "schedule.log_every=10"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_stopped_worker_and_a_relaunch_end_as_an_uninterrupted_run(tmp_path, data_dir, how):
    """SIGTERM to worker 1 stops both workers after the same step, saved; SIGKILL makes the chief fail with a
    clear message. Either way both started again finish as a run that was never stopped."""
    args = [*LONG, f"data_dir={data_dir}"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    done = finish(start_workers([*args, f"hydra.run.dir={whole}"], tmp_path))
    assert [d.returncode for d in done] == [0, 0], done[0].stderr[-3000:]

    workers = start_workers([*args, f"hydra.run.dir={run}"], tmp_path)
    wait_for_checkpoint(run, 20, workers)
    workers[1].send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    chief, worker = finish(workers)
    if how == "sigterm":
        assert (chief.returncode, worker.returncode) == (143, 143)
        assert "another worker of the cluster got SIGTERM" in chief.stdout + chief.stderr
    else:
        assert (chief.returncode, worker.returncode) == (1, -signal.SIGKILL)
        assert "lost contact with another worker of the cluster" in chief.stdout + chief.stderr
        assert "Traceback" not in chief.stdout + chief.stderr
    stopped = max(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert 20 <= stopped < 60

    again = finish(start_workers([*args, f"hydra.run.dir={run}"], tmp_path))
    assert [d.returncode for d in again] == [0, 0], again[0].stderr[-3000:]
    assert f"restored {run}/checkpoints/ckpt-{stopped}" in again[0].stdout + again[0].stderr
    np.testing.assert_equal(checkpoint_values(run)["step/.ATTRIBUTES/VARIABLE_VALUE"], 60)
    assert_same_state(checkpoint_values(run), checkpoint_values(whole))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in expected]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in expected], rel=1e-4)


@pytest.mark.slow
def test_patience_decides_alike_on_two_workers_and_in_one_process(tmp_path, data_dir):
    """Patience reads its evaluations back and reverts to its best checkpoint: the other worker reads the
    chief's checkpoints and its own evaluations, and takes every decision the chief takes."""
    plateau = [*TINY, f"data_dir={data_dir}", "schedule=patience", "optimizer.lr=0.5", "schedule.eval_every=4",
               "schedule.save_every=4", "schedule.log_every=4", "schedule.patience=1", "schedule.max_decays=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    done = run_py([*plateau, f"hydra.run.dir={one}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    chief, worker = finish(start_workers([*plateau, f"hydra.run.dir={two}"], tmp_path))
    assert chief.returncode == 0 and worker.returncode == 0, chief.stderr[-3000:] + worker.stderr[-3000:]

    assert "reverting to step" in (one / "run.log").read_text()  # the case reverts at least once
    expected, found = (json.loads((run / "best.json").read_text()) for run in (one, two))
    assert found["step"] == expected["step"] and found["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    steps = [[(r["step"], r["split"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
             for run in (one, two)]
    assert steps[0] == steps[1]
    assert "best: step" in (two / "workers" / "worker-1.log").read_text()
    assert_same_state(checkpoint_values(two), checkpoint_values(one))
