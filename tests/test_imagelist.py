"""Tests for worklab.data.imagelist: list formats, path resolution, class maps and file checks (no TensorFlow)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worklab.data import imagelist
from worklab.data.imagelist import (ImageList, build_classes, check_files, load_classes, read_entries, save_classes,
                                    to_image_list)
from worklab.errors import UserError


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


def test_folder_root_keeps_an_empty_class_folder_as_a_class_and_warns(tmp_path, caplog):
    train, test = tmp_path / "train", tmp_path / "test"
    for root in (train, test):
        write_image(root / "cat" / "a.png")
        write_image(root / "emu" / "b.png")
    (train / "dog").mkdir()
    (train / "dog" / "notes.txt").write_text("photos to come")
    write_image(train / ".ipynb_checkpoints" / "c.png")  # hidden folders are not classes

    entries = read_entries(str(train), "folder")
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        classes = build_classes(entries, str(train))

    assert classes == ["cat", "dog", "emu"]  # emu keeps index 2 now and once dog has images
    assert to_image_list(read_entries(str(test), "folder"), classes, str(test)).labels == [0, 2]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(train) in warning and "dog" in warning and "no images" in warning
    assert "cat" not in warning and "emu" not in warning


def test_images_at_the_top_of_a_class_folder_root_are_warned_with_count_and_names(tmp_path, caplog):
    root = tmp_path / "data"
    write_image(root / "cat" / "a.png")
    write_image(root / "dog" / "b.png")
    for name in ("loose_1.jpg", "loose_2.png", "loose_3.PNG"):
        write_image(root / name)
    (root / "README.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        entries = read_entries(str(root), "folder")
    assert len(entries) == 2
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(root) in warning and "3 image file(s)" in warning
    assert "loose_1.jpg" in warning and "loose_3.PNG" in warning and "README" not in warning


def test_int_label_gaps_make_empty_classes_named_in_a_warning(caplog):
    entries = [("/a", 0), ("/b", 2), ("/c", 5), ("/d", 2)]
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        classes = build_classes(entries, "/lists/train.json")
    assert classes == ["0", "1", "2", "3", "4", "5"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "/lists/train.json" in warnings[0] and "1, 3, 4 have no images" in warnings[0]
    assert "6 classes" in warnings[0]


@pytest.mark.parametrize("labels,shown", [(["cat", "cat"], "cat"), ([0, 0], "0"), ([1, 1], "1")])
def test_training_list_of_a_single_class_is_refused(labels, shown):
    entries = [(f"/{i}.png", label) for i, label in enumerate(labels)]
    with pytest.raises(UserError, match=rf"/lists/train\.json has images of one class only \({shown}\).*"
                                        "at least two classes"):
        build_classes(entries, "/lists/train.json")


def test_label_not_in_a_saved_class_map_names_the_file_and_what_to_do(tmp_path):
    class_map = tmp_path / "run" / "classes.json"
    save_classes(class_map, ["ant", "bee"])  # left by a first attempt with another list
    entries = [("/imgs/a.png", "cat"), ("/imgs/b.png", "dog")]
    with pytest.raises(UserError) as info:
        to_image_list(entries, load_classes(class_map), "/lists/train.json", class_map=str(class_map))
    message = str(info.value)
    assert "/lists/train.json: 2 label(s) not in the class map [ant, bee]: 'cat'" in message
    assert "delete it and run again" in message and str(class_map) in message and "no checkpoint" in message
    assert "reader.train and reader.test" in message


@pytest.mark.parametrize("text,problem", [("{\"classes\": [\"cat\"", "not valid JSON"), ("", "not valid JSON"),
                                          ("{}", "no \"classes\" list"), ("[\"cat\", \"dog\"]", "no \"classes\" list"),
                                          ("{\"classes\": [0, 1]}", "no \"classes\" list"),
                                          ("{\"classes\": []}", "no \"classes\" list")])
def test_corrupt_class_map_is_a_user_error_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "run" / "classes.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_classes(path)
    message = str(info.value)
    assert f"Class map {path}" in message and problem in message
    assert "no checkpoint" in message and f"delete {path}" in message


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


def test_same_path_listed_twice_with_one_label_is_warned(tmp_path, caplog):
    lists = tmp_path / "lists"
    path = write_json(lists / "train.json", [{"path": "a.png", "label": "cat"}, {"path": "b.png", "label": "dog"},
                                             {"path": "./a.png", "label": "cat"}])
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        entries = read_entries(str(path), "json")
    assert len(entries) == 3  # kept: each listing is an example
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(path) in warning and "1 path(s)" in warning and str((lists / "a.png").resolve()) in warning
    assert "b.png" not in warning


@pytest.mark.parametrize("text", ['{"a.png": "cat", "b.png": "dog", "a.png": "dog"}',  # a repeated key
                                  '[{"path": "a.png", "label": "cat"}, {"path": "b.png", "label": "dog"}, '
                                  '{"path": "sub/../a.png", "label": "dog"}]'])
def test_one_path_with_two_labels_is_refused_naming_path_and_labels(tmp_path, text):
    path = tmp_path / "lists" / "train.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_entries(str(path), "json")
    message = str(info.value)
    assert str(path) in message
    assert f"{(path.parent / 'a.png').resolve()} as 'cat' and 'dog'" in message
    assert "b.png" not in message


def test_json_reader_pointed_at_a_folder_says_to_use_the_folder_reader(tmp_path):
    write_image(tmp_path / "data" / "cat" / "a.png")
    with pytest.raises(UserError) as info:
        read_entries(str(tmp_path / "data"), "json")
    message = str(info.value)
    assert str(tmp_path / "data") in message and "is a folder: use reader=folder" in message
    assert "does not exist" not in message


def test_folder_reader_pointed_at_a_json_file_says_to_use_the_json_reader(tmp_path):
    path = write_json(tmp_path / "train.json", {"a.png": 0})
    with pytest.raises(UserError, match=r"train\.json is a file: use reader=json"):
        read_entries(str(path), "folder")


def test_listed_folder_is_reported_as_a_folder_not_as_missing(tmp_path):
    good = write_image(tmp_path / "a.png")
    folder = tmp_path / "cats"
    write_image(folder / "b.png")
    path = write_json(tmp_path / "train.json", {"a.png": 0, "cats": 1})
    images = to_image_list(read_entries(str(path), "json"), ["0", "1"], str(path))
    with pytest.raises(UserError) as info:
        check_files(images, skip_bad=True)
    message = str(info.value)
    assert f"{folder} is a folder, not an image file" in message and str(path) in message
    assert "do not exist" not in message and str(good) not in message


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
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
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
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        kept = check_files(images, skip_bad=True)
    assert kept.paths == [str(good)] and kept.labels == [1]
    assert "TIFF" in caplog.text


@pytest.mark.parametrize("mode", ["1", "P"])
def test_low_bit_depth_bmp_tensorflow_misreads_is_reported(tmp_path, mode):
    bmp = write_image(tmp_path / "palette.bmp", colour=(200, 30, 60), fmt="BMP", mode=mode)
    with pytest.raises(UserError, match="palette.bmp"):
        check_files(as_list([bmp], [0]), skip_bad=False)


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in half: its header is intact, so only a full decode finds it broken."""
    rng = np.random.RandomState(0)
    full = path.with_name("full_" + path.name)
    Image.fromarray(rng.randint(0, 256, (48, 64, 3), dtype=np.uint8)).save(full, "JPEG", quality=90)
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return path


