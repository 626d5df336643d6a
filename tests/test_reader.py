"""Tests for worklab.data.reader: decoding upright, the ordered test pass, the endless resumable training stream,
caching."""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from worklab.config.reader import AugmentConfig, ReaderConfig
from worklab.data.augment import shifted
from worklab.data.imagelist import ImageList
from worklab.data.reader import Reader, decode, find_undecodable, orientation

SIZE = 8
OFF = dict(zoom=0, shift=0, brightness=0, contrast=0, rotate90=False, flip=False)
ON = dict(zoom=0.25, shift=0.2, brightness=0.2, contrast=0.3, rotate90=True, flip=True)


def config(batch_size: int = 3, augment=OFF, **kwargs) -> ReaderConfig:
    return ReaderConfig(source="json", image_size=SIZE, batch_size=batch_size, augment=AugmentConfig(**augment),
                        **kwargs)


def colour_of(i: int) -> Tuple[int, int, int]:
    """A distinct solid colour per index, far enough apart to tell apart after resizing."""
    return (10 + 23 * i) % 256, (250 - 31 * i) % 256, (40 + 57 * i) % 256


def solid_list(folder: Path, n: int, fmt: str = "PNG") -> ImageList:
    """n solid-colour images; image i has colour_of(i) and label i (one class per image)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i}.{fmt.lower()}"
        # sizes vary so resizing to SIZE both shrinks and enlarges
        Image.new("RGB", (5 + 3 * i, 14 - i % 4), colour_of(i)).save(path, fmt)
        paths.append(str(path))
    return ImageList(str(folder / "list.json"), paths, list(range(n)))


def noise_list(folder: Path, n: int) -> ImageList:
    """n random-texture images, so every augmentation visibly changes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    paths = []
    for i in range(n):
        path = folder / f"noise_{i}.png"
        Image.fromarray(rng.randint(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageList(str(folder / "list.json"), paths, [i % 3 for i in range(n)])


def collect(dataset: tf.data.Dataset, steps: int = None) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """(images / 255, labels, batch sizes) of the first `steps` batches (all of them if None).

    The reader hands out 0-255 pixels; the tests compare them on [0, 1].
    """
    if steps is not None:
        dataset = dataset.take(steps)
    xs, ys = [], []
    for x, y in dataset:
        xs.append(x.numpy() / 255.0)
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys), [len(y) for y in ys]


def identities(images: np.ndarray) -> List[int]:
    """The index of the solid colour each (un-augmented, unnormalised) image has."""
    colours = np.array([colour_of(i) for i in range(64)], np.float32) / 255.0
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    return [int(np.argmin(np.abs(colours - m).sum(axis=1))) for m in means]


@pytest.fixture(scope="module")
def seven(tmp_path_factory) -> ImageList:
    return solid_list(tmp_path_factory.mktemp("seven"), 7)


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> ImageList:
    return noise_list(tmp_path_factory.mktemp("noise"), 5)


# Decoding ------------------------------------------------------------------------------------


def test_formats_decode_to_rgb_at_image_size_with_exact_colours(tmp_path):
    colour = (200, 30, 60)
    cases = []  # (path, expected RGB, tolerance in 0..255)

    def add(name, image, fmt, expected, tol=1.0, **save):
        path = tmp_path / name
        image.save(path, fmt, **save)
        cases.append((str(path), expected, tol))

    add("rgb.jpg", Image.new("RGB", (11, 7), colour), "JPEG", colour, tol=4.0, quality=100)
    add("rgb.png", Image.new("RGB", (20, 13), colour), "PNG", colour)
    add("rgb.bmp", Image.new("RGB", (6, 9), colour), "BMP", colour)
    frames = [Image.new("RGB", (10, 10), c) for c in (colour, (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    assert Image.open(path).n_frames == 3
    cases.append((str(path), colour, 1.0))  # the first frame
    add("grey.png", Image.new("L", (9, 9), 90), "PNG", (90, 90, 90))
    add("rgba.png", Image.new("RGBA", (9, 17), colour + (128,)), "PNG", colour)  # alpha dropped
    add("rgb.webp", Image.new("RGB", (12, 10), colour), "WEBP", colour, lossless=True)
    add("grey_alpha.png", Image.new("LA", (7, 9), (90, 30)), "PNG", (90, 90, 90))
    add("rgba.webp", Image.new("RGBA", (8, 14), colour + (200,)), "WEBP", colour, lossless=True)
    images = ImageList("list.json", [p for p, _, _ in cases], list(range(len(cases))))

    x, y, sizes = collect(Reader(config(batch_size=len(cases)), seed=0).test(images))

    assert sizes == [len(cases)]
    assert x.shape == (len(cases), SIZE, SIZE, 3) and x.dtype == np.float32
    assert list(y) == list(range(len(cases)))
    for image, (path, expected, tol) in zip(x, cases):
        np.testing.assert_allclose(image, np.broadcast_to(np.array(expected) / 255.0, image.shape),
                                   atol=tol / 255.0, err_msg=path)


def test_pixels_are_0_to_255_rgb_whatever_reader_mean_and_std(tmp_path):
    """Scaling is the network's first layer now: reader.mean and reader.std do not touch the reader's output."""
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (255, 0, 51)).save(path)
    cfg = ReaderConfig(source="json", image_size=SIZE, batch_size=1, mean=[0.5, 0.0, 0.1], std=[0.25, 2.0, 0.1],
                       augment=AugmentConfig(**OFF))
    x, _ = next(iter(Reader(cfg, 0).test(ImageList("l", [str(path)], [0]))))
    np.testing.assert_allclose(x.numpy()[0, 0, 0], [255.0, 0.0, 51.0], atol=1e-3)


# EXIF orientation ----------------------------------------------------------------------------


def upright_scene(height: int = 24, width: int = 40) -> np.ndarray:
    """A picture that every turn and flip changes: coloured corner blocks on a ramp."""
    scene = np.zeros((height, width, 3), np.uint8)
    scene[..., 2] = np.linspace(0, 250, width, dtype=np.uint8)[None]
    scene[: height // 3, : width // 4] = (255, 255, 255)
    scene[-height // 2:, -width // 4:] = (220, 20, 20)
    scene[-height // 4:, : width // 5] = (20, 220, 20)
    return scene


def exif_block(value: int, order: bytes = b"II", tag: int = 0x0112, kind: int = 3) -> bytes:
    """EXIF data with an IFD0 of two entries: Make, then Orientation = value (SHORT), in byte order II or MM."""
    e = "<" if order == b"II" else ">"
    entries = [struct.pack(e + "HHI", 0x010F, 2, 4) + b"ab\0\0",
               struct.pack(e + "HHI", tag, kind, 1) + struct.pack(e + "HH", value, 0)]
    return b"Exif\0\0" + order + struct.pack(e + "HIH", 42, 8, len(entries)) + b"".join(entries) + b"\0" * 4


def save_jpeg(path: Path, pixels: np.ndarray, exif: bytes = b"") -> Path:
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif)
    return path


def pil_upright(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB")).astype(np.float32)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) if a.shape == b.shape else np.inf


@pytest.mark.parametrize("order", [b"II", b"MM"])
@pytest.mark.parametrize("value", range(1, 9))
def test_decode_applies_exif_orientation_as_pil_does(tmp_path, value, order):
    path = save_jpeg(tmp_path / f"photo_{value}.jpg", upright_scene(), exif_block(value, order))
    contents = tf.io.read_file(str(path))

    decoded = decode(contents).numpy()
    expected = pil_upright(path)

    assert int(orientation(contents)) == value
    assert decoded.shape == expected.shape
    assert mean_difference(decoded, expected) < 3  # JPEG decoders differ by about one level
    if value != 1:  # as stored, the pixels are far from upright
        stored = tf.io.decode_image(contents, channels=3).numpy()
        assert mean_difference(stored, expected) > 20


@pytest.mark.parametrize("case", ["png", "plain jpeg", "no orientation tag", "orientation 9", "type LONG",
                                  "cut inside exif", "bad byte order", "garbage", "empty"])
def test_orientation_is_1_without_a_valid_exif_orientation(tmp_path, case):
    scene = upright_scene()
    photo = save_jpeg(tmp_path / "photo.jpg", scene, exif_block(6)).read_bytes()
    at = photo.index(b"Exif\0\0")
    contents = {
        "png": lambda: png_bytes(tmp_path, scene),
        "plain jpeg": lambda: save_jpeg(tmp_path / "plain.jpg", scene).read_bytes(),
        "no orientation tag": lambda: save_jpeg(tmp_path / "t.jpg", scene, exif_block(6, tag=0x0110)).read_bytes(),
        "orientation 9": lambda: save_jpeg(tmp_path / "n.jpg", scene, exif_block(9)).read_bytes(),
        "type LONG": lambda: save_jpeg(tmp_path / "l.jpg", scene, exif_block(6, kind=4)).read_bytes(),
        "cut inside exif": lambda: photo[:at + 20],
        "bad byte order": lambda: photo[:at + 6] + b"XX" + photo[at + 8:],
        "garbage": lambda: os.urandom(5000),
        "empty": lambda: b"",
    }[case]()
    assert int(orientation(tf.constant(contents))) == 1


def segment(marker: int, payload: bytes) -> bytes:
    """A JPEG segment: FF, its marker, its big-endian length (which counts itself), its payload."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def test_orientation_is_found_after_other_segments_and_only_in_app1(tmp_path):
    scene = upright_scene()
    photo = save_jpeg(tmp_path / "photo.jpg", scene, exif_block(6)).read_bytes()
    plain = save_jpeg(tmp_path / "plain.jpg", scene).read_bytes()
    comment, icc = segment(0xFE, b"made by a scanner"), segment(0xE2, b"ICC_PROFILE\0" + bytes(300))
    # JFIF's APP0, a comment and an ICC profile before the EXIF, as editors write them
    behind = photo[:2] + plain[2:20] + comment + icc + photo[2:]
    assert plain[2:4] == b"\xff\xe0" and int(orientation(tf.constant(behind))) == 6
    # the same EXIF bytes in a comment are not the image's EXIF
    assert int(orientation(tf.constant(plain[:2] + segment(0xFE, exif_block(6)) + plain[2:]))) == 1


def png_bytes(folder: Path, pixels: np.ndarray) -> bytes:
    path = folder / "upright.png"
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def test_orientation_written_by_pil_is_read(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save_jpeg(tmp_path / "pil.jpg", upright_scene(), exif.tobytes())
    assert int(orientation(tf.io.read_file(str(path)))) == 6
    assert mean_difference(decode(tf.io.read_file(str(path))).numpy(), pil_upright(path)) < 3


@pytest.fixture(scope="module")
def turned(tmp_path_factory) -> ImageList:
    """A phone photo stored turned (EXIF 6), the same picture upright as PNG, and a turn-8 photo with its PNG."""
    folder = tmp_path_factory.mktemp("turned")
    paths = []
    for value, turns in ((6, 1), (8, -1)):  # 6: stored a quarter turn to the left of upright; 8: to the right
        photo = save_jpeg(folder / f"photo_{value}.jpg", np.rot90(upright_scene(), turns), exif_block(value))
        assert mean_difference(pil_upright(photo), upright_scene()) < 6  # JPEG loses a little at colour edges
        Image.fromarray(pil_upright(photo).astype(np.uint8)).save(folder / f"upright_{value}.png")
        paths += [str(photo), str(folder / f"upright_{value}.png")]
    return ImageList(str(folder / "list.json"), paths, [0, 1, 2, 3])


@pytest.mark.parametrize("cache", [False, True])
def test_training_testing_and_cache_see_the_upright_image(turned, cache):
    reader = Reader(config(batch_size=4, cache=cache), seed=0)
    tested, _, _ = collect(reader.test(turned))
    trained, labels, _ = collect(reader.train(turned), steps=1)
    trained = trained[np.argsort(labels)]
    for images in (tested, trained):
        for photo, upright, turns in ((images[0], images[1], 1), (images[2], images[3], -1)):
            # JPEG's chroma at a decoded window's edge differs by a few levels (scaled_window): a few pixels there
            assert np.abs(photo - upright).mean() < 0.02 and np.abs(photo - upright).max() < 0.15
            assert np.abs(photo - np.rot90(upright, turns)).mean() > 0.1  # as stored, it would be far off


def test_decode_works_in_a_saved_model_on_raw_jpeg_bytes(tmp_path, turned):
    module = tf.Module()
    module.decode = tf.function(decode, input_signature=[tf.TensorSpec([], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "exported"))
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    for path in turned.paths:
        contents = Path(path).read_bytes()
        assert mean_difference(loaded.decode(tf.constant(contents)).numpy(), pil_upright(Path(path))) < 3


# The test pass -------------------------------------------------------------------------------


def test_test_pass_every_example_once_in_order_with_partial_last_batch(seven):
    x, y, sizes = collect(Reader(config(batch_size=3), seed=0).test(seven))
    assert sizes == [3, 3, 1]
    assert list(y) == list(range(7))
    assert identities(x) == list(range(7))


def test_test_batch_size_overrides_batch_size(seven):
    _, y, sizes = collect(Reader(config(batch_size=2, test_batch_size=4), seed=0).test(seven))
    assert sizes == [4, 3]
    assert list(y) == list(range(7))


def test_test_images_are_not_augmented(noise):
    on = Reader(config(batch_size=2, augment=ON), seed=3)
    first, y1, _ = collect(on.test(noise))
    second, y2, _ = collect(on.test(noise))
    plain, y3, _ = collect(Reader(config(batch_size=2), seed=3).test(noise))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, plain)
    assert list(y1) == list(y2) == list(y3) == noise.labels


# The training stream -------------------------------------------------------------------------


def test_train_full_batches_and_each_epoch_a_permutation(seven):
    epochs = 4
    dataset = Reader(config(batch_size=3), seed=5).train(seven)
    assert dataset.element_spec[0].shape == (3, SIZE, SIZE, 3)  # static batch size: drop_remainder
    assert dataset.element_spec[1].shape == (3,)
    x, y, sizes = collect(dataset, steps=7 * epochs // 3 + 1)
    assert all(s == 3 for s in sizes)  # drop_remainder: no short batch at epoch ends
    assert x.shape[1:] == (SIZE, SIZE, 3)
    assert identities(x) == list(y)  # each label belongs to its own image
    orders = [list(y[e * 7:(e + 1) * 7]) for e in range(epochs)]
    for order in orders:
        assert sorted(order) == list(range(7))
    assert len({tuple(o) for o in orders}) > 1  # reshuffled between epochs
    assert orders[0] != list(range(7))  # shuffled at all


def test_train_is_deterministic_per_seed(noise, seven):
    a, ya, _ = collect(Reader(config(batch_size=2, augment=ON), seed=11).train(noise), steps=8)
    b, yb, _ = collect(Reader(config(batch_size=2, augment=ON), seed=11).train(noise), steps=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    c, _, _ = collect(Reader(config(batch_size=2, augment=ON), seed=12).train(noise), steps=8)
    assert not np.allclose(a, c)
    # the order differs for another seed too (one class per image)
    _, o1, _ = collect(Reader(config(batch_size=7), seed=11).train(seven), steps=3)
    _, o2, _ = collect(Reader(config(batch_size=7), seed=12).train(seven), steps=3)
    assert list(o1) != list(o2)


SLOW = pytest.mark.slow


# A list of 5: 5, 6, 12, 13 cross epoch boundaries. By default an odd start, the boundary itself and a later
# epoch; the other starts in the slow suite.
@pytest.mark.parametrize("start", [1, pytest.param(4, marks=SLOW), 5, pytest.param(6, marks=SLOW),
                                   pytest.param(12, marks=SLOW), 13])
def test_resume_from_position_equals_tail_of_full_stream_with_augmentation(noise, start):
    cfg = config(batch_size=2, augment=ON)
    full, full_y, _ = collect(Reader(cfg, seed=7).train(noise), steps=12)  # 24 examples, almost 5 epochs
    steps = (len(full) - start) // 2
    tail, tail_y, sizes = collect(Reader(cfg, seed=7).train(noise, start=start), steps=steps)
    assert sizes == [2] * steps
    np.testing.assert_array_equal(tail_y, full_y[start:start + 2 * steps])
    np.testing.assert_array_equal(tail, full[start:start + 2 * steps])


@pytest.mark.parametrize("start", [pytest.param(0, marks=pytest.mark.slow), 6])  # 6: a resumed stream
def test_each_pipeline_of_a_cluster_reads_its_own_part_of_every_global_batch(noise, start):
    """Two workers, each with two replicas' share (2 of the global batch of 4): together, the one-process stream."""
    cfg = config(batch_size=4, augment=ON)
    full, full_y, _ = collect(Reader(cfg, seed=3).train(noise, start=start), steps=5)
    parts = [collect(Reader(cfg, seed=3).train(noise, start=start, pipeline=(i, 2), batch=1), steps=10)
             for i in range(2)]
    for i, (x, y, sizes) in enumerate(parts):
        assert sizes == [1] * 10
        rows = [4 * step + 2 * i + k for step in range(5) for k in range(2)]
        np.testing.assert_array_equal(y, full_y[rows])
        np.testing.assert_array_equal(x, full[rows])


def test_resume_with_identities_across_epoch_boundary(seven):
    cfg = config(batch_size=3)
    _, full, _ = collect(Reader(cfg, seed=2).train(seven), steps=10)  # 30 examples, > 4 epochs
    for start in (7, 9, 16):
        _, tail, _ = collect(Reader(cfg, seed=2).train(seven, start=start), steps=4)
        assert list(tail) == list(full[start:start + 12])


def test_augmentation_changes_training_images(noise):
    plain, y_plain, _ = collect(Reader(config(batch_size=5), seed=4).train(noise), steps=2)
    augmented, y_aug, _ = collect(Reader(config(batch_size=5, augment=ON), seed=4).train(noise), steps=2)
    np.testing.assert_array_equal(y_plain, y_aug)  # same order: the shuffle does not depend on augmentation
    assert all(not np.allclose(p, a, atol=1e-3) for p, a in zip(plain, augmented))
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0  # clipped to [0, 255]
    # without augmentation the training images equal the test images of the same files
    test_images, _, _ = collect(Reader(config(batch_size=5), seed=4).test(noise))
    for image in plain:
        assert any(np.allclose(image, t, atol=1e-6) for t in test_images)


def test_same_image_is_augmented_differently_in_each_epoch(tmp_path):
    one = noise_list(tmp_path, 1)  # a single image: every position of the stream is that image
    x, y, _ = collect(Reader(config(batch_size=2, augment=ON), seed=0).train(one), steps=3)
    assert list(y) == [0] * 6
    for i in range(len(x)):
        for j in range(i):
            assert not np.allclose(x[i], x[j], atol=1e-3), (i, j)


@pytest.mark.parametrize("name,value", [("zoom", 0.3), ("shift", 0.25), ("brightness", 0.3), ("contrast", 0.5),
                                        ("rotate90", True), ("flip", True)])
def test_each_augmentation_alone_changes_some_images(noise, name, value):
    plain, _, _ = collect(Reader(config(batch_size=5), seed=9).train(noise), steps=4)
    augmented, _, _ = collect(Reader(config(batch_size=5, augment={**OFF, name: value}), seed=9).train(noise),
                              steps=4)
    assert augmented.shape == plain.shape
    assert any(not np.allclose(p, a, atol=1e-3) for p, a in zip(plain, augmented))


def test_a_shift_moves_the_pixels_as_reflect_padding_and_a_random_crop_would():
    rng = np.random.default_rng(0)
    for _ in range(40):
        size, seed = int(rng.integers(8, 40)), tf.constant(rng.integers(0, 2 ** 31, 2))
        pad = int(rng.integers(0, size // 2))
        image = tf.constant(rng.uniform(0, 255, (size, size, 3)).astype(np.float32))
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        expected = tf.image.stateless_random_crop(padded, [size, size, 3], seed)
        np.testing.assert_array_equal(shifted(image, tf.constant(pad), seed).numpy(), expected.numpy())


def test_training_batches_keep_their_static_shape(noise):
    """A network built for a fixed input size (a SavedModel's signature) is traced with the batches' shape."""
    batches = Reader(config(batch_size=4, augment=ON), seed=0).train(noise)
    assert batches.element_spec[0].shape.as_list() == [4, SIZE, SIZE, 3]


# Cache ---------------------------------------------------------------------------------------


def test_cache_gives_the_same_test_batches(seven, noise):
    for images in (seven, noise):
        plain, y1, s1 = collect(Reader(config(batch_size=3), seed=0).test(images))
        cached, y2, s2 = collect(Reader(config(batch_size=3, cache=True), seed=0).test(images))
        assert s1 == s2
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_allclose(cached, plain, atol=0.51 / 255.0)  # uint8 rounding


def test_train_works_with_cache(seven, noise):
    x, y, sizes = collect(Reader(config(batch_size=3, cache=True), seed=1).train(seven), steps=5)
    assert sizes == [3] * 5
    assert identities(x) == list(y)
    _, y_plain, _ = collect(Reader(config(batch_size=3), seed=1).train(seven), steps=5)
    np.testing.assert_array_equal(y, y_plain)
    # augmented, cached and uncached streams agree up to the rounding of the cache; not with zoom, whose window
    # is cut in whole pixels of the image it is cut from (the file's 12 px, the cache's 8 px), so it rounds apart
    unzoomed = {**ON, "zoom": 0}
    a, _, _ = collect(Reader(config(batch_size=2, augment=unzoomed, cache=True), seed=1).train(noise, start=3), 4)
    b, _, _ = collect(Reader(config(batch_size=2, augment=unzoomed), seed=1).train(noise, start=3), steps=4)
    np.testing.assert_allclose(a, b, atol=0.02)


# find_undecodable ----------------------------------------------------------------------------


def test_find_undecodable_returns_exactly_the_corrupt_paths(tmp_path, seven):
    noise_jpg = tmp_path / "noise.jpg"
    noise_jpg.write_bytes(os.urandom(300))
    png = Path(seven.paths[0]).read_bytes()
    cut_header = tmp_path / "cut_header.png"
    cut_header.write_bytes(png[:20])
    rng = np.random.RandomState(1)
    big = tmp_path / "big.jpg"
    Image.fromarray(rng.randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(big, quality=90)
    cut_jpeg = tmp_path / "cut_data.jpg"  # header intact, scan data cut short
    cut_jpeg.write_bytes(big.read_bytes()[: int(big.stat().st_size * 0.8)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = seven.paths[:4] + [str(big)]
    paths = [good[0], str(noise_jpg), good[1], str(cut_header), good[2], str(cut_jpeg), good[3], str(empty),
             good[4]]

    assert find_undecodable(paths) == [str(noise_jpg), str(cut_header), str(cut_jpeg), str(empty)]
    assert find_undecodable(good) == []


# reader.resample ---------------------------------------------------------------------------------


def test_area_shrinks_to_the_mean_of_each_block_and_enlarges_smoothly():
    from worklab.data.reader import scale

    image = np.random.RandomState(0).randint(0, 256, (64, 48, 3)).astype(np.uint8)
    blocks = image.reshape(16, 4, 16, 3, 3).astype(np.float64).mean(axis=(1, 3))  # 4 x 3 blocks -> 16 x 16
    np.testing.assert_allclose(scale(tf.constant(image), 16, "area").numpy(), blocks, atol=1e-3)
    enlarged = scale(tf.constant(image[:8, :8]), 16, "area").numpy()
    steps = np.abs(np.diff(enlarged, axis=0)).max()
    assert steps < np.abs(np.diff(image[:8, :8].astype(float), axis=0)).max()  # interpolated, not repeated


def test_area_and_antialias_agree_on_a_photo_within_a_level():
    from worklab.data.reader import scale

    photo = np.asarray(Image.fromarray(np.random.RandomState(1).randint(0, 256, (6, 8, 3)).astype(np.uint8))
                       .resize((500, 375), Image.BICUBIC))
    area, antialias = (scale(tf.constant(photo), 224, f).numpy() for f in ("area", "antialias"))
    assert np.abs(area - antialias).mean() < 1.0


def test_bilinear_interpolates_below_a_shrink_of_two_and_takes_means_from_two_on():
    from worklab.data.reader import scale

    image = np.random.RandomState(2).randint(0, 256, (64, 48, 3)).astype(np.uint8)
    assert ReaderConfig().resample == "bilinear"
    for size in (25, 40, 96):  # shrinks by 1.9 on the shorter side, by 1.2, and enlarges
        np.testing.assert_array_equal(scale(tf.constant(image), size, "bilinear").numpy(),
                                      tf.image.resize(image, [size, size]).numpy())
    blocks = image.reshape(16, 4, 16, 3, 3).astype(np.float64).mean(axis=(1, 3))  # 4 x 3 blocks: no pixel skipped
    np.testing.assert_allclose(scale(tf.constant(image), 16, "bilinear").numpy(), blocks, atol=1e-3)


def test_an_unknown_resample_is_refused_naming_the_key():
    from worklab.errors import UserError

    with pytest.raises(UserError, match=r"reader.resample='lanczos' is not one of bilinear, area, antialias"):
        ReaderConfig(resample="lanczos")
