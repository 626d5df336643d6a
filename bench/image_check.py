"""The check of every listed image before step 1: what it costs, and what the record saves on a resume.

What it measures: the wall time of checking one list of generated JPEGs, five ways, in
interleaved rounds (median and min-max over the rounds):
    header only        PIL's verify() on each file: the check before full decoding (the baseline)
    decode, no hashes  every image decoded (JPEGs at down to 1/8 scale) as the check does, nothing hashed
    full check         imagelist.check_files: decoded, and the content and perceptual hashes taken; no record
    pair search        leakage.find_pairs over the list's hashes (every pair compared)
    recorded re-check  check_files with the record of an earlier check: a resumed run, nothing changed
The full decode is the price of naming a truncated or corrupt file before step 1 instead of
failing at it; "full check" less "decode, no hashes", plus the pair search, is what finding
duplicates and leakage adds; the recorded re-check is what a resume pays. Last, the pair
search alone on random hashes of larger sets, since it grows with the square of the images.

Run from the repository root:
    python bench/image_check.py                 # 500 JPEGs of 640x480 and 60 of 4032x3024
    python bench/image_check.py --quick
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from worklab.data import imagelist, leakage  # noqa: E402
from worklab.data.imagelist import ImageList, check_files  # noqa: E402


def write_jpegs(folder: Path, count: int, size) -> ImageList:
    """`count` noisy JPEGs of `size` (noise compresses badly, like photos), quality 90."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        path = folder / f"{size[0]}x{size[1]}-{i}.jpg"
        Image.fromarray(pixels).resize(size).save(path, quality=90)
        paths.append(str(path))
    return ImageList(str(folder), paths, [i % 2 for i in range(count)])


def header_only(images: ImageList) -> None:
    def verify(path):
        with Image.open(path) as image:
            image.verify()
    imagelist.in_threads(verify, images.paths)  # the threads check_files uses


def decode_only(images: ImageList) -> None:
    imagelist.in_threads(lambda path: imagelist._examine(path, hashed=False), images.paths)


def random_hashes(count: int) -> ImageList:
    """A list of `count` images that exist only as random perceptual hashes, for timing the pair search."""
    rng = np.random.default_rng(0)
    values = [rng.bytes(32).hex() for _ in range(count)]
    paths = [f"/set/{i}.jpg" for i in range(count)]
    return ImageList("random", paths, [0] * count, {p: (p, v, v) for p, v in zip(paths, values)})


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    args = common.arguments(__doc__)
    sets = [(100, (640, 480)), (12, (4032, 3024))] if args.quick else [(500, (640, 480)), (60, (4032, 3024))]
    rounds = args.rounds or (2 if args.quick else 5)
    common.print_header("Image check before step 1", args, {"sets": sets, "rounds": rounds})
    with tempfile.TemporaryDirectory() as tmp:
        for count, size in sets:
            folder = Path(tmp) / f"{size[0]}x{size[1]}"
            folder.mkdir()
            images = write_jpegs(folder, count, size)
            record = folder / "checked_images.json"
            checked = check_files(images, skip_bad=False, record=record)
            print(f"\n{count} JPEGs of {size[0]}x{size[1]}:")
            results = common.interleave([
                ("header only", lambda: timed(lambda: header_only(images))),
                ("decode, no hashes", lambda: timed(lambda: decode_only(images))),
                ("full check", lambda: timed(lambda: check_files(images, skip_bad=False))),
                ("pair search", lambda: timed(lambda: leakage.find_pairs({"train": checked}, ["0", "1"]))),
                ("recorded re-check", lambda: timed(lambda: check_files(images, skip_bad=False, record=record))),
            ], rounds)
            base = common.median(results["header only"])
            rows = [[name, f"{common.median(v):.3f}", common.spread(v), f"{1000 * common.median(v) / count:.2f}",
                     common.ratio(common.median(v), base)]
                    for name, v in results.items() if not name.startswith("_")]
            common.table(["check", "seconds", "min-max", "ms per image", "vs header only"], rows)
            print(common.others_summary(results))
    sizes = (2000, 5000) if args.quick else (5000, 20000)
    print("\npair search on random hashes:")
    search = lambda images: leakage.find_pairs({"train": images}, ["0"])  # noqa: E731
    common.table(["images", "seconds"], [[n, f"{timed(lambda: search(random_hashes(n))):.2f}"] for n in sizes])


if __name__ == "__main__":
    main()