def test_truncated_jpeg_is_found_before_training(tmp_path, caplog):
    good = [write_image(tmp_path / "a.jpg", fmt="JPEG"), write_image(tmp_path / "b.png")]
    cut = truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(cut) as image:
        image.verify()  # the header check the old code relied on passes it
    images = as_list([good[0], cut, good[1]], [0, 1, 2], source="train.json")
    with pytest.raises(UserError) as info:
        check_files(images, skip_bad=False)
    message = str(info.value)
    assert "train.json" in message and "1 file(s)" in message and str(cut) in message
    assert "truncated" in message and "reader.skip_bad=true" in message
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        kept = check_files(images, skip_bad=True)
    assert kept.paths == [str(good[0]), str(good[1])] and kept.labels == [0, 2]
    assert "skipping 1 unreadable image" in caplog.text and str(cut) in caplog.text


@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_list_with_no_readable_image_left_is_a_user_error(tmp_path, skip_bad):
    bad = [truncated_jpeg(tmp_path / "cut.jpg"), random_bytes_jpg(tmp_path / "noise.jpg")]
    with pytest.raises(UserError) as info:
        check_files(as_list(bad, [0, 1], source="/lists/train.json"), skip_bad=skip_bad)
    message = str(info.value)
    assert "/lists/train.json" in message and "no readable image is left" in message
    assert str(bad[0]) in message and str(bad[1]) in message


