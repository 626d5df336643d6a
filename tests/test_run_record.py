"""A run's record describes its model: what a schedule settles is the run's config, lost checkpoints are trained
again, a run goes on only on its own data, and reading a run changes nothing in it."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import STAGES, compose, run_py, tiny, train_here
from worklab import app, command
from worklab.config.schedules import SCHEDULES
from worklab.data import demo
from worklab.errors import UserError
from worklab.run import runfolder
from worklab.run.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def contents(folder: Path):
    """Every file under `folder` with its bytes: the record a refused or reading command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def evaluation(folder: Path, step: int, split: str = "test"):
    return json.loads(RunFolder(folder).evaluation(step, split).read_text())


# The schedule registry ---------------------------------------------------------------------------------------


def test_every_schedule_is_one_registry_line_its_module_and_its_yaml():
    names = [kind.name for kind in SCHEDULES]
    assert sorted(names) == sorted(p.stem for p in (ROOT / "conf" / "schedule").glob("*.yaml"))
    modules = {p.stem for p in (ROOT / "worklab" / "schedules").glob("*.py")}
    assert set(names) <= modules
    for kind in SCHEDULES:
        assert kind.reads in (None, "resume", "schedule.run") and (kind.writes or kind.reads), kind
        yaml = (ROOT / "conf" / "schedule" / f"{kind.name}.yaml").read_text()
        assert f"/schema/schedule/{kind.name}@_here_" in yaml, kind.name
    assert {k.name for k in SCHEDULES if k.summarised} == {"train", "fixed", "cosine", "bit", "patience", "hyper"}
    assert all(k.writes for k in SCHEDULES if k.trains)


# 1. A preset's settled settings are the run's --------------------------------------------------------------

BIT = ["experiment=bit", "schedule.steps=4", "schedule.crop=12", "schedule.resize=14", "schedule.log_every=2",
       "schedule.save_every=2"]


