"""Small fixes from the issue tracker: each case failed before its fix."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import compose
from worklab.config import PredictSchedule
from worklab.data.imagelist import ImageList, warn_missing_classes
from worklab.errors import UserError
from worklab.interrupt import StopRequest


def test_predict_without_run_or_model_asks_for_one_of_them():
    with pytest.raises(UserError, match="needs one of schedule.run=RUN") as refused:
        PredictSchedule(images="images.json")
    assert "not both" not in str(refused.value) and "neither" in str(refused.value)
    with pytest.raises(UserError, match="schedule.run=a or schedule.model=b, not both"):
        PredictSchedule(images="images.json", run="a", model="b")


def test_a_validation_list_lacking_classes_is_warned_naming_them(caplog):
    images = ImageList("val.json", ["/a.png", "/b.png"], [0, 2])
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        assert warn_missing_classes(images, ["cat", "dog", "eel", "fox"]) is images
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "val.json (reader.val) has no images of 2 of the 4 classes" in warnings[0]
    assert "dog, fox" in warnings[0] and "F1" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        warn_missing_classes(ImageList("val.json", ["/a.png", "/b.png"], [0, 1]), ["cat", "dog"])
    assert caplog.records == []


def test_a_run_warns_of_the_classes_its_validation_list_lacks(tmp_path, data_dir, caplog):
    from worklab.run.parts import Parts

    train = compose([], tmp_path / "run", data_dir)
    demo_test = Path(Parts(train, StopRequest()).sources[1])
    kept = {path: label for path, label in json.loads(demo_test.read_text()).items() if label in ("circle", "square")}
    val = tmp_path / "val.json"
    val.write_text(json.dumps({str((demo_test.parent / path).resolve()): label for path, label in kept.items()}))
    parts = Parts(compose([f"reader.val={val}"], tmp_path / "run", data_dir), StopRequest())
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        assert len(parts.val_images) == 6
    lacking = [r.getMessage() for r in caplog.records if "(reader.val) has no images" in r.getMessage()]
    assert len(lacking) == 1
    assert "8 of the 10 classes of the training list: checker, cross, diagonal, dots, hstripes, ring, triangle, " \
           "vstripes." in lacking[0]
