"""run.py end to end in a subprocess on the tiny demo set: the run folder, resume, interrupts, bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, STAGES, TINY, run_py



@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """One finished fixed-schedule run: stages of 4 and 2 steps, tested after each."""
    cwd = tmp_path_factory.mktemp("cwd")
    run = cwd / "run"
    result = run_py([*TINY, STAGES, f"data_dir={data_dir}", f"hydra.run.dir={run}"], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return run, result


def metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fixed_schedule_fills_the_run_folder(finished):
    run, result = finished
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "run.log").is_file()
    assert json.loads((run / "classes.json").read_text())["classes"][0] == "checker"
    lines = metrics(run)
    assert [line["step"] for line in lines] == [4, 6]  # a test after each stage
    assert [line["lr"] for line in lines] == pytest.approx([0.05, 0.005])
    assert all({"loss", "accuracy", "top_k_accuracy", "f1_macro"} <= line.keys() for line in lines)
    evaluation = json.loads((run / "evaluations" / "step-000006.json").read_text())
    assert evaluation["count"] == 30 and len(evaluation["confusion"]) == 10
    assert sum(map(sum, evaluation["confusion"])) == 30
    assert {p.name for p in (run / "checkpoints").glob("ckpt-*.index")} == {"ckpt-4.index", "ckpt-6.index"}
    for kind in ("train", "test"):
        assert list((run / "tensorboard" / kind).glob("events.out.tfevents.*")), kind
    assert "test step 6 loss" in result.stdout


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_nothing_more(finished, data_dir):
    run, _ = finished
    before = (run / "metrics.jsonl").read_text()
    result = run_py([f"resume={run}"], run.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run / "metrics.jsonl").read_text() == before
    assert "train steps" not in result.stdout


@pytest.mark.slow
def test_test_schedule_evaluates_a_chosen_checkpoint(finished):
    run, _ = finished
    job, before = run.parent / "test-job", (run / "metrics.jsonl").read_text()
    result = run_py(["schedule=test", "schedule.step=4", f"resume={run}", f"hydra.run.dir={job}"], run.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test step 4 loss" in result.stdout
    assert [line["step"] for line in metrics(job)] == [4]  # the results go to the job's own folder
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_sigint_saves_and_resume_continues_at_the_next_step_with_the_same_rate(tmp_path, data_dir):
    run = tmp_path / "run"
    args = [*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", "schedule.save_every=1000",
            "schedule.stages=[{lr: 0.05, steps: 3000}, {lr: 0.005, steps: 2}]"]
    env_cmd = [sys.executable, str(ROOT / "run.py"), *args]
    proc = subprocess.Popen(env_cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "train step 10/" in line:
            proc.send_signal(signal.SIGINT)
            break
    output = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, output
    steps = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert len(steps) == 1 and 10 <= steps[0] < 3000
    assert "continue with: python run.py resume=" in output

    result = run_py([f"resume={run}", "schedule.stages=[{lr: 0.05, steps: " + str(steps[0] + 4) + "}, "
                     "{lr: 0.005, steps: 2}]"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"train steps {steps[0] + 1}-{steps[0] + 4} at learning rate 0.05" in result.stdout
    assert [line["step"] for line in metrics(run)] == [steps[0] + 4, steps[0] + 6]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    run = tmp_path / "run"
    result = run_py([*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", "optimizer=sgd",
                     "schedule.save_every=1", "schedule.stages=[{lr: 1e30, steps: 10}]"], tmp_path)
    assert result.returncode == 1  # a failed run, not bad input
    assert "became NaN or infinite at step 2" in result.stdout
    assert "the last good checkpoint is step 1" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert [p.name for p in (run / "checkpoints").glob("ckpt-*.index")] == ["ckpt-1.index"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "NaN or infinite" in summary["error"]


SCHEDULES = "schedule: bit, calibrate, cosine, export, fixed, hyper, inspect, patience, predict, recalibrate, test, train, watch"


@pytest.mark.parametrize("flags, shown", [(["--help"], SCHEDULES), (["--cfg", "job"], "kind: resnet")])
def test_help_and_cfg_answer_without_importing_tensorflow(tmp_path, flags, shown):
    args = ["-X", "importtime", str(ROOT / "run.py"), *flags]
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "hydra" in imported and "tensorflow" not in imported
    assert shown in result.stdout


def tags(folder: Path):
    import tensorflow as tf

    return {value.tag for path in folder.glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}


@pytest.mark.slow
def test_tensorboard_has_curves_inputs_and_confusion_matrix(finished):
    run, _ = finished
    assert {"loss", "accuracy", "lr", "images_per_second", "augmented_inputs"} <= tags(run / "tensorboard" / "train")
    assert {"loss", "accuracy", "top_k_accuracy", "f1_macro", "confusion_matrix"} <= tags(run / "tensorboard" / "test")
