"""Crop windows and resizing: reader.augment.crop (zoom, random_resized), the JPEG window decode, reader.resize."""
from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import TINY, run_py
from test_reader import OFF, collect, exif_block, noise_list, pil_upright, save_jpeg
from worklab.config.reader import AugmentConfig, ReaderConfig
from worklab.data import crops
from worklab.data.augment import draws
from worklab.data.imagelist import ImageList
from worklab.data.reader import (Reader, apply_orientation, cut, decode, load, resize, scale, scaled_window,
                                 stored_window)
from worklab.errors import UserError

RANDOM_RESIZED = {**OFF, "crop": "random_resized"}


def seeds_at(position: int, seed: int = 0) -> tf.Tensor:
    return draws(tf.constant([seed, position], tf.int64))


def photo(height: int = 96, width: int = 160) -> np.ndarray:
    """Smooth colour waves with a few hard blocks: JPEG keeps it close, and every crop of it looks different."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([128 + 100 * np.sin(x / 9.0), 128 + 100 * np.cos(y / 13.0), 128 + 90 * np.sin((x + y) / 21.0)],
                     -1)
    image[5:20, 10:40] = (250, 250, 250)
    image[-30:-10, -25:-5] = (200, 20, 20)
    return image.astype(np.uint8)


# random_resized windows ----------------------------------------------------------------------


@pytest.mark.parametrize("scale, ratio", [([0.08, 1.0], [3 / 4, 4 / 3]), ([0.3, 0.5], [0.5, 2.0])])
def test_random_resized_windows_lie_within_scale_and_ratio(scale, ratio):
    height, width = 300, 400
    windows = np.array([crops.random_resized(tf.constant([height, width]), scale, ratio, seeds_at(p)).numpy()
                        for p in range(200)])
    y, x, h, w = windows.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
    area = h * w / (height * width)
    # whole pixels: a side rounds by up to half a pixel, so area and ratio by about 1 / side
    slack = 1 / h.min() + 1 / w.min()
    assert (area >= scale[0] * (1 - slack)).all() and (area <= scale[1] * (1 + slack)).all()
    assert (w / h >= ratio[0] * (1 - slack)).all() and (w / h <= ratio[1] * (1 + slack)).all()
    # the draws spread over the ranges: area uniform, the ratio's logarithm uniform
    assert area.min() < scale[0] + 0.1 * (scale[1] - scale[0]) and area.max() > scale[1] - 0.2 * (scale[1] - scale[0])
    logs = (np.log(w / h) - math.log(ratio[0])) / (math.log(ratio[1]) - math.log(ratio[0]))
    assert 0.4 < np.median(logs) < 0.6 and logs.min() < 0.1 and logs.max() > 0.9
    assert len({tuple(window) for window in windows}) == len(windows)  # no two positions cut the same window


def test_random_resized_falls_back_to_the_largest_centred_window_within_ratio():
    """No draw fits a 10 x 400 image at 90% of its area and ratio <= 4/3: the centred 10 x 13 window is taken."""
    window = crops.random_resized(tf.constant([10, 400]), [0.9, 1.0], [3 / 4, 4 / 3], seeds_at(0)).numpy()
    assert list(window) == [0, (400 - 13) // 2, 10, 13]
    tall = crops.random_resized(tf.constant([400, 10]), [0.9, 1.0], [3 / 4, 4 / 3], seeds_at(0)).numpy()
    assert list(tall) == [(400 - 13) // 2, 0, 13, 10]
    narrow = crops.random_resized(tf.constant([90, 100]), [1.0, 1.0], [0.5, 0.6], seeds_at(0)).numpy()
    assert list(narrow) == [0, 23, 90, 54]  # width 0.6 x 90, centred
    # an image whose own ratio is within the range: the whole image
    assert list(crops.random_resized(tf.constant([100, 100]), [1.0, 1.0], [0.5, 2.0], seeds_at(0)).numpy()) == \
        [0, 0, 100, 100]


def ramp_list(folder: Path) -> ImageList:
    """One 240 x 320 PNG whose red channel is x / 2 and green channel y / 2: a crop shows where it was cut."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:240, 0:320]
    path = folder / "ramp.png"
    Image.fromarray(np.stack([x // 2, y // 2, np.zeros_like(x)], -1).astype(np.uint8)).save(path)
    return ImageList(str(folder / "list.json"), [str(path)], [0])


def measured_windows(images: np.ndarray) -> np.ndarray:
    """[x0, y0, width, height] of each crop of the ramp, from the ramp's slope and its middle value."""
    size = images.shape[1]
    red, green = images[..., 0] * 255 * 2, images[..., 1] * 255 * 2  # back to pixel coordinates
    middle = slice(size // 4, 3 * size // 4)
    width = (red[:, middle, 3 * size // 4] - red[:, middle, size // 4]).mean(1) * size / (size // 2)
    height = (green[:, 3 * size // 4, middle] - green[:, size // 4, middle]).mean(1) * size / (size // 2)
    x0 = red[:, middle, size // 2 - 1: size // 2 + 1].mean((1, 2)) - width / 2
    y0 = green[:, size // 2 - 1: size // 2 + 1, middle].mean((1, 2)) - height / 2
    return np.stack([x0, y0, width, height], 1)


def test_the_training_stream_crops_the_drawn_window_and_resume_recrops_it(tmp_path):
    """Through Reader.train: the window measured in each crop is the one drawn for its position; a stream opened
    at position k cuts the windows of the uninterrupted one."""
    ramp = ramp_list(tmp_path)
    cfg = ReaderConfig(source="json", image_size=32, batch_size=4, augment=AugmentConfig(**RANDOM_RESIZED))
    images, _, _ = collect(Reader(cfg, seed=3).train(ramp), steps=3)
    drawn = np.array([crops.random_resized(tf.constant([240, 320]), [0.08, 1.0], [3 / 4, 4 / 3],
                                           seeds_at(p, seed=3)).numpy() for p in range(12)])
    expected = np.stack([drawn[:, 1], drawn[:, 0], drawn[:, 3], drawn[:, 2]], 1)  # x0, y0, width, height
    measured = measured_windows(images)
    # the ramp is stored at half resolution (x // 2): positions are known to about 2 pixels
    np.testing.assert_allclose(measured, expected, atol=2 + 0.02 * expected.max())
    resumed, _, _ = collect(Reader(cfg, seed=3).train(ramp, start=5), steps=1)
    np.testing.assert_array_equal(resumed, images[5:9])


def test_same_seed_and_position_same_crop_other_position_other_crop(tmp_path):
    path = tmp_path / "noise.png"  # large enough that two windows seldom round to the same pixels
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    one = ImageList(str(tmp_path / "list.json"), [str(path)], [0])  # every position of the stream is this image
    cfg = ReaderConfig(source="json", image_size=8, batch_size=6, augment=AugmentConfig(**RANDOM_RESIZED))
    a, _, _ = collect(Reader(cfg, seed=1).train(one), steps=1)
    b, _, _ = collect(Reader(cfg, seed=1).train(one), steps=1)
    np.testing.assert_array_equal(a, b)
    for i in range(len(a)):
        for j in range(i):
            assert not np.allclose(a[i], a[j], atol=1e-3), (i, j)


# A list of 5: 5 and 7 start in the second epoch; by default an odd start and the boundary.
@pytest.mark.parametrize("start", [1, pytest.param(4, marks=pytest.mark.slow), 5,
                                   pytest.param(7, marks=pytest.mark.slow)])
def test_resume_equals_the_tail_of_the_uninterrupted_stream_with_random_resized(tmp_path, start):
    noise = noise_list(tmp_path, 5)
    augment = {"crop": "random_resized", "brightness": 0.2, "contrast": 0.3, "flip": True, "crop_scale": [0.2, 1.0]}
    cfg = ReaderConfig(source="json", image_size=8, batch_size=2, augment=AugmentConfig(**augment))
    full, full_y, _ = collect(Reader(cfg, seed=7).train(noise), steps=7)
    steps = (len(full) - start) // 2
    tail, tail_y, _ = collect(Reader(cfg, seed=7).train(noise, start=start), steps=steps)
    np.testing.assert_array_equal(tail_y, full_y[start:start + 2 * steps])
    np.testing.assert_array_equal(tail, full[start:start + 2 * steps])


# The JPEG window decode ----------------------------------------------------------------------


def asymmetric_window(shape):
    """A window off centre in both directions, so a wrongly mapped orientation cuts elsewhere."""
    shape = tf.cast(shape, tf.int32)
    return tf.stack([shape[0] // 7, shape[1] // 3, shape[0] // 2, shape[1] // 2 + 3])


@pytest.mark.parametrize("value", range(1, 9))
def test_jpeg_window_decode_equals_cutting_the_whole_upright_decode(tmp_path, value):
    """Exact inside; along the window's edges the decoder's smooth chroma upsampling lacks the pixels beyond the
    window, which moves a few levels in the edge row and column."""
    path = save_jpeg(tmp_path / f"o{value}.jpg", photo(), exif_block(value))
    contents = tf.io.read_file(str(path))
    piece = apply_orientation(*stored_window(contents, asymmetric_window, None))
    fast = piece.numpy().astype(np.int32)
    full = cut(decode(contents), asymmetric_window(tf.shape(decode(contents))[:2])).numpy().astype(np.int32)
    assert fast.shape == full.shape
    np.testing.assert_array_equal(fast[1:-1, 1:-1], full[1:-1, 1:-1])
    assert np.abs(fast - full).max() <= 32 and np.abs(fast - full).mean() < 0.5
    upright = tf.constant(pil_upright(path))
    expected = cut(upright, asymmetric_window(upright.shape[:2])).numpy()
    assert np.abs(fast - expected).mean() < 3  # the upright picture's window, as PIL turns it
    # resized before it is turned: the same values as turning first, up to the order of the filter's passes
    for resample in ("bilinear", "area"):
        np.testing.assert_allclose(scaled_window(contents, asymmetric_window, 32, resample).numpy(),
                                   scale(piece, 32, resample).numpy(), atol=1e-3)


def test_orientation_6_photo_crops_to_the_same_upright_window_as_the_upright_png(tmp_path):
    """A phone photo stored turned (EXIF 6) and the same picture saved upright give the same training crop."""
    scene = photo(96, 160)
    turned = save_jpeg(tmp_path / "turned.jpg", np.rot90(scene, 1), exif_block(6))
    upright = tmp_path / "upright.png"
    Image.fromarray(pil_upright(turned).astype(np.uint8)).save(upright)
    a, b = (scaled_window(tf.io.read_file(str(p)), asymmetric_window, 40, "bilinear").numpy() for p in (turned, upright))
    assert a.shape == b.shape == (40, 40, 3)
    assert np.abs(a - b).mean() < 2
    assert np.abs(a - scale(cut(tf.constant(scene), asymmetric_window(scene.shape[:2])), 40, "bilinear")).mean() < 3


def test_dct_scaled_decode_of_a_large_window_is_close_to_the_full_decode(tmp_path):
    """A 768 x 1280 photo cropped to 32 px is decoded at 1/8 scale (each 8 x 8 block averaged by the decoder): the
    resized crop stays within a few levels of the one resized from the full decode."""
    big = np.asarray(Image.fromarray(photo()).resize((1280, 768), Image.BICUBIC))
    contents = tf.io.read_file(str(save_jpeg(tmp_path / "big.jpg", big)))
    window = lambda shape: tf.constant([100, 200, 600, 900])  # noqa: E731
    reduced, _ = stored_window(contents, window, 32)
    assert reduced.shape == (75, 113, 3)  # 600 x 900 at 1/8, edges rounded
    scaled, full = (scale(piece, 32, "area").numpy() for piece in (reduced, stored_window(contents, window, None)[0]))
    # the window's edges round to the 1/8 grid, up to 4 pixels of 900: a hard edge moves by up to 0.15 px
    assert np.abs(scaled - full).mean() < 3 and np.percentile(np.abs(scaled - full), 99) < 25


def test_a_large_photo_is_tested_from_a_reduced_decode_close_to_the_full_one(tmp_path):
    """reader.resample=area decodes a 1280 x 768 JPEG at 1/8 for a 32 px test input (not bit for bit the full
    decode's, within a level or two of it); a run from before the key (antialias) decodes it whole, as then."""
    big = np.asarray(Image.fromarray(photo()).resize((1280, 768), Image.BICUBIC))
    contents = tf.io.read_file(str(save_jpeg(tmp_path / "big.jpg", big)))
    area, before = ReaderConfig(image_size=32, resample="area"), ReaderConfig(image_size=32, resample="antialias")
    reduced, full = load(contents, area).numpy(), scale(decode(contents), 32, "area").numpy()
    assert 0 < np.abs(reduced - full).mean() < 2
    np.testing.assert_array_equal(load(contents, before).numpy(), resize(decode(contents), before).numpy())


# reader.resize -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_and_tall(tmp_path_factory):
    """A 2:1 and a 1:2 PNG: the outer quarters red and blue, the middle half green with a dark centre spot."""
    folder = tmp_path_factory.mktemp("aspect")
    paths = []
    for name, (height, width) in (("wide", (40, 80)), ("tall", (80, 40))):
        image = np.zeros((height, width, 3), np.uint8)
        image[...] = (0, 200, 0)
        quarter = max(height, width) // 4
        if width > height:
            image[:, :quarter], image[:, -quarter:] = (200, 0, 0), (0, 0, 200)
        else:
            image[:quarter], image[-quarter:] = (200, 0, 0), (0, 0, 200)
        image[height // 2 - 4:height // 2 + 4, width // 2 - 4:width // 2 + 4] = (0, 40, 0)
        Image.fromarray(image).save(folder / f"{name}.png")
        paths.append(str(folder / f"{name}.png"))
    return ImageList(str(folder / "list.json"), paths, [0, 1])


def test_resize_crop_keeps_the_aspect_and_shows_the_centre_squash_shows_all(wide_and_tall):
    crop = ReaderConfig(source="json", image_size=16, batch_size=2, resize="crop", crop_fraction=1.0)
    squash = ReaderConfig(source="json", image_size=16, batch_size=2)
    cropped, _, _ = collect(Reader(crop, 0).test(wide_and_tall))
    squashed, _, _ = collect(Reader(squash, 0).test(wide_and_tall))
    for image in cropped:  # the middle half only: green, with the spot as a square (8/40 of 16 = 3.2 px)
        assert image[..., 0].max() < 0.05 and image[..., 2].max() < 0.05
        spot = image[..., 1] < 0.5
        rows, columns = spot.any(1).sum(), spot.any(0).sum()
        assert rows == columns and 3 <= rows <= 5
    wide, tall = squashed
    assert wide[:, :3, 0].min() > 0.7 and wide[:, -3:, 2].min() > 0.7  # red and blue ends, squeezed in
    assert tall[:3, :, 0].min() > 0.7 and tall[-3:, :, 2].min() > 0.7
    spot = wide[..., 1] < 0.5
    assert spot.any(0).sum() < spot.any(1).sum()  # the square spot squashed narrower than tall


def test_resize_crop_fraction_takes_that_share_of_the_shorter_side(wide_and_tall):
    cfg = ReaderConfig(source="json", image_size=20, batch_size=2, resize="crop", crop_fraction=0.5)
    images, _, _ = collect(Reader(cfg, 0).test(wide_and_tall))
    for image in images:  # the centre 20 x 20 of the 40 px side holds the 8 px spot: 8/20 of 20 px
        spot = image[..., 1] < 0.5
        assert 7 <= spot.any(1).sum() <= 9 and 7 <= spot.any(0).sum() <= 9


@pytest.mark.parametrize("cache", [False, True])
def test_test_time_reading_is_deterministic_and_training_zoom_starts_from_the_crop(wide_and_tall, cache):
    cfg = ReaderConfig(source="json", image_size=16, batch_size=2, resize="crop", crop_fraction=1.0, cache=cache,
                       augment=AugmentConfig(**{**OFF, "zoom": 0.2}))
    first, _, _ = collect(Reader(cfg, 0).test(wide_and_tall))
    second, _, _ = collect(Reader(cfg, 0).test(wide_and_tall))
    np.testing.assert_array_equal(first, second)
    trained, _, _ = collect(Reader(cfg, 0).train(wide_and_tall), steps=4)
    assert trained[..., 0].max() < 0.05 and trained[..., 2].max() < 0.05  # zoomed within the centre: no red, blue


# Bad keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: AugmentConfig(crop="centre"), "reader.augment.crop='centre' is not one of zoom, random_resized"),
    (lambda: AugmentConfig(crop="random_resized", crop_scale=[0.5, 0.1]), "reader.augment.crop_scale=[0.5, 0.1]"),
    (lambda: AugmentConfig(crop="random_resized", crop_scale=[0.0, 1.0]), "reader.augment.crop_scale=[0.0, 1.0]"),
    (lambda: AugmentConfig(crop="random_resized", crop_scale=[0.5, 1.5]), "must lie in (0, 1]"),
    (lambda: AugmentConfig(crop="random_resized", crop_scale=[0.5]), "reader.augment.crop_scale=[0.5]"),
    (lambda: AugmentConfig(crop="random_resized", crop_ratio=[2.0, 1.0]), "reader.augment.crop_ratio=[2.0, 1.0]"),
    (lambda: AugmentConfig(crop="random_resized", crop_ratio=[0.0, 1.0]), "crop_ratio=[0.0, 1.0] must be positive"),
    (lambda: AugmentConfig(crop="random_resized", zoom=0.3), "reader.augment.zoom=0.3 has no effect with "
                                                             "reader.augment.crop=random_resized"),
    (lambda: AugmentConfig(crop_scale=[0.2, 1.0]), "reader.augment.crop_scale=[0.2, 1.0] has no effect with "
                                                   "reader.augment.crop=zoom"),
    (lambda: ReaderConfig(resize="pad"), "reader.resize='pad' is not one of squash, crop"),
    (lambda: ReaderConfig(resize="crop", crop_fraction=0.0), "reader.crop_fraction=0.0 must be in (0, 1]"),
    (lambda: ReaderConfig(resize="crop", crop_fraction=1.2), "reader.crop_fraction=1.2 must be in (0, 1]"),
    (lambda: ReaderConfig(crop_fraction=0.9), "reader.crop_fraction=0.9 has no effect with reader.resize=squash"),
    (lambda: ReaderConfig(cache=True, augment=AugmentConfig(crop="random_resized")),
     "reader.cache=true with reader.augment.crop=random_resized"),
])
def test_bad_crop_and_resize_keys_are_refused_naming_the_key(make, message):
    with pytest.raises(UserError) as error:
        make()
    assert message in str(error.value)


def test_bad_crop_scale_on_the_command_line_exits_2_and_writes_nothing(tmp_path, data_dir):
    run = tmp_path / "run"
    result = run_py([*TINY, f"data_dir={data_dir}", f"hydra.run.dir={run}", "reader.augment.crop=random_resized",
                     "reader.augment.crop_scale=[0.9,0.2]"], tmp_path)
    assert result.returncode == 2
    assert "reader.augment.crop_scale=[0.9, 0.2] must be a range" in result.stdout + result.stderr
    assert not run.exists()
