"""Tests for worklab.imagelist: list formats, path resolution, class maps and file checks (no TensorFlow)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from worklab.errors import UserError
from worklab.imagelist import (ImageList, build_classes, check_files, load_classes, read_entries, save_classes,
                               to_image_list)


def write_image(path: Path, colour=(200, 30, 60), fmt: str = "PNG", size=(10, 8), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, fmt)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def random_bytes_jpg(path: Path) -> Path:
    path.write_bytes(os.urandom(300))
    return path


def truncated_png_header(path: Path) -> Path:
    good = write_image(path.with_name("full_" + path.name))
    path.write_bytes(good.read_bytes()[:20])  # signature + part of IHDR
    return path


def as_list(paths, labels, source="list.json") -> ImageList:
    return ImageList(source, [str(p) for p in paths], list(labels))


# List formats and path resolution ------------------------------------------------------------


def test_json_dict_relative_paths_resolve_against_list_folder(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    write_json(lists / "train.json", {"a.png": 0, "../img/b.png": 1, "sub/c.png": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    entries = read_entries(str(lists / "train.json"), "json")

    assert entries == [(str((lists / "a.png").resolve()), 0),
                       (str((tmp_path / "img" / "b.png").resolve()), 1),
                       (str((lists / "sub" / "c.png").resolve()), 1)]


def test_relative_list_file_resolves_against_its_own_folder_not_cwd(tmp_path, monkeypatch):
    write_json(tmp_path / "lists" / "train.json", {"a.png": "cat"})
    monkeypatch.chdir(tmp_path)

    entries = read_entries("lists/train.json", "json")

    assert entries == [(str((tmp_path / "lists" / "a.png").resolve()), "cat")]
    assert Path(entries[0][0]).is_absolute()


def test_json_list_of_objects_and_absolute_paths_kept(tmp_path, monkeypatch):
    absolute = (tmp_path / "other" / "abs.png").resolve()
    write_json(tmp_path / "lists" / "test.json",
               [{"path": "x.png", "label": "dog"}, {"path": str(absolute), "label": "cat", "extra": 1}])
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    entries = read_entries(str(tmp_path / "lists" / "test.json"), "json")

    assert entries == [(str((tmp_path / "lists" / "x.png").resolve()), "dog"), (str(absolute), "cat")]


def test_folder_source_labels_are_folder_names_and_non_images_ignored(tmp_path):
    root = tmp_path / "data"
    write_image(root / "cat" / "a.png")
    write_image(root / "cat" / "b.jpg", fmt="JPEG")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "labels.json").write_text("{}")
    write_image(root / "dog" / "C.PNG")  # suffix case does not matter
    write_image(root / "dog" / "d.bmp", fmt="BMP")
    write_image(root / "dog" / "e.gif", fmt="GIF")
    (root / "dog" / "archive.zip").write_bytes(b"PK")
    write_image(root / "stray.png")  # not in a class folder

    entries = read_entries(str(root), "folder")

    got = sorted((Path(p).relative_to(root.resolve()).as_posix(), label) for p, label in entries)
    assert got == [("cat/a.png", "cat"), ("cat/b.jpg", "cat"), ("dog/C.PNG", "dog"),
                   ("dog/d.bmp", "dog"), ("dog/e.gif", "dog")]
    assert all(Path(p).is_absolute() for p, _ in entries)
    assert build_classes(entries, str(root)) == ["cat", "dog"]


def test_folder_missing_or_without_images_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        read_entries(str(tmp_path / "nowhere"), "folder")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="empty"):
        read_entries(str(tmp_path / "empty"), "folder")


# Class map -----------------------------------------------------------------------------------


def test_int_labels_make_classes_zero_to_max_with_index_equal_label():
    entries = [("/a", 3), ("/b", 0), ("/c", 3), ("/d", 1)]
    classes = build_classes(entries, "train.json")
    assert classes == ["0", "1", "2", "3"]
    images = to_image_list(entries, classes, "train.json")
    assert images.labels == [3, 0, 3, 1]
    assert images.paths == ["/a", "/b", "/c", "/d"]
    assert images.source == "train.json" and len(images) == 4


def test_string_labels_make_sorted_classes():
    entries = [("/a", "zebra"), ("/b", "ant"), ("/c", "mole"), ("/d", "ant")]
    classes = build_classes(entries, "train.json")
    assert classes == ["ant", "mole", "zebra"]
    assert to_image_list(entries, classes, "train.json").labels == [2, 0, 1, 0]


@pytest.mark.parametrize("labels", [[0, "cat"], [1, 2.0], [True, 1], [None, 1]])
def test_mixed_or_odd_labels_are_a_user_error_naming_the_list(labels):
    entries = [(f"/{i}", label) for i, label in enumerate(labels)]
    with pytest.raises(UserError, match="train.json"):
        build_classes(entries, "train.json")


def test_negative_int_label_is_a_user_error():
    with pytest.raises(UserError, match=r"train.json.*-1"):
        build_classes([("/a", 0), ("/b", -1)], "train.json")


def test_class_map_save_load_round_trip(tmp_path):
    path = tmp_path / "run" / "classes.json"
    assert load_classes(path) is None
    classes = ["ant", "mole", "zebra", "10", "2"]
    save_classes(path, classes)
    assert load_classes(path) == classes
    # the saved map drives later indices
    assert to_image_list([("/x", "zebra"), ("/y", "2")], load_classes(path), "test.json").labels == [2, 4]


@pytest.mark.parametrize("classes,label", [(["cat", "dog"], "zebra"), (["0", "1", "2"], 7)])
def test_test_label_not_in_class_map_is_a_user_error_naming_label_and_list(classes, label):
    entries = [("/imgs/a.png", classes[0]), ("/imgs/b.png", label)]
    with pytest.raises(UserError) as info:
        to_image_list(entries, classes, "/lists/test.json")
    message = str(info.value)
    assert repr(label) in message
    assert "/lists/test.json" in message
    assert "/imgs/b.png" in message
    assert "/imgs/a.png" not in message


def test_int_test_labels_match_int_class_map():
    classes = build_classes([("/a", 0), ("/b", 2)], "train.json")
    assert to_image_list([("/c", 2), ("/d", 1), ("/e", 0)], classes, "test.json").labels == [2, 1, 0]


# Bad list files ------------------------------------------------------------------------------


def test_missing_list_file(tmp_path):
    missing = tmp_path / "no_such_list.json"
    with pytest.raises(UserError, match="no_such_list.json"):
        read_entries(str(missing), "json")


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe"])
def test_invalid_json(tmp_path, text):
    path = tmp_path / "broken.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(UserError, match=r"broken.json.*not valid JSON"):
        read_entries(str(path), "json")


@pytest.mark.parametrize("data", [42, "a.png", [1, 2], [["a.png", 0]], [{"path": "a.png"}],
                                  [{"label": 0}], [{"path": "a.png", "label": 0}, "b.png"], None])
def test_json_of_wrong_shape(tmp_path, data):
    path = write_json(tmp_path / "shape.json", data)
    with pytest.raises(UserError, match="shape.json"):
        read_entries(str(path), "json")


@pytest.mark.parametrize("bad_path", [5, None])
def test_non_string_path_in_list_is_a_user_error(tmp_path, bad_path):
    path = write_json(tmp_path / "paths.json", [{"path": bad_path, "label": 0}])
    with pytest.raises(UserError, match="paths.json"):
        read_entries(str(path), "json")


@pytest.mark.parametrize("data", [{}, []])
def test_empty_list(tmp_path, data):
    path = write_json(tmp_path / "empty.json", data)
    with pytest.raises(UserError, match=r"empty.json.*empty"):
        read_entries(str(path), "json")


# File checks ---------------------------------------------------------------------------------


def test_good_files_pass_unchanged(tmp_path):
    paths = [write_image(tmp_path / "a.png"), write_image(tmp_path / "b.jpg", fmt="JPEG"),
             write_image(tmp_path / "c.bmp", fmt="BMP"), write_image(tmp_path / "d.gif", fmt="GIF"),
             write_image(tmp_path / "e.png", mode="L"), write_image(tmp_path / "f.png", mode="RGBA")]
    images = as_list(paths, range(6))
    checked = check_files(images, skip_bad=False)
    assert checked.paths == images.paths and checked.labels == images.labels


def test_missing_images_are_counted_and_the_first_named(tmp_path):
    good = write_image(tmp_path / "good.png")
    missing = [tmp_path / f"missing_{i}.png" for i in range(7)]
    images = as_list([good, *missing], range(8), source="/lists/train.json")
    with pytest.raises(UserError) as info:
        check_files(images, skip_bad=True)  # skip_bad does not excuse missing files
    message = str(info.value)
    assert "/lists/train.json" in message
    assert "7 of 8" in message
    for path in missing[:3]:
        assert str(path) in message
    assert str(good) not in message


def test_undecodable_files_stop_without_skip_bad(tmp_path):
    good = write_image(tmp_path / "good.png")
    noise = random_bytes_jpg(tmp_path / "noise.jpg")
    cut = truncated_png_header(tmp_path / "cut.png")
    images = as_list([good, noise, cut], [0, 1, 2], source="train.json")
    with pytest.raises(UserError) as info:
        check_files(images, skip_bad=False)
    message = str(info.value)
    assert "train.json" in message
    assert "2 file(s)" in message
    assert str(noise) in message and str(cut) in message
    assert str(good) not in message
    assert "reader.skip_bad" in message


def test_undecodable_files_dropped_with_skip_bad_and_warned(tmp_path, caplog):
    paths = [write_image(tmp_path / "a.png", (10, 10, 10)),
             random_bytes_jpg(tmp_path / "noise.jpg"),
             write_image(tmp_path / "b.jpg", (20, 20, 20), fmt="JPEG"),
             truncated_png_header(tmp_path / "cut.png"),
             write_image(tmp_path / "c.gif", (30, 30, 30), fmt="GIF")]
    images = as_list(paths, [4, 3, 2, 1, 0], source="train.json")
    with caplog.at_level(logging.WARNING, logger="worklab.imagelist"):
        kept = check_files(images, skip_bad=True)
    assert kept.paths == [str(paths[0]), str(paths[2]), str(paths[4])]
    assert kept.labels == [4, 2, 0]
    assert kept.source == "train.json"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "2 unreadable" in text and "train.json" in text
    assert str(paths[1]) in text and str(paths[3]) in text


def test_unsupported_format_is_reported(tmp_path, caplog):
    tiff = write_image(tmp_path / "scan.jpg", fmt="TIFF")  # the suffix lies: the content is TIFF
    good = write_image(tmp_path / "good.png")
    images = as_list([tiff, good], [0, 1])
    with pytest.raises(UserError) as info:
        check_files(images, skip_bad=False)
    assert str(tiff) in str(info.value) and "TIFF" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="worklab.imagelist"):
        kept = check_files(images, skip_bad=True)
    assert kept.paths == [str(good)] and kept.labels == [1]
    assert "TIFF" in caplog.text


@pytest.mark.parametrize("mode", ["1", "P"])
def test_low_bit_depth_bmp_tensorflow_misreads_is_reported(tmp_path, mode):
    bmp = write_image(tmp_path / "palette.bmp", colour=(200, 30, 60), fmt="BMP", mode=mode)
    with pytest.raises(UserError, match="palette.bmp"):
        check_files(as_list([bmp], [0]), skip_bad=False)