def test_bit_tests_and_exports_at_its_settled_size_and_reading_it_changes_nothing(tmp_path, data_dir, caplog,
                                                                                small_network):
    """Trained in this process, with the .hydra/ files run.py would save; tested and exported through run.py,
    whose resume= applies the settled settings. The small network takes the settled size as the ResNet would."""
    run, job = tmp_path / "run", tmp_path / "job"
    caplog.set_level(logging.INFO)
    train_here(run, data_dir, [*small_network, *BIT])
    assert "reader.image_size=16 is overridden by the HyperRule: 12 holds" in caplog.text
    assert RunFolder(run).settled()["reader.image_size"] == 12
    stale = run / "export" / ".step-4.999999999.abcd"  # what an export killed part-way leaves
    stale.mkdir(parents=True)
    record = contents(run)

    tested = run_py(["schedule=test", f"resume={run}", f"hydra.run.dir={job}"], tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert contents(run) == record  # no evaluation rewritten, no metrics line, no log line, no .hydra
    assert evaluation(job, 4)["loss"] == pytest.approx(evaluation(run, 4)["loss"], rel=1e-6)
    assert (job / "metrics.jsonl").is_file() and (job / "run.log").is_file()

    exported = run_py(["schedule=export", "schedule.formats=[saved_model]", f"resume={run}",  # the other formats:
                       f"hydra.run.dir={tmp_path / 'export-job'}"], tmp_path)  # test_export_formats
    assert exported.returncode == 0, exported.stdout + exported.stderr
    info = json.loads((run / "export" / "step-4" / "export.json").read_text())
    assert info["image_size"] == 12 and info["test"]["loss"] == evaluation(run, 4)["loss"]
    assert not stale.exists()
    outside = lambda files: {k: v for k, v in files.items() if not k.startswith("export/")}  # noqa: E731
    assert outside(contents(run)) == outside(record)  # the export logs into its own job folder


def test_settled_settings_come_after_the_saved_overrides_and_before_the_new_ones(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=bit\n- reader.image_size=32\n- reader.new_data=true\n")
    (run / ".hydra" / "config.yaml").write_text("network:\n  preprocessing: null\nreader:\n  resample: area\n")
    (run / "settled.json").write_text(json.dumps({"by": "bit", "settings": {"reader.image_size": 12,
                                                                            "reader.augment.crop_scale": [0.7, 0.7]}}))
    argv = command.resume_argv(["run.py", f"resume={run}", "schedule=test"])
    assert argv[1:] == ["experiment=bit", "reader.image_size=32", "reader.image_size=12",
                        "reader.augment.crop_scale=[0.7,0.7]", f"resume={run}", "schedule=test"]
    mine = command.resume_argv(["run.py", f"resume={run}", "reader.image_size=20"])
    assert "reader.image_size=12" not in mine and mine[-1] == "reader.image_size=20"


# 2. A lost newest checkpoint is trained again --------------------------------------------------------------


def test_a_lost_newest_checkpoint_is_trained_and_tested_again(tmp_path, data_dir, caplog, small_network):
    run = tmp_path / "run"
    cfg = compose([STAGES, "schedule.save_every=2", *small_network], run, data_dir)
    app.run(cfg)
    first = evaluation(run, 6)
    for file in (run / "checkpoints").glob("ckpt-6.data*"):
        file.write_bytes(file.read_bytes()[:10])  # truncated: the checkpoint cannot be read
    caplog.set_level(logging.INFO)
    result = app.run(cfg)
    assert "train steps 5-6" in caplog.text and "superseded" in caplog.text
    assert result["step"] == 6
    assert json.loads((run / "superseded" / "evaluations" / "step-000006.json").read_text()) == first
    assert (run / "checkpoints" / "damaged" / "ckpt-6.index").is_file()
    assert (run / "checkpoints" / "ckpt-6.index").is_file() and evaluation(run, 6)["step"] == 6
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 6


def test_records_of_steps_whose_checkpoints_are_gone_are_set_aside(tmp_path):
    folder = RunFolder(tmp_path / "run")
    for step in (10, 20, 30):
        for split in ("test", "val"):
            folder.evaluation(step, split).parent.mkdir(parents=True, exist_ok=True)
            folder.evaluation(step, split).write_text(json.dumps({"step": step, "loss": 1.0}))
    folder.checkpoints.mkdir()
    for name in ("ckpt-10.index", "ckpt-10.data-00000-of-00001", "ckpt-20.index", "ckpt-20.data-00000-of-00001"):
        (folder.checkpoints / name).write_text("x")
    folder.file("best.json").write_text(json.dumps({"step": 30, "loss": 0.5}))
    moved = folder.set_aside_after(20)
    assert sorted(p.name for p in moved) == ["best.json", "step-000030.json", "step-000030.json"]
    assert folder.evaluated_steps("test") == folder.evaluated_steps("val") == [10, 20]
    assert folder.best() is None and (folder.path / "superseded" / "best.json").is_file()

    folder.file("best.json").write_text(json.dumps({"step": 15, "loss": 0.5}))  # a step with no checkpoint
    assert folder.set_aside_after(20) == [folder.file("best.json")]


def test_an_export_whose_best_checkpoint_is_gone_says_so(tmp_path, data_dir, trained):
    run = Path(shutil.copytree(trained, tmp_path / "run"))  # the session's run of 2 steps: checkpoint 2 alone
    (run / "best.json").write_text(json.dumps({"step": 40, "loss": 0.1}))
    with pytest.raises(UserError, match=r"best.json names step 40, whose checkpoint is gone \(checkpoints: \[2\]\)"):
        app.run(compose(["schedule=export"], run, data_dir))


# 3. A run goes on only on its own data ---------------------------------------------------------------------


def lists(tmp_path: Path, data_dir: Path, drop: int = 0) -> Path:
    """The demo set's lists as JSON lists in a folder of their own, less `drop` training images."""
    demo = next(data_dir.glob("demo-16px-*"))
    folder = tmp_path / f"lists-{drop}"
    folder.mkdir()
    for name in ("train.json", "test.json"):
        entries = list(json.loads((demo / name).read_text()).items())
        entries = entries[drop:] if name == "train.json" else entries
        (folder / name).write_text(json.dumps({str(demo / path): label for path, label in entries}))
    return folder


def test_a_reused_run_name_on_another_training_list_is_refused_and_the_folder_kept(tmp_path, data_dir, caplog,
                                                                                  small_network):
    """The refusal through run.py, which must put the folder back as it was; the run trained before it and the
    knowing go-on after it in this process, as run.py would run them."""
    demo.ensure_demo(data_dir, 16, 4, 3, 0, "shapes")  # the tiny demo set, as TINY draws it
    one, other = lists(tmp_path, data_dir), lists(tmp_path, data_dir, drop=3)
    run = tmp_path / "run"
    train = [*tiny(small_network), *small_network, f"hydra.run.dir={run}", "schedule=train", "reader=json",
             f"reader.test={one / 'test.json'}"]
    train_here(run, data_dir, [*small_network, "schedule=train", "reader=json", f"reader.test={one / 'test.json'}",
                               "schedule.steps=2", f"reader.train={one / 'train.json'}"])  # as run.py leaves it
    assert set(json.loads((run / "lists.json").read_text())) == {"train"}
    before = contents(run)
    refused = run_py([*train, "schedule.steps=4", f"reader.train={other / 'train.json'}"], tmp_path)
    assert refused.returncode == 2
    assert (f"reader.train: the run was trained on {one / 'train.json'} (40 images), now {other / 'train.json'} "
            "(37 images)") in refused.stdout and "reader.new_data=true" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    assert contents(run) == before
    caplog.set_level(logging.INFO)
    train_here(run, data_dir, [*small_network, "schedule=train", "reader=json", f"reader.test={one / 'test.json'}",
                               "schedule.steps=4", f"reader.train={other / 'train.json'}", "reader.new_data=true"])
    assert "reader.new_data=true: training goes on on other data than before" in caplog.text
    assert json.loads((run / "lists.json").read_text())["train"]["images"] == 37


def test_the_fingerprint_follows_paths_and_labels_not_where_the_set_lies(tmp_path):
    from worklab.data.fingerprints import difference, fingerprint
    from worklab.data.imagelist import ImageList

    classes = ["ant", "bee"]
    here = ImageList(str(tmp_path / "a" / "train.json"), [str(tmp_path / "a" / "x.jpg"), str(tmp_path / "a" / "y.jpg")],
                     [0, 1])
    moved = ImageList(str(tmp_path / "b" / "train.json"), [str(tmp_path / "b" / "x.jpg"),
                                                           str(tmp_path / "b" / "y.jpg")], [0, 1])
    relabelled = ImageList(here.source, here.paths, [1, 1])
    base = fingerprint(here, classes, "json")
    assert difference("train", base, fingerprint(moved, classes, "json")) is None
    assert "whose images or labels have changed" in difference("train", base, fingerprint(relabelled, classes, "json"))
    assert difference("train", None, base) is None  # nothing recorded yet


def test_another_training_schedule_on_a_trained_run_is_refused(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"schedule": "train", "status": "finished"}))
    command.check_same_schedule(tmp_path, "train")
    with pytest.raises(UserError, match="was trained with schedule=train; schedule=fixed would go on"):
        command.check_same_schedule(tmp_path, "fixed")


