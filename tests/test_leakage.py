"""Copies across and within the image lists: planted copies found, distinct images not, reader.leakage obeyed."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import run_py
from worklab.data import leakage
from worklab.data.imagelist import ImageList, check_files
from worklab.errors import UserError
from worklab.run.runfolder import RunFolder, lock, release

CLASSES = ["ant", "bee"]


def photo(seed: int, size: int = 256) -> Image.Image:
    """A photo-like image: smooth colour regions from a coarse random grid, with sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.float64) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def save(image: Image.Image, path: Path, **options) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return str(path)


def checked(paths, labels, source) -> ImageList:
    return check_files(ImageList(source, list(paths), list(labels)), skip_bad=False)


@pytest.fixture
def planted(tmp_path):
    """Training photos 0-5 (ant, bee alternating); test: three planted copies and three distinct photos."""
    train = [save(photo(i), tmp_path / "train" / f"{i}.jpg", quality=90) for i in range(6)]
    test = [save(photo(0), tmp_path / "test" / "requality.jpg", quality=30),
            save(photo(1).resize((100, 100)), tmp_path / "test" / "resized.jpg", quality=90),
            save(ImageOps.mirror(photo(2)), tmp_path / "test" / "mirrored.png"),
            *[save(photo(i), tmp_path / "test" / f"new-{i}.jpg", quality=90) for i in range(10, 13)]]
    return {"train": checked(train, [0, 1] * 3, "train.json"), "test": checked(test, [0, 1, 0, 1, 0, 1], "test.json")}


def test_re_encoded_resized_and_mirrored_copies_are_found_and_distinct_photos_are_not(planted, tmp_path):
    pairs = leakage.find_pairs(planted, CLASSES)
    found = {(Path(p["a"]["path"]).name, Path(p["b"]["path"]).name): p for p in pairs}
    assert set(found) == {("0.jpg", "requality.jpg"), ("1.jpg", "resized.jpg"), ("2.jpg", "mirrored.png")}
    assert all(p["kind"] == "near" and 0 <= p["distance"] <= leakage.NEAR_BITS for p in pairs)
    assert [p["a"]["list"] for p in pairs] == ["train"] * 3 and [p["b"]["list"] for p in pairs] == ["test"] * 3


def test_an_exact_copy_under_two_labels_within_one_list(tmp_path):
    one = save(photo(5), tmp_path / "ant" / "x.jpg", quality=90)
    copy = tmp_path / "bee" / "x.jpg"
    copy.parent.mkdir()
    copy.write_bytes(Path(one).read_bytes())
    others = [save(photo(i), tmp_path / f"{i}.jpg", quality=90) for i in range(20, 24)]
    lists = {"train": checked([one, str(copy), *others], [0, 1, 0, 1, 0, 1], "train.json")}
    pairs = leakage.find_pairs(lists, CLASSES)
    assert [(p["kind"], p["distance"], p["a"]["label"], p["b"]["label"]) for p in pairs] == [("exact", 0, "ant", "bee")]
    assert leakage.summary(pairs, lists) == ("1 duplicate pairs within a list; 1 pairs of copies under two labels; "
                                             "see leakage.json")


def test_flat_images_are_matched_by_content_only(tmp_path):
    red, blue = (save(Image.new("RGB", (64, 64), colour), tmp_path / f"{i}.png") for i, colour in
                 enumerate([(200, 10, 10), (10, 10, 200)]))
    assert leakage.find_pairs({"train": checked([red, blue], [0, 1], "train.json")}, CLASSES) == []


@pytest.fixture
def folder(tmp_path):
    """A run folder this process holds the lock of, so it may write it."""
    held = RunFolder(tmp_path / "run")
    lock(held.path)
    yield held
    release(held.path)


def test_warn_keeps_the_lists_and_records_the_pairs(planted, folder, caplog):
    with caplog.at_level(logging.INFO):
        kept = leakage.guard("warn", {**planted, "val": None}, CLASSES, folder)
    assert kept == planted
    record = folder.read("leakage.json")
    assert record["pairs_found"] == 3 and record["dropped"] == {"test": 0}
    assert "3 test images duplicate training images: 0 exact, 3 near; see leakage.json" in caplog.text


