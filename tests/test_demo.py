"""Tests for the built-in demo image set: layout, determinism, idempotence, race safety, learnability, variants."""

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worklab.config.reader import DEMO_VARIANTS, DemoConfig
from worklab.data import demo
from worklab.data.demo import CLASSES, VARIANTS, ensure_demo
from worklab.errors import UserError

SMALL = dict(image_size=24, train_per_class=3, test_per_class=2)


def labels(json_path):
    """The {relative path: class} mapping of a label file."""
    return json.loads(Path(json_path).read_text())


def files(folder):
    """Every file under folder as {path relative to folder: bytes}."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def images(json_path):
    """The bytes of every image listed in a label file, in label-file order."""
    return [(json_path.parent / rel).read_bytes() for rel in labels(json_path)]


def test_classes_are_about_ten_unique_names():
    assert 8 <= len(CLASSES) <= 12
    assert len(set(CLASSES)) == len(CLASSES)


def test_label_files_list_every_class_equally(tmp_path):
    train_json, test_json = ensure_demo(tmp_path, **SMALL)
    for json_path, per_class in ((train_json, 3), (test_json, 2)):
        mapping = labels(json_path)
        assert len(mapping) == per_class * len(CLASSES)
        assert sorted(mapping.values()) == sorted(CLASSES * per_class)
        assert list(mapping) == sorted(mapping)


def test_listed_paths_are_relative_rgb_images_of_the_requested_size(tmp_path):
    train_json, test_json = ensure_demo(tmp_path, **SMALL)
    for json_path, split in ((train_json, "train"), (test_json, "test")):
        for rel, name in labels(json_path).items():
            assert not Path(rel).is_absolute()
            assert rel.startswith(f"{split}/{name}/") and rel.endswith(".png")
            with Image.open(json_path.parent / rel) as image:
                assert image.format == "PNG"
                assert image.mode == "RGB"
                assert image.size == (24, 24)


def test_each_image_is_one_foreground_on_one_contrasting_background(tmp_path):
    train_json, _ = ensure_demo(tmp_path, **SMALL)
    luminance = np.array([0.299, 0.587, 0.114])
    for rel in labels(train_json):
        with Image.open(train_json.parent / rel) as image:
            colours = image.getcolors()
        assert len(colours) == 2, rel
        (_, first), (_, second) = colours
        assert abs(luminance @ (np.array(first) - np.array(second))) >= 100, rel


def test_creates_missing_root(tmp_path):
    train_json, test_json = ensure_demo(tmp_path / "a" / "b", **SMALL)
    assert train_json.is_file() and test_json.is_file()


def test_second_call_returns_the_same_paths_without_rewriting(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="worklab.data.demo"):
        first = ensure_demo(tmp_path, **SMALL)
    assert len(caplog.records) == 1
    set_dir = first[0].parent
    # Backdate every file so that any rewrite, however fast, would show in the mtimes.
    paths = [set_dir, *set_dir.rglob("*")]
    for path in paths:
        os.utime(path, ns=(10**18, 10**18))
    before = files(set_dir)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="worklab.data.demo"):
        second = ensure_demo(tmp_path, **SMALL)
    assert second == first
    assert files(set_dir) == before
    assert all(path.stat().st_mtime_ns == 10**18 for path in paths)
    assert caplog.records == []


def test_same_arguments_give_byte_identical_files_in_different_roots(tmp_path):
    one, _ = ensure_demo(tmp_path / "one", **SMALL)
    two, _ = ensure_demo(tmp_path / "two", **SMALL)
    assert one.parent.name == two.parent.name
    assert files(one.parent) == files(two.parent)


def test_every_image_is_a_different_draw(tmp_path):
    train_json, test_json = ensure_demo(tmp_path, **SMALL)
    train, test = images(train_json), images(test_json)
    assert not set(train) & set(test)
    assert len(set(train + test)) == len(train) + len(test)


def test_different_seeds_give_different_images_in_different_folders(tmp_path):
    seed0, _ = ensure_demo(tmp_path, seed=0, **SMALL)
    seed1, _ = ensure_demo(tmp_path, seed=1, **SMALL)
    assert seed0.parent != seed1.parent
    assert labels(seed0) == labels(seed1)
    assert all(a != b for a, b in zip(images(seed0), images(seed1)))


def test_different_sizes_and_counts_never_clash(tmp_path):
    variants = [SMALL, {**SMALL, "image_size": 32}, {**SMALL, "train_per_class": 4}, {**SMALL, "test_per_class": 3}]
    set_dirs = {ensure_demo(tmp_path, **kwargs)[0].parent for kwargs in variants}
    assert len(set_dirs) == len(variants)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(d.name for d in set_dirs)


def test_no_temporary_folder_is_left_behind(tmp_path):
    train_json, _ = ensure_demo(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == [train_json.parent.name]


def test_stale_temporary_folder_from_a_killed_build_does_not_break_it(tmp_path):
    stale = tmp_path / ".demo-killed"
    (stale / "train" / "circle").mkdir(parents=True)
    (stale / "train" / "circle" / "00000.png").write_bytes(b"half written")
    train_json, test_json = ensure_demo(tmp_path, **SMALL)
    assert len(labels(train_json)) == 3 * len(CLASSES)
    assert len(labels(test_json)) == 2 * len(CLASSES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo-killed", train_json.parent.name]


def test_caller_that_loses_the_race_uses_the_winners_set(tmp_path, monkeypatch):
    real_rename = os.rename

    def rename_after_another_caller_won(src, dst):
        monkeypatch.setattr(os, "rename", real_rename)
        ensure_demo(tmp_path, **SMALL)  # another process publishes the same set first
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_after_another_caller_won)
    train_json, test_json = ensure_demo(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == [train_json.parent.name]
    reference, _ = ensure_demo(tmp_path / "reference", **SMALL)
    assert files(train_json.parent) == files(reference.parent)


def test_concurrent_callers_share_one_complete_set(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure_demo(tmp_path, **SMALL), range(4)))
    assert len(set(results)) == 1
    train_json, test_json = results[0]
    assert [p.name for p in tmp_path.iterdir()] == [train_json.parent.name]
    assert len(labels(train_json)) + len(labels(test_json)) == 5 * len(CLASSES)


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(draw, w, h, rng):
        raise RuntimeError("drawing failed")

    monkeypatch.setitem(demo.DRAW, CLASSES[-1], broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        ensure_demo(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, key", [
    ({"image_size": 8}, "image_size"), ({"train_per_class": 0}, "train_per_class"),
    ({"test_per_class": 0}, "test_per_class"), ({"variant": "blobs"}, "reader.demo.variant='blobs'"),
])
def test_rejects_unusable_arguments(tmp_path, kwargs, key):
    with pytest.raises(UserError, match=key):
        ensure_demo(tmp_path, **{**SMALL, **kwargs})
    assert list(tmp_path.iterdir()) == []


def nearest_centroid(tmp_path, variant):
    """Test accuracy overall and per class of a translation-invariant nearest-centroid classifier.

    Features: magnitude of the 2-D Fourier transform of the standardised grey image, which ignores
    position and colour polarity. Class centroids come from train (20 per class at 32 px); test
    images (10 per class) are classified by the nearest centroid.
    """
    classes = VARIANTS[variant].classes
    train_json, test_json = ensure_demo(tmp_path, image_size=32, train_per_class=20, test_per_class=10,
                                        variant=variant)

    def features(json_path):
        rows, names = [], []
        for rel, name in labels(json_path).items():
            with Image.open(json_path.parent / rel) as image:
                grey = np.asarray(image.convert("L"), dtype=float)
            spectrum = np.abs(np.fft.fft2((grey - grey.mean()) / grey.std())).ravel()
            rows.append(spectrum / np.linalg.norm(spectrum))
            names.append(name)
        return np.array(rows), np.array(names)

    train_x, train_y = features(train_json)
    test_x, test_y = features(test_json)
    centroids = np.array([train_x[train_y == name].mean(axis=0) for name in classes])
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    predicted = np.array(classes)[np.argmax(test_x @ unit.T, axis=1)]
    per_class = {name: np.mean(predicted[test_y == name] == name) for name in classes}
    return np.mean(predicted == test_y), per_class


def test_classes_are_distinguishable_by_a_translation_invariant_nearest_centroid(tmp_path):
    """Each class must have its own look wherever it is drawn and whatever its colours.

    Chance is 1 in len(CLASSES); a broken or duplicated class drags its row down.
    """
    accuracy, per_class = nearest_centroid(tmp_path, "shapes")
    assert accuracy >= 0.75, per_class
    assert min(per_class.values()) >= 0.5, per_class


# The hard variant ---------------------------------------------------------------------------------

def pixels(json_path):
    """A digest of the decoded pixels of every listed image, in label-file order (PNG encoder independent)."""
    digest = hashlib.sha1()
    for rel in labels(json_path):
        with Image.open(json_path.parent / rel) as image:
            digest.update(image.tobytes())
    return digest.hexdigest()


def test_the_shapes_variant_is_the_default_set_unchanged(tmp_path):
    default = ensure_demo(tmp_path / "default", **SMALL)
    shapes = ensure_demo(tmp_path / "shapes", variant="shapes", **SMALL)
    assert default[0].parent.name == shapes[0].parent.name == "demo-24px-3x2-seed0"
    assert files(default[0].parent) == files(shapes[0].parent)
    assert VARIANTS["shapes"].classes == CLASSES
    # The shapes set's pixels are fixed: runs and benchmarks on it stay comparable.
    assert pixels(shapes[0]) == "e1a2a9967fa012261c54e2f81f9cdaaaf39ef554"
    assert pixels(shapes[1]) == "16ca1cb3797f97bad782fdf879e6585526abacd7"


def test_hard_has_twenty_or_more_classes_including_the_ten_listed_equally(tmp_path):
    classes = VARIANTS["hard"].classes
    assert len(classes) >= 20 and len(set(classes)) == len(classes)
    assert set(CLASSES) < set(classes)
    train_json, test_json = ensure_demo(tmp_path, variant="hard", **SMALL)
    for json_path, per_class in ((train_json, 3), (test_json, 2)):
        assert sorted(labels(json_path).values()) == sorted(classes * per_class)
    with Image.open(train_json.parent / next(iter(labels(train_json)))) as image:
        assert image.mode == "RGB" and image.size == (24, 24)


def test_hard_same_arguments_give_byte_identical_files_and_every_image_is_a_different_draw(tmp_path):
    one, one_test = ensure_demo(tmp_path / "one", variant="hard", **SMALL)
    two, _ = ensure_demo(tmp_path / "two", variant="hard", **SMALL)
    assert one.parent.name == two.parent.name
    assert files(one.parent) == files(two.parent)
    drawn = images(one) + images(one_test)
    assert len(set(drawn)) == len(drawn)
    seed1, _ = ensure_demo(tmp_path / "one", variant="hard", seed=1, **SMALL)
    assert all(a != b for a, b in zip(images(one), images(seed1)))


def test_the_two_variants_live_in_different_folders_of_one_data_dir(tmp_path):
    shapes, _ = ensure_demo(tmp_path, **SMALL)
    hard, _ = ensure_demo(tmp_path, variant="hard", **SMALL)
    assert shapes.parent != hard.parent
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([shapes.parent.name, hard.parent.name])
    assert len(labels(shapes)) == 3 * len(CLASSES)
    assert len(labels(hard)) == 3 * len(VARIANTS["hard"].classes)


def test_hard_images_are_cluttered_and_noisy_not_two_colours(tmp_path):
    train_json, _ = ensure_demo(tmp_path, variant="hard", **SMALL)
    for rel in labels(train_json):
        with Image.open(train_json.parent / rel) as image:
            assert len(image.getcolors(24 * 24)) > 50, rel


def test_hard_classes_stay_distinguishable_among_the_distractors(tmp_path):
    """The shapes test's nearest-centroid classifier: far above chance (1 in 22) for every class, confusable
    pairs included, so the variant is a learning task and not label noise."""
    accuracy, per_class = nearest_centroid(tmp_path, "hard")
    assert accuracy >= 0.6, per_class
    assert min(per_class.values()) >= 0.2, per_class


@pytest.mark.parametrize("variant", DEMO_VARIANTS)
def test_every_variant_the_config_accepts_can_be_built(tmp_path, variant):
    train_json, _ = ensure_demo(tmp_path, variant=variant, **SMALL)
    assert len(labels(train_json)) == 3 * len(VARIANTS[variant].classes)


def test_config_refuses_an_unknown_variant_naming_the_key():
    with pytest.raises(UserError, match=r"reader\.demo\.variant='blobs' is not one of shapes, hard"):
        DemoConfig(variant="blobs")