def test_image_over_pils_bomb_limit_is_read(tmp_path, monkeypatch):
    """PIL refuses more than twice MAX_IMAGE_PIXELS as a decompression bomb; TensorFlow reads such images."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = write_image(tmp_path / "big.png", size=(100, 80))  # 8000 px: over 2 x 1000
    jpeg = write_image(tmp_path / "big.jpg", fmt="JPEG", size=(100, 80))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(big)
    images = as_list([big, jpeg], [0, 1])
    assert check_files(images, skip_bad=False).paths == images.paths
    assert Image.MAX_IMAGE_PIXELS == 1000  # PIL's limit is lifted for the check only


def test_a_real_14000_px_square_png_is_read(tmp_path):
    big = tmp_path / "big.png"
    Image.new("1", (14000, 14000), 1).save(big)  # 196 Mpx, past PIL's 179 Mpx bomb limit; 50 kB on disk
    images = as_list([big], [0])
    assert check_files(images, skip_bad=False).paths == images.paths


def test_image_over_the_checks_limit_names_the_limit_and_its_key(tmp_path, monkeypatch):
    monkeypatch.setattr(imagelist, "MAX_PIXELS", 5000)
    big = write_image(tmp_path / "big.png", size=(100, 80))
    good = write_image(tmp_path / "small.png", size=(50, 50))
    with pytest.raises(UserError) as info:
        check_files(as_list([big, good], [0, 1]), skip_bad=False)
    message = str(info.value)
    assert str(big) in message and "100 x 80" in message
    assert "5000 px" in message and "worklab.data.imagelist.MAX_PIXELS" in message


def test_a_recorded_check_decodes_only_files_that_changed(tmp_path, monkeypatch):
    from worklab.data import imagelist

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i, 0, 0)).save(path)
        paths.append(str(path))
    images = ImageList("list.json", paths, [0, 1, 0])
    record = tmp_path / "run" / "checked_images.json"
    decoded = []
    real = imagelist._examine
    monkeypatch.setattr(imagelist, "_examine", lambda p: decoded.append(p) or real(p))
    assert len(check_files(images, skip_bad=False, record=record)) == 3 and len(decoded) == 3
    decoded.clear()
    assert len(check_files(images, skip_bad=False, record=record)) == 3 and decoded == []
    Path(paths[1]).write_bytes(Path(paths[1]).read_bytes()[:30])  # changed since the check: decoded again
    with pytest.raises(UserError, match=r"1\.png"):
        check_files(images, skip_bad=False, record=record)
    assert decoded == [paths[1]]


def test_in_threads_gives_every_result_in_order_a_slice_to_a_task():
    import threading

    from worklab.data.imagelist import in_threads

    for count in (0, 1, 7, 8, 9, 50):
        calls = []

        def square(x):
            calls.append((x, threading.get_ident()))
            return x * x

        assert in_threads(square, list(range(count)), threads=3, per_task=8) == [x * x for x in range(count)]
        by_item = dict(calls)
        assert sorted(by_item) == list(range(count))  # each item once
        for start in range(0, count, 8):  # a slice is one task: its items run in order, in one thread
            part = [x for x, _ in calls if start <= x < start + 8]
            assert part == sorted(part) and len({by_item[x] for x in part}) == 1
    with pytest.raises(ValueError, match="bad item"):
        in_threads(lambda x: (_ for _ in ()).throw(ValueError("bad item")) if x == 5 else x, list(range(20)))
