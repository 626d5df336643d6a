"""The run folder as a safe unit of state: the lock, a damaged index or checkpoint, refused commands.

Each case starts from a small finished run and checks what a user would check: the exit
code, the message, and every file of the folder before and after. The cases that go on
training the run do it in this process (`train_here`), the others through run.py. The run
trains conftest's small network: what the folder does with its checkpoints does not depend
on the network; the cases that name the ResNet's keys read the session's trained run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY, compose, run_py, tiny
from conftest import train_here as saved_run

TRAIN = ["schedule=train", "schedule.save_every=2", "schedule.keep=5", "runtime.deterministic=true"]


def train(run: Path, data_dir: Path, steps: int, *extra):
    return run_py([*tiny(list(extra)), f"data_dir={data_dir}", f"hydra.run.dir={run}", *TRAIN,
                   f"schedule.steps={steps}", *extra], run.parent)


def train_here(run: Path, data_dir: Path, steps: int, caplog, network) -> str:
    """Go on training `run` (trained on `network`) to `steps` in this process, as `train` would; what it logged."""
    from worklab import app
    from worklab.run import runfolder

    caplog.clear()
    caplog.set_level(logging.INFO)
    try:
        app.run(compose([*TRAIN, *network, f"schedule.steps={steps}"], run, data_dir))
    finally:
        runfolder.release(run)
    return caplog.text


def contents(folder: Path):
    """Every file's bytes, by path: the folder byte for byte."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def index_names(run: Path):
    text = (run / "checkpoints" / "checkpoint").read_text()
    return [line.split('"')[1] for line in text.splitlines() if line.startswith("all_model")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir, small_network):
    """A train run of 6 steps with checkpoints at 2, 4 and 6 and the .hydra/ files of run.py, on the small network."""
    return saved_run(tmp_path_factory.mktemp("finished") / "run", data_dir,
                     [*TRAIN, *small_network, "schedule.steps=6"])


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, for a case to change."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def test_a_second_process_is_refused_and_names_the_holder(run, data_dir, small_network):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from worklab.run import runfolder; "
                               f"runfolder.lock({str(run)!r}); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = contents(run)
        result = train(run, data_dir, 8, *small_network)  # refused before TensorFlow starts
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"is in use by process {holder.pid} on" in result.stderr
        assert contents(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel dropped the killed holder's lock: the lock that refused the command is free again
    from worklab.run import runfolder

    runfolder.lock(run)
    runfolder.release(run)


@pytest.mark.slow
def test_two_runs_started_in_one_folder_at_once_do_not_mix(tmp_path, data_dir):
    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "run.py"), *TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", *TRAIN,
            "schedule.steps=40"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outputs
    assert any("is in use by" in err for _, err in outputs), outputs
    saved = [line for line in (run / "run.log").read_text().splitlines() if "saved checkpoint" in line]
    assert len(saved) == 20  # one writer: checkpoints 2, 4, ..., 40, each once


def test_a_missing_index_is_rebuilt_from_the_checkpoints_on_disk(run, data_dir, caplog, small_network):
    (run / "checkpoints" / "checkpoint").unlink()
    said = train_here(run, data_dir, 8, caplog, small_network)
    assert "checkpoint is missing: using the 3 complete checkpoint(s)" in said
    assert "restored" in said and "ckpt-6: step 6" in said and "train steps 7-8" in said
    assert index_names(run) == ["ckpt-2", "ckpt-4", "ckpt-6", "ckpt-8"]  # nothing overwritten or deleted


@pytest.mark.slow
def test_a_truncated_index_is_rebuilt_and_a_finished_run_stays_finished(run, data_dir, caplog, small_network):
    index = run / "checkpoints" / "checkpoint"
    index.write_bytes(index.read_bytes()[:30])
    assert "checkpoint is damaged" in train_here(run, data_dir, 6, caplog, small_network)
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_one_before_used(run, data_dir, caplog, small_network):
    data = next((run / "checkpoints").glob("ckpt-6.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    said = train_here(run, data_dir, 8, caplog, small_network)
    assert "checkpoint ckpt-6 cannot be read" in said and "trying the one before it" in said
    assert "ckpt-4: step 4" in said and "train steps 5-8" in said
    assert (run / "checkpoints" / "damaged" / data.name).is_file()
    assert index_names(run) == ["ckpt-2", "ckpt-4", "ckpt-6", "ckpt-8"]


@pytest.mark.slow
def test_a_deleted_newest_checkpoint_falls_back_to_the_one_before(run, data_dir, caplog, small_network):
    for file in (run / "checkpoints").glob("ckpt-6.*"):
        file.unlink()
    said = train_here(run, data_dir, 8, caplog, small_network)
    assert "lists checkpoints whose files are missing: ckpt-6" in said
    assert "ckpt-4: step 4" in said


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("network.depth=18", "network.depth: 10 in the run, 18 now"),
    ("reader.val_split=0.25", "made its decisions on another validation set: reader.val_split: 0.0 in the run, "
                              "0.25 now"),
])
def test_a_refused_resume_leaves_the_folder_byte_for_byte_and_names_the_key(trained, tmp_path, override, message):
    run = Path(shutil.copytree(trained, tmp_path / "run"))  # a ResNet run, whose depth the first case changes
    before = contents(run)
    result = run_py([f"resume={run}", override], run.parent)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert contents(run) == before
    again = run_py([f"resume={run}"], run.parent)  # the suggested plain resume still works
    assert again.returncode == 0, again.stdout + again.stderr


