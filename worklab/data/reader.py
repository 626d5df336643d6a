"""tf.data pipelines from checked image lists: an endless, resumable training stream and one test pass.

Training draws a fresh permutation of the list every epoch from (seed, epoch), so the
example at any position of the stream is known without replaying it: `train(start)`
begins at example `start`, which is how a resumed run sees exactly the examples an
uninterrupted run would have seen. Reading and decoding run in parallel; batches are
prefetched.

`decode` turns a file's bytes into the image as it is meant to be seen: a JPEG's EXIF
orientation (a phone photo held upright is stored sideways with orientation 6) is read
from the bytes and applied with graph ops only, so training, testing, the cache and an
exported SavedModel that takes raw JPEG bytes all see the same upright image.

`resize` is what every pipeline does at test time (reader.resize: squash, or keep the
aspect and cut the centre square), with reader.resample's filter (`scale`); `load` does it
from a file's bytes, decoding a large JPEG at reduced scale. Training instead cuts its crop window
(worklab.data.crops) from the decoded image and resizes it once; `scaled_window` decodes
only that window of a JPEG, the window mapped through the EXIF orientation, lets the
JPEG decoder shrink large images by 2, 4 or 8 while keeping the window at least
image_size on each side, and turns the piece upright after resizing it.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from worklab.config.reader import ReaderConfig
from worklab.data import crops
from worklab.data.augment import augment, draws
from worklab.data.imagelist import ImageList

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
ENDLESS = np.iinfo(np.int64).max


EXIF_SCAN_BYTES = 65536  # EXIF sits in an APP1 segment near the start of a JPEG; a segment holds at most 64 KiB
EXIF_ID = b"Exif\0\0"  # starts the APP1 segment that holds a JPEG's EXIF data
_PAD = b"\0" * 12  # appended so that reads just past the scanned bytes stay in range


@tf.autograph.experimental.do_not_convert  # no Python control flow: traced as is, which is quicker
def decode(contents: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG, BMP, GIF (first frame) or WebP bytes -> uint8 (h, w, 3) upright; grey and RGBA become RGB.

    The image is decoded with its own channels and converted here, because TensorFlow's
    WebP decoder refuses to turn RGBA into RGB itself.
    """
    image = tf.io.decode_image(contents, expand_animations=False)
    image.set_shape([None, None, None])
    image = tf.cond(tf.shape(image)[-1] < 3, lambda: tf.image.grayscale_to_rgb(image[..., :1]),
                    lambda: image[..., :3])
    image.set_shape([None, None, 3])
    image = apply_orientation(image, orientation(contents))
    image.set_shape([None, None, 3])
    return image


