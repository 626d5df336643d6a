"""Multirun sweeps: job folders with summaries and HParams, failing jobs, named sweeps that resume, Optuna."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, STAGES, TINY, run_py



def summaries(sweep: Path):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def hparams_tags(run: Path):
    import tensorflow as tf

    return {value.tag for path in (run / "tensorboard").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}


@pytest.mark.slow
def test_two_by_two_sweep_in_parallel_processes(tmp_path, data_dir):
    result = run_py(["-m", "hydra/launcher=parallel", *TINY, STAGES, f"data_dir={data_dir}", "sweep=grid",
                     "network.width=0.125,0.25", "seed=0,1"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "multirun" / "grid"
    found = summaries(sweep)
    assert len(found) == 4
    for name, summary in found.items():
        assert summary["status"] == "finished" and summary["step"] == 6, name
        assert summary["best"]["loss"] == min(json.loads(line)["loss"] for line in
                                              (sweep / name / "metrics.jsonl").read_text().splitlines())
        assert f"network.width={name.split('network.width=')[1].split(',')[0]}" in summary["overrides"]
        assert {"_hparams_/session_start_info", "best/test_loss"} <= hparams_tags(sweep / name)
    assert "threads 1/auto" in result.stdout  # two jobs on two cores: one TensorFlow thread each

    from worklab import review

    csv_file = tmp_path / "sweep.csv"
    assert review.main([str(sweep), "--sort", "loss", "--csv", str(csv_file)]) == 0
    rows = list(__import__("csv").DictReader(csv_file.open()))
    assert len(rows) == 4
    best = min(found, key=lambda name: found[name]["best"]["loss"])
    assert rows[0]["run"].endswith(best) and float(rows[0]["loss"]) == pytest.approx(found[best]["best"]["loss"])


@pytest.mark.slow
def test_a_failing_job_is_marked_and_the_others_finish(tmp_path, data_dir):
    result = run_py(["-m", *TINY, STAGES, f"data_dir={data_dir}", "sweep=bad", "optimizer.lr=0.05,-1,0.01"],
                    tmp_path)
    assert result.returncode != 0
    found = summaries(tmp_path / "multirun" / "bad")
    statuses = {name.split("optimizer.lr=")[1].split(",")[0]: s["status"] for name, s in found.items()}
    assert statuses == {"0.05": "finished", "-1": "failed", "0.01": "finished"}
    failed = next(s for s in found.values() if s["status"] == "failed")
    assert "optimizer.lr=-1.0 must be a finite number greater than 0" in failed["error"]


@pytest.mark.slow
def test_named_sweep_killed_in_its_second_job_resumes_without_retraining_the_first(tmp_path, data_dir):
    args = [sys.executable, str(ROOT / "run.py"), "-m", *TINY, f"data_dir={data_dir}", "sweep=resumable",
            "schedule.stages=[{lr: 0.05, steps: 400}]", "schedule.save_every=20", "network.width=0.125,0.25"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    jobs_started = 0
    for line in proc.stdout:
        jobs_started += "run folder:" in line
        if jobs_started == 2 and "train step 40/" in line:
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=120) == -signal.SIGKILL
    sweep = tmp_path / "multirun" / "resumable"
    first = next(p for p in sweep.iterdir() if "network.width=0.125" in p.name)
    second = next(p for p in sweep.iterdir() if "network.width=0.25" in p.name)
    assert summaries(sweep)[first.name]["status"] == "finished"
    assert summaries(sweep)[second.name]["status"] == "running"  # killed: nobody could mark it
    first_checkpoints = {p.name: p.stat().st_mtime_ns for p in (first / "checkpoints").iterdir()}
    first_metrics = (first / "metrics.jsonl").read_text()

    relaunch = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (first / "checkpoints").iterdir()} == first_checkpoints
    assert (first / "metrics.jsonl").read_text() == first_metrics
    assert all(s["status"] == "finished" and s["step"] == 400 for s in summaries(sweep).values())
    resumed_from = [line for line in relaunch.stdout.splitlines() if "train steps" in line]
    assert len(resumed_from) == 1 and not resumed_from[0].split("train steps ")[1].startswith("1-")


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_names_the_best(tmp_path, data_dir):
    """Two Optuna trials over the learning rate (TINY fixes network.width, which leaves the search space)."""
    import yaml

    result = run_py(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY, STAGES,
                     f"data_dir={data_dir}", "sweep=search"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "multirun" / "search"
    found = summaries(sweep)
    assert len(found) == 2
    assert all(s["status"] == "finished" and s["step"] == 6 for s in found.values()), found
    rates = {name: next(float(o.split("=")[1]) for o in s["overrides"] if o.startswith("optimizer.lr="))
             for name, s in found.items()}
    assert len(set(rates.values())) == 2 and all(0.001 <= lr <= 0.3 for lr in rates.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(found, key=lambda name: found[name]["best"]["loss"])
    assert results["best_value"] == pytest.approx(found[best]["best"]["loss"])
    assert results["best_params"]["optimizer.lr"] == pytest.approx(rates[best])


@pytest.mark.parametrize("overrides, node, plugin", [
    (["hydra/launcher=parallel"], "hydra.launcher", "JoblibLauncher"),
    (["hydra/launcher=slurm"], "hydra.launcher", "SlurmLauncher"),
    (["hparams_search=optuna"], "hydra.sweeper", "OptunaSweeper"),
    (["experiment=demo_sweep"], "hydra.sweeper", "BasicSweeper"),
])
def test_launcher_sweeper_and_experiment_configs_compose_to_installed_plugins_and_real_keys(overrides, node, plugin):
    """Each config names a plugin the [test] extra installs, and every key it sweeps is a key of worklab's config.
    Optuna minimises what run.py's main returns, a loss."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    import worklab.hydra_edge  # noqa: F401  (registers the schemas and resolvers the configs name)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    target = OmegaConf.select(cfg, f"{node}._target_")
    assert target.rsplit(".", 1)[1] == plugin
    assert get_class(target)  # the plugin is installed and its class imports
    swept = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    assert bool(swept) == (plugin != "JoblibLauncher" and plugin != "SlurmLauncher")
    for key in swept:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    if plugin == "OptunaSweeper":  # run.py's main returns each job's best loss
        assert cfg.hydra.sweeper.direction == "minimize" and 'return best["loss"]' in (ROOT / "run.py").read_text()
    if overrides == ["experiment=demo_sweep"]:
        assert cfg.sweep  # a named sweep, which a relaunch resumes