def test_drop_removes_the_test_side_copies_and_says_how_many(planted, folder, caplog):
    with caplog.at_level(logging.INFO):
        kept = leakage.guard("drop", dict(planted), CLASSES, folder)
    assert [Path(p).name for p in kept["test"].paths] == ["new-10.jpg", "new-11.jpg", "new-12.jpg"]
    assert kept["train"] == planted["train"]
    assert "left out 3 of 6 test images" in caplog.text
    assert folder.read("leakage.json")["dropped"] == {"test": 3}


def test_refuse_names_the_key_and_writes_nothing(planted, folder):
    with pytest.raises(UserError, match=r"reader\.leakage=refuse: 3 test images duplicate training images"):
        leakage.guard("refuse", dict(planted), CLASSES, folder)
    assert not folder.file("leakage.json").exists()


def test_off_searches_nothing_and_keeps_the_lists(planted, folder, monkeypatch):
    monkeypatch.setattr(leakage, "find_pairs", lambda *args: pytest.fail("searched with reader.leakage=off"))
    assert leakage.guard("off", dict(planted), CLASSES, folder) == planted
    assert not folder.file("leakage.json").exists()


def test_a_reader_of_the_run_writes_nothing(planted, tmp_path):
    """A process without the run's lock (a schedule that reads the run) leaves the folder as it was."""
    folder = RunFolder(tmp_path / "read")
    folder.path.mkdir()
    leakage.guard("warn", dict(planted), CLASSES, folder)
    assert list(folder.path.iterdir()) == []


def test_the_hashes_come_from_the_record_of_an_earlier_check(planted, tmp_path):
    images = planted["test"]
    record = tmp_path / "checked_images.json"
    first = check_files(ImageList("test.json", images.paths, images.labels), skip_bad=False, record=record)
    again = check_files(ImageList("test.json", images.paths, images.labels), skip_bad=False, record=record)
    assert again.hashes == first.hashes == images.hashes


@pytest.fixture
def leaky(tmp_path):
    """JSON lists whose test list holds a training image, and the command that trains on them."""
    for i in range(4):
        save(photo(30 + i), tmp_path / "img" / f"{i}.jpg", quality=90)
    (tmp_path / "train.json").write_text(json.dumps({"img/0.jpg": "ant", "img/1.jpg": "bee", "img/2.jpg": "ant"}))
    (tmp_path / "test.json").write_text(json.dumps({"img/0.jpg": "ant", "img/3.jpg": "bee"}))
    return ["reader=json", f"reader.train={tmp_path / 'train.json'}", f"reader.test={tmp_path / 'test.json'}",
            "reader.image_size=16", "network.depth=10", "network.width=0.125", "schedule=fixed",
            "schedule.stages=[{lr: 0.05, steps: 1}]", f"hydra.run.dir={tmp_path / 'run'}"]


def contents(folder: Path):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


REFUSED = "reader.leakage=refuse: 1 test images duplicate training images: 1 exact, 0 near"


def refused(result) -> bool:
    """The command exited non-zero with the one-line refusal and no traceback."""
    output = result.stdout + result.stderr
    return result.returncode != 0 and REFUSED in output and "Traceback" not in output


def test_an_unknown_leakage_policy_is_refused_before_the_run_folder_is_made(leaky, tmp_path):
    result = run_py([*leaky, "reader.leakage=maybe"], tmp_path)
    assert result.returncode == 2
    assert "reader.leakage='maybe' is not one of warn, refuse, drop, off" in result.stderr
    assert not (tmp_path / "run").exists()


def test_refused_leakage_stops_a_new_run_before_step_1(leaky, tmp_path):
    result = run_py([*leaky, "reader.leakage=refuse"], tmp_path)
    assert refused(result)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "leakage.json").exists()


@pytest.mark.slow
def test_refused_leakage_on_resume_leaves_the_run_byte_for_byte(leaky, tmp_path):
    first = run_py(leaky, tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / "run" / "leakage.json").read_text())["pairs_found"] == 1
    before = contents(tmp_path / "run")
    result = run_py([f"resume={tmp_path / 'run'}", "reader.leakage=refuse"], tmp_path)
    assert refused(result)
    assert contents(tmp_path / "run") == before
