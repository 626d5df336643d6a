"""A class-folder data set as phones and hurried copies leave it, run end to end: what is reported and what trains."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose
from worklab import app
from worklab.errors import UserError


def phone_photo(path: Path, seed: int) -> None:
    """A JPEG stored a quarter turn to the left, with EXIF orientation 6 saying so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.RandomState(seed).randint(0, 256, (64, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", exif=exif.tobytes())


@pytest.fixture
def folders(tmp_path) -> Path:
    """train/ and test/ class folders: cat (phone photos, one cut short), dog (PNGs), emu (no images yet)."""
    for split, n in (("train", 3), ("test", 1)):
        for i in range(n):
            phone_photo(tmp_path / split / "cat" / f"{i}.jpg", i)
            (tmp_path / split / "dog").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 12), (10, 200, 10)).save(tmp_path / split / "dog" / f"{i}.png")
    (tmp_path / "train" / "emu").mkdir()
    phone_photo(tmp_path / "train" / "stray.jpg", 7)
    whole = (tmp_path / "train" / "cat" / "0.jpg").read_bytes()
    (tmp_path / "train" / "cat" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # headers whole, pixels cut
    return tmp_path


def run_folders(root: Path, *overrides):
    cfg = compose(["reader=folder", f"reader.train={root / 'train'}", f"reader.test={root / 'test'}",
                   "schedule=train", "schedule.steps=1", *overrides], root / "run", root)
    return app.run(cfg)


def test_cut_photo_is_named_before_the_first_step(folders):
    with pytest.raises(UserError) as info:
        run_folders(folders)
    assert str(folders / "train" / "cat" / "cut.jpg") in str(info.value)
    assert "reader.skip_bad=true" in str(info.value)
    assert not list((folders / "run").glob("**/*.index"))  # no checkpoint written


def test_skip_bad_trains_with_every_class_folder_and_says_what_it_left_out(folders, caplog, small_network):
    with caplog.at_level(logging.WARNING):
        assert run_folders(folders, "reader.skip_bad=true", *small_network)["step"] == 1
    assert json.loads((folders / "run" / "classes.json").read_text())["classes"] == ["cat", "dog", "emu"]
    assert "class folder(s) emu hold no images" in caplog.text
    assert "1 image file(s) at the top level" in caplog.text and "stray.jpg" in caplog.text
    assert "skipping 1 unreadable image" in caplog.text and "cut.jpg" in caplog.text
