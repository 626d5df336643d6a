"""Bad input ends with a clear message naming the file, key or value, and leaves run folders as they were."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY, compose, run_py
from worklab import app
from worklab.errors import UserError


def write_images(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (12, 12), (200, 10, 10)).save(folder / name)


@pytest.fixture
def lists(tmp_path):
    """A valid train/test list pair in the seed's {path: label} format."""
    write_images(tmp_path / "img", ["a.png", "b.png", "c.png", "d.png"])
    train = {"img/a.png": "cat", "img/b.png": "dog", "img/c.png": "cat"}
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.json").write_text(json.dumps({"img/d.png": "dog"}))
    return tmp_path


def run_json(tmp_path, *overrides):
    cfg = compose(["reader=json", f"reader.train={tmp_path / 'train.json'}", f"reader.test={tmp_path / 'test.json'}",
                   "schedule=train", "schedule.steps=1", *overrides], tmp_path / "run", tmp_path)
    return app.run(cfg)


def test_json_lists_train(lists, small_network):
    assert run_json(lists, *small_network)["step"] == 1


def test_list_file_that_does_not_exist(lists):
    with pytest.raises(UserError, match=r"Image list .*nope\.json does not exist"):
        run_json(lists, f"reader.train={lists / 'nope.json'}")


def test_list_file_that_is_not_json(lists):
    (lists / "train.json").write_text("{'img/a.png': 'cat'")
    with pytest.raises(UserError, match=r"train\.json is not valid JSON"):
        run_json(lists)


def test_listed_image_missing(lists):
    (lists / "img" / "b.png").unlink()
    with pytest.raises(UserError, match=r"1 of 3 listed files do not exist, e\.g\. .*img/b\.png"):
        run_json(lists)


def test_undecodable_image(lists):
    (lists / "img" / "c.png").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match=r"cannot be read as images: .*img/c\.png.*reader\.skip_bad=true"):
        run_json(lists)


def test_image_cut_short_after_its_header_is_named_before_training(lists):
    """A PNG cut short after its header passes a header check; the full decode before step 1 names it."""
    good = (lists / "img" / "c.png").read_bytes()
    (lists / "img" / "c.png").write_bytes(good[:40])
    with pytest.raises(UserError, match=r"img/c\.png"):
        run_json(lists)


@pytest.mark.slow  # by default test_images_e2e skips bad images of a folder reader and trains
def test_skip_bad_skips_and_trains(lists, caplog):
    (lists / "img" / "c.png").write_bytes(b"garbage")
    assert run_json(lists, "reader.skip_bad=true")["step"] == 1
    assert "skipping 1 unreadable image" in caplog.text


def test_test_label_not_in_the_class_map(lists):
    (lists / "test.json").write_text(json.dumps({"img/d.png": "bird"}))
    cfg = compose(["reader=json", f"reader.train={lists / 'train.json'}", f"reader.test={lists / 'test.json'}",
                   "schedule.stages=[{lr: 0.1, steps: 1}]"], lists / "run", lists)
    with pytest.raises(UserError, match=r"test\.json: 1 label\(s\) not in the class map \[cat, dog\]: 'bird'"):
        app.run(cfg)
    assert not (lists / "run" / "checkpoints").exists() or not list((lists / "run" / "checkpoints").iterdir())


@pytest.mark.parametrize("override, message", [
    ("network.depht=18", "Could not override 'network.depht'"),
    ("network.depth=eighteen", "network.depth"),
    ("network.depth=17", "network.depth=17 is not one of 10, 18, 34, 50, 101, 152"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0 must be a finite number greater than 0"),
    ("optimizer.lr=inf", "optimizer.lr=inf must be a finite number"),
    ("schedule.stages=[{lr: 0.1, steps: 2}, {lr: inf, steps: 2}]", "schedule.stages[1].lr=inf must be a finite"),
    ("top_k=0", "top_k=0 must be at least 1"),
    ("seed=-3", "seed=-3 must be in [0, 2**32 - 1]"),
    ("worst=-1", "worst=-1 must be 0 (list none) or more"),
    ("+network.dpeth=18", "network.dpeth: no such config key"),
    ("optimizer=sgd|optimizer.nesterov=true", "optimizer.nesterov=True has no effect with optimizer=sgd"),
    ("optimizer=adam|optimizer.momentum=0.5", "optimizer.momentum=0.5 has no effect with optimizer=adam"),
    ("network.cut=pool5", "network.cut=pool5 has no effect with network=resnet"),
    ("schedule=hyper|schedule.param=runtime.xla|schedule.values=[true,false]", "schedule.param=runtime.xla"),
])
def test_config_errors_name_the_key_and_write_nothing(tmp_path, data_dir, override, message):
    run = tmp_path / "run"
    result = run_py([*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", *override.split("|")], tmp_path)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not run.exists()


@pytest.mark.parametrize("override", ["schedule.keep=5", "schedule.log_every=5", "schedule.save_every=5"])
def test_training_cadence_on_a_schedule_that_does_not_train_is_refused(tmp_path, data_dir, override):
    result = run_py(["schedule=test", f"hydra.run.dir={tmp_path / 'run'}", override], tmp_path)
    assert result.returncode != 0
    assert f"Could not override '{override.split('=')[0]}'" in result.stdout + result.stderr


def test_network_keys_a_keras_model_file_does_not_read_are_refused(tmp_path):
    result = run_py(["network=keras", "network.path=model.keras", "network.depth=50",
                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    assert "network.depth=50 has no effect with network=keras" in result.stderr


def snapshot(folder: Path):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    result = run_py([f"resume={folder}"], tmp_path)
    assert result.returncode != 0
    assert f"resume={folder} is not a run folder" in result.stderr
    assert snapshot(folder) == before
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_bad_key_on_resume_leaves_the_run_untouched(tmp_path, data_dir):
    run = tmp_path / "run"
    first = run_py([*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", "schedule=train", "schedule.steps=2"],
                   tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    before = snapshot(run)
    result = run_py([f"resume={run}", "schedule.stepz=4"], tmp_path)
    assert result.returncode != 0 and "schedule.stepz" in result.stdout + result.stderr
    assert snapshot(run) == before


def test_a_class_map_left_by_an_attempt_that_saved_nothing_is_built_again(lists, small_network):
    """A first attempt with another list left classes.json but no checkpoint: the fixed list is not blocked."""
    (lists / "run").mkdir()
    (lists / "run" / "classes.json").write_text(json.dumps({"classes": ["ant", "bee"]}))
    assert run_json(lists, *small_network)["step"] == 1
    assert json.loads((lists / "run" / "classes.json").read_text())["classes"] == ["cat", "dog"]