def apply_orientation(image: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """Turn a stored image upright for EXIF orientation `value` (1..8), as PIL.ImageOps.exif_transpose does.

    Every orientation is an optional transpose (5..8) followed by optional left-right and
    up-down flips: 6 (stored turned left) is transpose + left-right, 8 is transpose + up-down.
    The permutation is a tensor, and TensorFlow passes an image through an identity
    transpose without a copy; the flips, which copy even when no axis is flipped, run in a
    branch that only an orientation with a flip takes.
    """
    image = tf.transpose(image, tf.where(value >= 5, [1, 0, 2], [0, 1, 2]))
    flips = tf.stack([tf.reduce_any(tf.equal(value, [3, 4, 7, 8])), tf.reduce_any(tf.equal(value, [2, 3, 6, 7]))])
    return tf.cond(tf.reduce_any(flips), lambda: tf.reverse(image, tf.boolean_mask([0, 1], flips)),
                   lambda: image)  # axis 0 flips up-down, axis 1 left-right


@tf.autograph.experimental.do_not_convert  # no Python control flow: traced as is, which is quicker
def orientation(contents: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation 1..8 (int32) of JPEG bytes; 1 for other formats, no EXIF, or a value out of range.

    Reads only the first EXIF_SCAN_BYTES: finds the APP1 segment by its identifier right
    after its marker and length (FF E1 hi lo "Exif\\0\\0"), reads the TIFF byte order
    (II or MM), the offset and entry count of IFD0, then its entries for tag 0x0112 of
    type SHORT, in a branch that only a JPEG with an EXIF segment takes. Pure graph ops, so it
    runs under tf.data, tf.function and in a SavedModel.
    """
    head = tf.strings.substr(contents, 0, EXIF_SCAN_BYTES)
    _, parts, _ = tf.raw_ops.StringSplitV2(input=[head], sep=EXIF_ID, maxsplit=1)  # [before, TIFF data] if found
    before = parts[0]
    found = ((tf.size(parts) == 2) & (tf.strings.substr(head, 0, 2) == b"\xff\xd8")  # SOI: a JPEG
             & (tf.strings.substr(before, tf.maximum(tf.strings.length(before) - 4, 0), 2) == b"\xff\xe1"))
    return tf.cond(found, lambda: _tiff_orientation(parts[-1]), lambda: tf.constant(1))


def _tiff_orientation(tiff: tf.Tensor) -> tf.Tensor:
    """The orientation in EXIF's TIFF data (`orientation`): read only for a JPEG that has an EXIF segment."""
    tiff += _PAD  # zero bytes after the end keep fixed-size reads whole
    size = tf.strings.length(tiff) - len(_PAD)
    little = tf.strings.substr(tiff, 0, 2) == b"II"  # "MM" is big-endian

    def numbers(at, length, dtype):  # tiff[at:at + length] as numbers in the file's byte order
        piece = tf.strings.substr(tiff, tf.clip_by_value(at, 0, size), length)
        both = [tf.cast(tf.io.decode_raw(piece, dtype, little_endian=e), tf.int32) for e in (True, False)]
        return tf.where(little, *both)

    ifd = numbers(4, 4, tf.int32)[0]
    valid = (little | (tf.strings.substr(tiff, 0, 2) == b"MM")) & (numbers(2, 2, tf.uint16)[0] == 42)
    valid &= (ifd >= 8) & (ifd + 2 <= size)
    count = tf.where(valid, tf.minimum(numbers(ifd, 2, tf.uint16)[0], (size - ifd - 2) // 12), 0)
    entries = tf.reshape(numbers(ifd + 2, 12 * count, tf.uint16), [-1, 6])  # tag, type, count (2), value (2)
    value = tf.boolean_mask(entries[:, 4], (entries[:, 0] == 0x0112) & (entries[:, 1] == 3))  # Orientation, SHORT
    value = tf.concat([value, [1]], 0)[0]
    return tf.where((value >= 1) & (value <= 8), value, 1)


Window = Callable[[tf.Tensor], tf.Tensor]  # an upright image's (height, width) -> [y, x, height, width]


def resize(image: tf.Tensor, cfg: ReaderConfig) -> tf.Tensor:
    """Decoded images (h, w, 3) or (n, h, w, 3) -> float32 RGB in [0, 255] at image_size, as every pipeline sees them.

    reader.resize=squash resizes the whole image to image_size x image_size; crop cuts the
    centred square of crop_fraction of the shorter side first, so the aspect is kept.
    Testing, the cache, validation, export and predict all call this, so a deployed model
    resizes exactly as the Tester did. Scaling to what the network expects is the
    network's own first layer (worklab.model.preprocessing), not the reader's.
    """
    if cfg.resize == "crop":
        image = cut(image, shown(tf.shape(image)[-3:-1], cfg))
    return scale(image, cfg.image_size, cfg.resample)


def load(contents: tf.Tensor, cfg: ReaderConfig) -> tf.Tensor:
    """An encoded image -> float32 RGB in [0, 255] at image_size, upright: the test-time input, from a file.

    The test and validation sets, the cache, predict and the exported SavedModel's encoded
    input all call this. With reader.resample=bilinear or area only the part `resize` shows
    is decoded, and a JPEG at 1/2, 1/4 or 1/8 scale when that part is that many times image_size on
    both sides (the decoder's DCT scaling, as training decodes its windows): a phone photo
    costs a fraction of its full decode. With antialias the image is decoded whole, as runs
    from before reader.resample were.
    """
    if cfg.resample == "antialias":
        return resize(decode(contents), cfg)
    return scaled_window(contents, lambda shape: shown(shape, cfg), cfg.image_size, cfg.resample)


def shown(shape: tf.Tensor, cfg: ReaderConfig) -> tf.Tensor:
    """The window of an image of `shape` that `resize` shows: all of it (squash) or its centre square (crop)."""
    return crops.centre_square(shape, cfg.crop_fraction) if cfg.resize == "crop" else crops.whole(shape)


def cut(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """The pixels of `window` ([y, x, height, width]) of an image or a batch of images."""
    return image[..., window[0]:window[0] + window[2], window[1]:window[1] + window[3], :]


FILTERS = {  # reader.resample -> what it does, as export.json and the log say it
    "bilinear": "bilinear (tf.image.resize), from a JPEG decoded at 1/2, 1/4 or 1/8 scale when it is that many "
                "times image_size; an image still twice image_size or more on both sides is shrunk with area's "
                "pixel means",
    "area": "the mean of the pixels each covers when shrinking (tf.image.resize method='area'), bilinear when "
            "enlarging",
    "antialias": "antialiased bilinear (tf.image.resize antialias=True)",
}


def scale(image: tf.Tensor, size: int, resample: str) -> tf.Tensor:
    """An image or a batch resized to size x size with reader.resample's filter, float32 in [0, 255].

    `bilinear` interpolates between the four nearest pixels. Below a shrink of 2 every
    pixel still counts; the reader brings JPEGs there with the decoder's DCT scaling
    (`load`, `scaled_window`), and an image that is still twice size or more on both sides
    (a large PNG) gets area's means instead, so that no pixels are skipped. `area` makes
    each pixel the mean of the pixels it covers whenever the image shrinks on both sides (a
    box filter, as OpenCV's INTER_AREA), and interpolates bilinearly when it grows on either:
    smoother, and at 224 px on a 500x375 photo its resize costs about as much as decoding
    (docs/performance.md, section 2c). `antialias` is TensorFlow's antialiased bilinear
    (triangle) filter, slower again; runs from before reader.resample keep it.

    Each filter's weights are non-negative and sum to one, so pixels of an integer type
    (what the decoder and the cache give) stay within [0, 255] up to float rounding and are
    not clipped; other values (export's from_pixels takes any floats) are.
    """
    integer = image.dtype.is_integer
    if resample == "antialias":
        image = tf.image.resize(image, [size, size], antialias=True)
    else:
        means_from = 2 * size if resample == "bilinear" else size  # the shorter side from which area's means are used
        shrinks = tf.reduce_min(tf.shape(image)[-3:-1]) >= means_from
        image = tf.cond(shrinks, lambda: tf.image.resize(image, [size, size], method="area"),
                        lambda: tf.image.resize(image, [size, size]))
    return image if integer else tf.clip_by_value(image, 0.0, 255.0)


def scaled_window(contents: tf.Tensor, window: Window, size: int, resample: str) -> tf.Tensor:
    """`window` of the upright image in `contents`, resized to size x size: scale(cut(decode(contents), window)).

    A JPEG is decoded only inside the window: the window, drawn in the upright frame, is
    mapped to the stored one (undo the flips, then the transpose of apply_orientation) and
    cut by the decoder, at 1/2, 1/4 or 1/8 scale by the decoder's DCT scaling when it is at
    least that many times size on both sides, several times quicker; its edges then round to
    whole pixels of the scaled image. The piece is resized before it is turned upright, so a
    photo stored turned (a phone's portrait) is turned at size x size, not at its decoded size.
    Other formats are decoded whole and cut.

    Without scaling, the JPEG piece differs from the whole decode only in the row and
    column along the window's edges that were its bottom and right as stored, by a few
    levels: the decoder's smooth chroma upsampling has no neighbour beyond the window there.
    Resizing before turning changes the order of the filter's two passes, which moves values
    by float rounding only.
    """
    def whole_image():
        image = decode(contents)
        return scale(cut(image, window(tf.shape(image)[:2])), size, resample)

    def jpeg():
        piece, value = stored_window(contents, window, size)
        image = apply_orientation(scale(piece, size, resample), value)
        image.set_shape([size, size, 3])  # the turn's permutation is a tensor, which hides the shape
        return image

    return tf.cond(tf.io.is_jpeg(contents), jpeg, whole_image)


def stored_window(contents: tf.Tensor, window: Window, size: Optional[int]) -> Tuple[tf.Tensor, tf.Tensor]:
    """(uint8 pixels of `window` as the JPEG in `contents` stores them, its EXIF orientation): see scaled_window.

    apply_orientation(*stored_window(...)) is cut(decode(contents), window); with `size`, the
    piece is decoded at reduced scale when the window allows, and without it at full scale.
    """
    value = orientation(contents)
    stored = tf.io.extract_jpeg_shape(contents)[:2]
    turned = value >= 5
    upright = tf.where(turned, stored[::-1], stored)
    y, x, h, w = tf.unstack(window(upright))
    y = tf.where(tf.reduce_any(tf.equal(value, [3, 4, 7, 8])), upright[0] - y - h, y)  # undo the up-down flip
    x = tf.where(tf.reduce_any(tf.equal(value, [2, 3, 6, 7])), upright[1] - x - w, x)  # undo the left-right flip
    box = tf.where(turned, tf.stack([x, y, w, h]), tf.stack([y, x, h, w]))

    def decoded(ratio):  # the decoder cuts in the scaled image's pixels: the window's edges, rounded to them
        start, end = (box[:2] + ratio // 2) // ratio, (box[:2] + box[2:] + ratio // 2) // ratio
        return lambda: tf.io.decode_and_crop_jpeg(contents, tf.concat([start, end - start], 0), channels=3,
                                                  ratio=ratio)

    ratios = (1, 2, 4, 8) if size else (1,)
    fitting = tf.reduce_sum(tf.cast([tf.reduce_min(box[2:]) >= r * size for r in ratios[1:]], tf.int32))
    piece = tf.switch_case(fitting, [decoded(r) for r in ratios]) if size else decoded(1)()
    piece.set_shape([None, None, 3])
    return piece, value


class Reader:
    """Turns an ImageList into batches of 0-255 RGB float images and int labels."""

    def __init__(self, cfg: ReaderConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.size = cfg.image_size

    def train(self, images: ImageList, start: int = 0, pipeline: Tuple[int, int] = (0, 1),
              batch: Optional[int] = None) -> tf.data.Dataset:
        """Endless augmented batches (drop_remainder, so every step has the same shape) from example `start`.

        With `pipeline` (i, n), the stream keeps only the i-th of n equal, contiguous parts of
        each global batch (reader.batch_size), chosen by position before any file is read:
        one input pipeline per worker of a cluster, each reading its own slice of the same
        global order. `batch` (default: the global batch) is a replica's share.
        """
        n = len(images)
        crop = self._train_loader(images)
        labels = tf.constant(images.labels, tf.int32)
        first_epoch, offset = divmod(start, n)
        seed = tf.constant(self.seed, tf.int64)
        order = tf.data.Dataset.range(first_epoch, ENDLESS).flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))))
        stream = tf.data.Dataset.zip(tf.data.Dataset.range(start, ENDLESS), order.skip(offset))
        part, parts = pipeline
        if parts > 1:
            share = self.cfg.batch_size // parts
            stream = stream.filter(lambda position, _: (position - start) % self.cfg.batch_size // share == part)

        def example(position, index):
            seeds = draws(tf.stack([seed, position]))
            return augment(crop(index, seeds), seeds, self.cfg.augment), labels[index]

        return (stream.map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(batch or self.cfg.batch_size, drop_remainder=True).prefetch(AUTOTUNE))

    def test(self, images: ImageList) -> tf.data.Dataset:
        """Every example exactly once, in list order, the last partial batch included."""
        load = self._test_loader(images)
        labels = tf.constant(images.labels, tf.int32)
        batch = self.cfg.test_batch_size or self.cfg.batch_size
        return (tf.data.Dataset.range(len(images))
                .map(lambda i: (load(i), labels[i]), num_parallel_calls=AUTOTUNE)
                .batch(batch).prefetch(AUTOTUNE))

    def window(self, shape: tf.Tensor, seeds: tf.Tensor, view: Window) -> tf.Tensor:
        """The training crop window of an image of `shape`; `view` gives the part of it a test would see."""
        a = self.cfg.augment
        if a.crop == "random_resized":
            return crops.random_resized(shape, a.crop_scale, a.crop_ratio, seeds)
        return crops.zoom(view(shape), a.zoom, seeds)

    def _test_loader(self, images: ImageList):
        """index -> float image in [0, 255] at image_size: read from disk, or gathered from memory with cache."""
        if self.cfg.cache:
            cached = self._cache(images)
            return lambda i: tf.cast(cached[i], tf.float32)
        paths = tf.constant(images.paths)
        return lambda i: load(tf.io.read_file(paths[i]), self.cfg)

    def _train_loader(self, images: ImageList):
        """(index, seeds) -> the example's crop window resized to image_size, float in [0, 255].

        From a file, the window is drawn in the decoded image (zoom within what `resize`
        shows) and only it is decoded; from the cache, in the cached image, which `resize`
        already made.
        """
        if self.cfg.cache:
            cached = self._cache(images)

            def from_memory(i, seeds):
                image = cached[i]
                return scale(cut(image, self.window(tf.shape(image)[:2], seeds, crops.whole)), self.size,
                             self.cfg.resample)
            return from_memory
        paths = tf.constant(images.paths)

        def from_file(i, seeds):
            window = lambda shape: self.window(shape, seeds, lambda s: shown(s, self.cfg))  # noqa: E731
            return scaled_window(tf.io.read_file(paths[i]), window, self.size, self.cfg.resample)
        return from_file

    def _cache(self, images: ImageList) -> tf.Variable:
        """Every image as `resize` gives it, rounded to uint8, in memory."""
        log.info("caching %d images of %d px in memory", len(images), self.size)
        batches = (tf.data.Dataset.from_tensor_slices(images.paths)
                   .map(lambda p: tf.cast(tf.round(load(tf.io.read_file(p), self.cfg)), tf.uint8),
                        num_parallel_calls=AUTOTUNE)
                   .batch(256))
        return tf.Variable(np.concatenate(list(batches.as_numpy_iterator())), trainable=False, name="image_cache")


def find_undecodable(paths: List[str]) -> List[str]:
    """The paths TensorFlow cannot decode, found by decoding every one (used to name the file after a failure)."""
    files = tf.constant(paths)
    decoded = (tf.data.Dataset.range(len(paths))
               .map(lambda i: (i, tf.shape(decode(tf.io.read_file(files[i])))[0]), num_parallel_calls=AUTOTUNE)
               .ignore_errors().batch(1024))
    good = {int(i) for batch, _ in decoded.as_numpy_iterator() for i in batch}
    return [p for i, p in enumerate(paths) if i not in good]
