"""Input speed at 224 px on JPEG photos: worklab's training input against plain decoding and Keras' pipeline.

What it measures (images per second of batches of 32 at 224 x 224, median of interleaved rounds,
and per core of the machine):
  * worklab train: Reader.train with the default augmentations (crop=zoom: the zoom window is
    decoded alone and resized once; shift, brightness, contrast, flip), reader.cache=false,
    reader.resample=bilinear (the default).
  * worklab train, area: the same with reader.resample=area, the smoother filter.
  * worklab train, full decode: the same with the JPEG decoder's DCT scaling turned off (a
    bench-only patch), to show what decoding large photos at 1/2, 1/4 or 1/8 scale brings.
  * worklab random_resized: Reader.train with reader.augment.crop=random_resized.
  * worklab memory: Reader.train with reader.cache=true (images decoded and resized once,
    gathered per example, then augmented): the disk-vs-memory comparison, now on photos.
  * worklab test: Reader.test with reader.resize=squash, the test-time input (and the
    exported model's): reader.load, the part shown decoded (at reduced scale when large).
  * worklab test, crop: the same with reader.resize=crop (the centre square).
  * plain decode+resize: tf.data over the same files: read, tf.io.decode_jpeg, tf.image.resize
    (bilinear, no antialiasing), parallel map, batch, prefetch; no augmentation.
  * decode floor: read and tf.io.decode_jpeg alone (then a 224 x 224 slice, so the images
    batch): no pipeline can be quicker without decoding less.
  * keras: keras.utils.image_dataset_from_directory (224 x 224, batch 32) followed by Keras'
    RandomFlip, RandomZoom(0.15), RandomTranslation(0.1, 0.1) and RandomContrast(0.1) layers
    in a parallel map, as their documentation suggests for tf.data.
Every contender only iterates its dataset (no training): this measures the input pipeline.
The files are read through the operating system's page cache after the first pass.

The photos: --images DIR (any folder of JPEGs, searched recursively), or else a built-in set
written once under bench/.data/ (--photos):
  * small: 240 JPEGs of 500x375 (a quarter portrait), the size of most public data sets'
    photos, textured at several scales so that they compress as photos do (about 58 KB);
  * large: 300 JPEGs of mixed sizes from 400x300 to 2000x1500 (a quarter portrait, some of
    those stored turned with EXIF orientation 6 as phones do), smooth shapes with fine noise;
  * phone: 48 JPEGs of 12 megapixels (4032x3024), textured as the small ones, a quarter
    portrait, some of those stored turned with EXIF orientation 6.

Each contender runs in its own child process (bench/common.py Worker), frozen between its
rounds, so one contender's tf.data threads neither take CPU nor fill buffers while another is
timed. A round runs batches until a time budget has passed.

Run from the repository root:
    python bench/input_speed.py                   # the small photos, about 8 minutes
    python bench/input_speed.py --photos large    # the large ones (or phone: 12-megapixel photos)
    python bench/input_speed.py --images ~/photos
    python bench/input_speed.py --quick           # about 2 minutes

Targets: worklab train >= 0.8x plain decode+resize and >= 2.5x keras; random_resized and test (squash,
crop) >= 0.9x plain; 350 images per second per core on 500x375 photos.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)

SEED = 0
SIZE = 224
BATCH = 32
PHOTO_SETS = {  # name -> (folder, count, landscape sizes in turn, textured)
    "small": (common.DATA / "photos-500x375", 240, [(500, 375)], True),
    "large": (common.DATA / "photos", 300, [(400, 300), (640, 480), (800, 600), (1024, 768), (1280, 960),
                                           (1600, 1200), (2000, 1500)], False),
    "phone": (common.DATA / "photos-12mp", 48, [(4032, 3024)], True),
}
WORKERS = [
    ("worklab train", dict(kind="worklab")),
    ("worklab train, area", dict(kind="worklab", resample="area")),
    ("worklab train, full decode", dict(kind="worklab", dct=False)),
    ("worklab random_resized", dict(kind="worklab", crop="random_resized")),
    ("worklab memory", dict(kind="worklab", cache=True)),
    ("worklab test", dict(kind="worklab test")),
    ("worklab test, crop", dict(kind="worklab test", resize="crop")),
    ("plain decode+resize", dict(kind="plain")),
    ("decode floor", dict(kind="plain", resize=None)),
    ("keras", dict(kind="keras")),
]
EXTENSIONS = (".jpg", ".jpeg")


def write_photos(name: str) -> Path:
    """The built-in photo set `name` (PHOTO_SETS) in two class folders, written once; its folder."""
    import numpy as np
    from PIL import Image

    folder, count, sizes, textured = PHOTO_SETS[name]
    if len(list(folder.rglob("*.jpg"))) == count:
        return folder
    rng = np.random.RandomState(SEED)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter to the left, shown upright
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        portrait = i % 4 == 3
        if portrait:
            width, height = height, width
        coarse = rng.randint(0, 256, (6 + i % 5, 8 + i % 7, 3)).astype(np.uint8)
        picture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
        for scale in (4, 16, 64) if textured else ():  # detail at several scales, as a photo has
            noise = rng.randint(0, 41, (height // scale + 1, width // scale + 1, 3)).astype(np.uint8)
            picture += np.asarray(Image.fromarray(noise).resize((width, height), Image.BICUBIC)).astype(np.int16) - 20
        picture = np.clip(picture + rng.randint(-12, 13, picture.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(picture)
        path = folder / ("a" if i % 2 else "b") / f"photo_{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if portrait and i % 8 == 7:  # a phone's portrait photo: stored landscape, EXIF says turn it
            image.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif.tobytes())
        else:
            image.save(path, quality=90)
    return folder


def listed(folder: Path):
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)


def keras_augmentation():
    """The keras contender's augmentations: Keras' RandomFlip, RandomZoom, RandomTranslation and RandomContrast
    layers, for a parallel map over batches as their documentation suggests for tf.data."""
    import keras

    return keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomZoom((-0.15, 0.0)),
                             keras.layers.RandomTranslation(0.1, 0.1), keras.layers.RandomContrast(0.1)])


# Worker side -------------------------------------------------------------------------------------

def setup(spec):
    started = time.perf_counter()
    from worklab import runtime
    from worklab.config.reader import AugmentConfig, ReaderConfig
    from worklab.config.runtime import RuntimeConfig

    tf = runtime.configure(RuntimeConfig(), SEED)
    folder = Path(spec["images"])
    paths = listed(folder)
    info = {"images": len(paths)}
    kind = spec["kind"]
    if kind == "worklab":
        from worklab.data import reader
        from worklab.data.imagelist import ImageList

        if not spec.get("dct", True):
            whole = reader.stored_window
            reader.stored_window = lambda contents, window, size: whole(contents, window, None)
        cfg = ReaderConfig(source="folder", image_size=SIZE, batch_size=BATCH, cache=spec.get("cache", False),
                           resample=spec.get("resample", "bilinear"),
                           augment=AugmentConfig(crop=spec.get("crop", "zoom")))
        dataset = reader.Reader(cfg, SEED).train(ImageList(str(folder), paths, [0] * len(paths)))
    elif kind == "worklab test":
        from worklab.data import reader
        from worklab.data.imagelist import ImageList

        cfg = ReaderConfig(source="folder", image_size=SIZE, batch_size=BATCH, resize=spec.get("resize", "squash"))
        dataset = reader.Reader(cfg, SEED).test(ImageList(str(folder), paths, [0] * len(paths))).repeat()
    elif kind == "plain":
        resize = spec.get("resize", "bilinear")  # or None: the decode floor

        def load(path):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            if resize is None:
                return image[:SIZE, :SIZE]  # every photo is at least SIZE on each side
            return tf.image.resize(image, [SIZE, SIZE])

        dataset = (tf.data.Dataset.from_tensor_slices(paths).repeat().shuffle(len(paths), seed=SEED)
                   .map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE))
    else:
        import keras

        augment = keras_augmentation()
        files = keras.utils.image_dataset_from_directory(str(folder), labels=None, image_size=(SIZE, SIZE),
                                                         batch_size=BATCH, seed=SEED)
        dataset = (files.repeat().map(lambda x: augment(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
                   .prefetch(tf.data.AUTOTUNE))
    iterator = iter(dataset)

    def run(budget):  # -> (batches, images): a pass's last batch is partial for keras and worklab test
        deadline = time.perf_counter() + budget
        batches = count = 0
        while True:
            images = next(iterator)
            images = images[0] if isinstance(images, tuple) else images
            assert tuple(images.shape[1:]) == (SIZE, SIZE, 3), images.shape
            batches, count = batches + 1, count + int(images.shape[0])
            if time.perf_counter() >= deadline:
                return batches, count

    warm = time.perf_counter()
    run(3.0)
    info["warmup_seconds"] = time.perf_counter() - warm

    def measure(budget):
        start = time.perf_counter()
        batches, count = run(budget)
        seconds = time.perf_counter() - start
        return {"images_per_second": count / seconds, "batches": batches, "seconds": seconds}

    info["setup_seconds"] = time.perf_counter() - started
    return info, {"measure": measure}


# Driver side -------------------------------------------------------------------------------------

def main():
    def options(parser):
        parser.add_argument("--images", default=None, help="a folder of JPEG photos (default: a built-in set)")
        parser.add_argument("--photos", choices=sorted(PHOTO_SETS), default="small",
                            help="the built-in set without --images (default: small, 500x375)")

    args = common.arguments(__doc__, options)
    if args.worker:
        return common.serve(setup, args.worker)
    budget = 2.0 if args.quick else 4.0
    rounds = args.rounds or (3 if args.quick else 7)
    folder = Path(args.images).expanduser().resolve() if args.images else write_photos(args.photos)
    paths = listed(folder)
    if not paths:
        sys.exit(f"no .jpg or .jpeg files under {folder}")
    common.print_header("input_speed: worklab's training input against plain decoding and Keras at 224 px", args, {
        "images": f"{len(paths)} JPEGs under {folder}" + ("" if args.images else f" (built-in set {args.photos})"),
        "size": SIZE, "batch": BATCH, "augment": "defaults (worklab), Keras' four layers (keras)", "rounds": rounds,
        "round": f"batches until {budget} s have passed (at least 1)"})
    results, infos = common.worker_rounds(os.path.abspath(__file__), [(n, {**s, "images": str(folder)})
                                                                      for n, s in WORKERS], "measure", budget, rounds)
    med = {name: common.median(values) for name, values in results.items()}
    cores = os.cpu_count()
    rows = [[name, med[name], med[name] / cores, common.spread(results[name]),
             common.paired(results, name, "plain decode+resize"), common.paired(results, name, "keras")]
            for name, _ in WORKERS]
    common.table(["contender", "img/s (median)", f"per core ({cores})", "rounds min-max", "vs plain (paired)",
                  "vs keras (paired)"], rows,
                 title=f"input pipelines at {SIZE} px, median of {rounds} rounds; "
                       "targets: train >= 0.8x plain and >= 2.5x keras, random_resized and test >= 0.9x plain")
    print(common.others_summary(results))
    common.print_workers(infos)


if __name__ == "__main__":
    main()