def test_test_schedule_with_another_width_is_refused_like_a_resume(trained, tmp_path):
    before = contents(trained)  # the session's ResNet run, which a refused command leaves as it was
    result = run_py(["schedule=test", f"resume={trained}", "network.width=0.25"], tmp_path)
    assert result.returncode == 2
    assert "network.width: 0.125 in the run, 0.25 now" in result.stderr
    assert contents(trained) == before


@pytest.mark.slow
def test_bad_input_found_after_the_job_started_is_undone(tmp_path, data_dir):
    """A list file that moved is found inside the job, after Hydra wrote .hydra/ and the log: all put back."""
    demo = next(data_dir.glob("demo-16px-*"))
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("train.json", "test.json"):
        entries = json.loads((demo / name).read_text())
        (lists / name).write_text(json.dumps({str(demo / path): label for path, label in entries.items()}))
    run = tmp_path / "run"
    first = run_py([*TINY, f"hydra.run.dir={run}", *TRAIN, "schedule.steps=2", "reader=json",
                    f"reader.train={lists / 'train.json'}", f"reader.test={lists / 'test.json'}"], tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (lists / "train.json").rename(lists / "moved.json")
    before = contents(run)
    result = run_py([f"resume={run}", "schedule.steps=4", "optimizer.lr=0.01"], tmp_path)
    assert result.returncode == 2 and "train.json does not exist" in result.stdout
    assert contents(run) == before


@pytest.mark.slow
def test_a_test_on_a_run_keeps_its_saved_config(run, data_dir):
    saved = contents(run / ".hydra")
    result = run_py(["schedule=test", f"resume={run}"], run.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert contents(run / ".hydra") == saved
    again = run_py([f"resume={run}", "schedule.steps=8"], run.parent)  # still a train run, not a test
    assert again.returncode == 0 and "train steps 7-8" in again.stdout


@pytest.mark.slow
def test_recalibrate_adds_a_checkpoint_and_changes_nothing_else(run, data_dir):
    checkpoints = contents(run / "checkpoints")
    config = contents(run / ".hydra")
    result = run_py(["schedule=recalibrate", "schedule.batches=2", f"resume={run}"], run.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    after = contents(run / "checkpoints")
    assert {k: v for k, v in after.items() if k in checkpoints and k != "checkpoint"} == \
        {k: v for k, v in checkpoints.items() if k != "checkpoint"}  # every checkpoint kept, none rewritten
    assert index_names(run) == ["ckpt-2", "ckpt-4", "ckpt-6_1"]
    assert contents(run / ".hydra") == config
    test = run_py(["schedule=test", f"resume={run}"], run.parent)
    assert "ckpt-6_1: step 6" in test.stdout


@pytest.mark.slow
def test_sigterm_while_building_says_no_checkpoint_exists(tmp_path, data_dir):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *TINY, f"data_dir={data_dir}",
                             f"hydra.run.dir={run}", *TRAIN, "schedule.steps=4"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "network:" in line:  # the model is being built: no step, no checkpoint yet
            proc.send_signal(signal.SIGTERM)
            break
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM
    assert "before any checkpoint was saved" in output and "with a checkpoint saved" not in output
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_files_follow_the_umask_and_the_terminal_has_no_native_log_lines(tmp_path, data_dir):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), *TINY, f"data_dir={data_dir}",
                             f"hydra.run.dir={run}", *TRAIN, "schedule.steps=2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "runtime: TensorFlow" in (run / "run.log").read_text()
    for name in ("summary.json", "classes.json", "checkpoints/checkpoint"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.slow
def test_run_name_gives_a_folder_that_the_same_command_continues(tmp_path, data_dir):
    command = [*TINY, f"data_dir={data_dir}", "run_name=baseline", *TRAIN, "schedule.steps=4"]
    first = run_py(command, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "outputs" / "baseline" / "checkpoints").is_dir()
    again = run_py(command, tmp_path)
    assert again.returncode == 0 and "ckpt-4: step 4" in again.stdout and "train steps" not in again.stdout
    longer = run_py([*command, "schedule.steps=6"], tmp_path)
    assert longer.returncode == 0 and "train steps 5-6" in longer.stdout
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["baseline"]


def test_predict_and_watch_refuse_resume_and_leave_the_run_alone(run):
    before = contents(run)
    for schedule in (["schedule=predict", f"schedule.run={run}", f"schedule.images={run}"],
                     ["schedule=watch", f"schedule.run={run}"]):
        result = run_py([*schedule, f"resume={run}"], run.parent)
        assert result.returncode == 2 and "drop resume=" in result.stderr, result.stdout + result.stderr
    assert contents(run) == before


@pytest.mark.slow
def test_a_watcher_stopped_by_sigterm_says_what_it_tested(run, tmp_path):
    (run / "summary.json").write_text(json.dumps({"status": "running"}))  # as if training went on
    watcher = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "schedule=watch", f"schedule.run={run}",
                                "schedule.poll=0.2", f"hydra.run.dir={tmp_path / 'w'}"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in watcher.stdout:
        if "test step 6" in line:  # every checkpoint tested; now it waits for more
            watcher.send_signal(signal.SIGTERM)
            break
    output = watcher.communicate(timeout=120)[0]
    assert watcher.returncode == 128 + signal.SIGTERM, output
    assert "the watcher stopped" in output and "Traceback" not in output


def test_a_holder_that_has_not_written_its_name_yet_is_still_named_as_a_holder(tmp_path):
    from worklab.run import runfolder

    (tmp_path / ".lock").write_text("")
    assert runfolder.describe_holder(tmp_path, tries=2) == "another process that has just started"
    (tmp_path / ".lock").write_text('{"pid": 7, "host": "h", "started": "2026-12-01 10:00:00"}')
    assert runfolder.describe_holder(tmp_path) == "process 7 on h since 2026-12-01 10:00:00"