# Damaged state files, and a read-only run ------------------------------------------------------------------


@pytest.mark.parametrize("name, text, message", [
    ("best.json", "{not json", "cannot be read"),
    ("best.json", '{"loss": 1.0}', "is damaged: it has no step"),
    ("split.json", '{"val_split": 0.1}', "is damaged: it has no val_seed, val"),
    ("bit.json", "[]", "is damaged: it has no train_images"),
])
def test_a_damaged_state_file_is_named_with_what_to_do(tmp_path, name, text, message):
    folder = RunFolder(tmp_path)
    folder.file(name).write_text(text)
    keys = {"best.json": ("step", "loss"), "split.json": ("val_split", "val_seed", "val"),
            "bit.json": ("train_images",)}[name]
    with pytest.raises(UserError, match=rf"{name} {message}.*remove {name} and resume"):
        folder.read(name, keys)


def test_only_the_lock_holder_writes_a_run(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    assert not folder.writable
    with pytest.raises(AssertionError):
        folder.write("state.json", {})
    folder.lock()
    try:
        assert folder.writable
        folder.write("state.json", {"step": 1})
    finally:
        runfolder.release(folder.path)
    assert json.loads(folder.file("state.json").read_text()) == {"step": 1}


@pytest.fixture
def read_only(tmp_path):
    """A read-only bind mount of tmp_path/rw at tmp_path/ro (a teammate's run, an archive)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(rw), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        yield rw, ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_read_only_run_is_tested_and_exported_elsewhere_and_refuses_training(read_only, tmp_path, trained,
                                                                              data_dir):
    """The test and the training through run.py (its job folder, its lock); the exports in this process."""
    rw, ro = read_only
    shutil.copytree(trained, rw / "run")
    run = ro / "run"
    tested = run_py(["schedule=test", f"resume={run}", f"hydra.run.dir={tmp_path / 'job'}"], tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert evaluation(tmp_path / "job", 2)["count"] == 30
    export = ["schedule=export", f"resume={run}", "schedule.formats=[saved_model]"]  # the formats: test_export_formats
    with pytest.raises(UserError, match=r"is read-only\. Export into a folder you can write with schedule\.out=DIR"):
        app.run(compose(export, tmp_path / "job2", data_dir))
    app.run(compose([*export, f"schedule.out={tmp_path / 'shipped'}"], tmp_path / "job3", data_dir))
    assert (tmp_path / "shipped" / "step-2" / "export.json").is_file()
    training = run_py([f"resume={run}", "schedule.steps=4"], tmp_path)
    assert training.returncode == 2 and "Traceback" not in training.stderr
    assert f"Cannot write in {run}" in training.stderr, training.stderr
