"""Image lists: which files to read and their labels, checked before any training.

A list comes from a JSON file (the seed's {path: label} dict, or a list of
{"path": ..., "label": ...} objects) or from a folder of class sub-folders. Relative
paths resolve against the list file's folder. Labels are ints or class names; the
class map (index -> name) is built from the training list, saved in the run folder
and reused, so test labels and later runs agree on indices. A class without images
(a gap in int labels, an empty class folder) is kept, with a warning, so indices stay
stable; a path listed with two labels, or a training list of one class, is refused. A
validation list without images of some class is kept, with a warning naming the classes.

Before the first step every listed image is decoded once with PIL (JPEGs at down to 1/8
scale, which still reads every byte), so a truncated or corrupt file is named here, not
by a failed training step. The same pass hashes every file and its pixels
(worklab.data.imagehash), so copies across and within the lists are found at little
extra cost (worklab.data.leakage). Nothing here imports TensorFlow.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar

from PIL import Image, UnidentifiedImageError

from worklab.atomic import write_json
from worklab.data.imagehash import DRAFT, content_hash, perceptual_hash
from worklab.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # what tf.io.decode_image reads
UNIDENTIFIED = "not a readable image (no known image format: the header is missing or corrupt)"
BMP_MODES = ("RGB", "RGBA", "L")  # TensorFlow reads palette BMPs as grey palette indices
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SHOWN = 5  # offending paths quoted in a message
MAX_PIXELS = 2 ** 28  # the largest image the file check decodes, 16384 x 16384 (PIL's own limit is 179 Mpx)
LARGE_PIXELS = 2 ** 24  # images above this that are not JPEGs are decoded one at a time, to bound memory
_LARGE = threading.Semaphore(1)

Entry = Tuple[str, object]  # (absolute path, raw label)
Hashes = Tuple[str, Optional[str], Optional[str]]  # the file's sha256, its perceptual hash and its mirror's


@dataclass
class ImageList:
    """Absolute image paths with class indices; `source` names the list in messages.

    `hashes` (path -> Hashes) is filled by check_files for the images it checked.
    """

    source: str
    paths: List[str]
    labels: List[int]
    hashes: Dict[str, Hashes] = field(default_factory=dict, repr=False)

    def subset(self, rows: Sequence[int], source: Optional[str] = None) -> "ImageList":
        """The images at `rows`, in that order, with their hashes (`source` renames the list)."""
        return ImageList(source or self.source, [self.paths[i] for i in rows], [self.labels[i] for i in rows],
                         self.hashes)

    def __len__(self) -> int:
        return len(self.paths)


def read_entries(source: str, kind: str) -> List[Entry]:
    """Read (path, label) pairs from a JSON list file (kind 'json') or a class-folder root ('folder').

    Paths are resolved, so the same file spelled two ways counts as one path: listed
    twice with one label it is a warning, with two labels an error. In a class-folder
    root every sub-folder except hidden ones (.name) is a class.
    """
    entries = _folder_entries(Path(source)) if kind == "folder" else _json_entries(Path(source))
    _check_repeats(entries, source)
    return entries


class _Object(dict):
    """A JSON object that also keeps its (key, value) pairs in order, repeated keys included."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


def _json_entries(path: Path) -> List[Entry]:
    if path.is_dir():
        raise UserError(f"Image list {path} is a folder: use reader=folder for class sub-folders, "
                        "or point the list at a JSON file.")
    if not path.is_file():
        raise UserError(f"Image list {path} does not exist.")
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_Object)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"Image list {path} is not valid JSON: {error}.") from None
    if isinstance(data, dict):
        pairs = list(data.pairs)
    elif isinstance(data, list) and all(isinstance(e, dict) and {"path", "label"} <= e.keys() for e in data):
        pairs = [(e["path"], e["label"]) for e in data]
    else:
        raise UserError(f"Image list {path} must be a JSON object {{path: label}} "
                        'or a list of {"path": ..., "label": ...} objects.')
    if not pairs:
        raise UserError(f"Image list {path} is empty.")
    bad = [p for p, _ in pairs if not isinstance(p, str)]
    if bad:
        raise UserError(f"Image list {path}: paths must be strings, found {bad[:SHOWN]}.")
    return [(str((path.parent / p).resolve()), label) for p, label in pairs]


def _folder_entries(root: Path) -> List[Entry]:
    if root.is_file():
        raise UserError(f"Image folder {root} is a file: use reader=json for a JSON image list.")
    if not root.is_dir():
        raise UserError(f"Image folder {root} does not exist or is not a folder.")
    entries = [(str(f.resolve()), d.name) for d in _class_folders(root)
               for f in sorted(d.rglob("*")) if _is_image_name(f)]
    if not entries:
        raise UserError(f"Image folder {root} has no class sub-folders with images "
                        f"({', '.join(IMAGE_SUFFIXES)}).")
    loose = sorted(f.name for f in root.iterdir() if _is_image_name(f))
    if loose:
        log.warning("Image folder %s: %d image file(s) at the top level are not read (only class sub-folders "
                    "are), e.g. %s; move them into the folder of their class.", root, len(loose),
                    ", ".join(loose[:SHOWN]))
    return entries


def _class_folders(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir()


def _check_repeats(entries: Sequence[Entry], source: str) -> None:
    """Refuse a path listed with two labels; warn about one listed twice with the same label."""
    labels = defaultdict(list)
    for path, label in entries:
        labels[path].append(label)
    repeated = {p: ls for p, ls in labels.items() if len(ls) > 1}
    clashes = {p: ls for p, ls in repeated.items() if len({repr(x) for x in ls}) > 1}
    if clashes:
        shown = "; ".join(f"{p} as {' and '.join(repr(x) for x in dict.fromkeys(ls))}"
                          for p, ls in list(clashes.items())[:SHOWN])
        raise UserError(f"Image list {source}: {len(clashes)} path(s) are listed with different labels: {shown}. "
                        "An image has one label: keep one entry per path.")
    if repeated:
        log.warning("Image list %s: %d path(s) are listed more than once with the same label, e.g. %s; "
                    "each listing counts as an example of its own.", source, len(repeated),
                    ", ".join(list(repeated)[:SHOWN]))


def build_classes(entries: Sequence[Entry], source: str) -> List[str]:
    """The class names in index order: 0..max for int labels, sorted names for string labels.

    For a class-folder root (`source` is a folder) every class sub-folder is a class,
    an empty one too, so adding images to it later does not shift the indices.
    """
    labels = [label for _, label in entries]
    if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        if min(labels) < 0:
            raise UserError(f"Image list {source} has a negative label {min(labels)}.")
        classes = [str(i) for i in range(max(labels) + 1)]
    elif all(isinstance(x, str) for x in labels):
        folders = [d.name for d in _class_folders(Path(source))] if Path(source).is_dir() else []
        classes = sorted(set(labels) | set(folders))
    else:
        raise UserError(f"Image list {source}: labels must be all ints or all class names, "
                        f"found {sorted({type(x).__name__ for x in labels})}.")
    _check_class_sizes(classes, {str(x) for x in labels}, source)
    return classes


def _check_class_sizes(classes: List[str], present: Set[str], source: str) -> None:
    """Refuse a training list of one class; warn about classes without images."""
    if len(present) < 2:
        raise UserError(f"Image list {source} has images of one class only ({', '.join(sorted(present))}): "
                        "a classifier needs at least two classes. List images of two or more labels.")
    empty = [c for c in classes if c not in present]
    if not empty:
        return
    if Path(source).is_dir():
        log.warning("Image folder %s: class folder(s) %s hold no images; kept as classes so the class "
                    "indices stay the same.", source, ", ".join(empty[:20]))
    else:
        log.warning("Image list %s: class(es) %s have no images: int labels are class indices, so labels "
                    "up to %s make %d classes. Number the labels 0..N-1 if the gaps are not meant.",
                    source, ", ".join(empty[:20]), classes[-1], len(classes))


def load_classes(path: Path) -> Optional[List[str]]:
    """The class map saved in a run folder, or None if there is none yet."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"Class map {path} is not valid JSON ({error}). {_rewrite(path)}") from None
    classes = data.get("classes") if isinstance(data, dict) else None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise UserError(f'Class map {path} has no "classes" list of class names. {_rewrite(path)}')
    return classes


def _rewrite(class_map: Path) -> str:
    return (f"worklab writes it from the training list when a run folder is first used: if the run folder holds "
            f"no checkpoint yet, delete {class_map} and run again; otherwise write it back as "
            '{"classes": [names in index order]} from the training list the run was started with.')


def save_classes(path: Path, classes: List[str]) -> None:
    write_json(path, {"classes": classes})


def to_image_list(entries: Sequence[Entry], classes: List[str], source: str,
                  class_map: Optional[str] = None) -> ImageList:
    """Attach class indices; a label outside the class map is an error naming it.

    `class_map` is the file the classes were read from (the run folder's classes.json);
    the message then names it and says how to deal with one left by another list.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = [(p, label) for p, label in entries if str(label) not in index]
    if unknown:
        shown = ", ".join(f"{label!r} ({p})" for p, label in unknown[:SHOWN])
        hint = (f" The class map was read from {class_map}, written from the training list when this run "
                "folder was first used; every test label must also be a training label. If that file is left "
                "from an attempt with another list and the run folder holds no checkpoint yet, delete it and run "
                "again; otherwise point reader.train and reader.test at the lists the run was started with."
                if class_map else "")
        raise UserError(f"Image list {source}: {len(unknown)} label(s) not in the class map "
                        f"[{', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''}]: {shown}.{hint}")
    return ImageList(source, [p for p, _ in entries], [index[str(label)] for _, label in entries])


def warn_missing_classes(images: ImageList, classes: List[str]) -> ImageList:
    """Return `images` (the reader.val list), warning first of the classes of the class map it has no image of.

    Every decision is made on the validation statistics: a class missing there has no
    recall, and a prediction of it still enters the macro F1 as a class with F1 0, so
    the validation scores describe fewer classes than the model is trained on.
    """
    present = set(images.labels)
    missing = [name for i, name in enumerate(classes) if i not in present]
    if missing:
        log.warning("Image list %s (reader.val) has no images of %d of the %d classes of the training list: %s. "
                    "Their validation recall is undefined and a prediction of one counts in the validation macro "
                    "F1 as a class of F1 0; add images of every class to the validation list.", images.source,
                    len(missing), len(classes), ", ".join(missing[:20]) + (", ..." if len(missing) > 20 else ""))
    return images


def check_files(images: ImageList, skip_bad: bool, record: Optional[Path] = None) -> ImageList:
    """Stop on missing files; stop on unreadable ones, or drop them and say how many with skip_bad.

    Every image is decoded and hashed (see `_examine`), in threads: PIL releases the GIL while
    decoding. With `record` (a JSON file in the run folder), a file whose size and modification
    time are those of an earlier check is not decoded again, so a resumed run of a large set
    starts at once. A list with no readable image left is an error with or without skip_bad.
    The list returned carries the readable images' hashes.
    """
    _check_paths(images)
    checked = _checked(images.paths, record)
    problems = [checked[p][2] for p in images.paths]
    images = ImageList(images.source, images.paths, images.labels,
                       {p: tuple(checked[p][3:]) for p, why in zip(images.paths, problems) if not why})
    bad = [(p, why) for p, why in zip(images.paths, problems) if why]
    if not bad:
        return images
    shown = "; ".join(f"{p}: {why}" for p, why in bad[:SHOWN])
    if len(bad) == len(images):
        raise UserError(f"Image list {images.source}: no readable image is left: all {len(bad)} file(s) cannot "
                        f"be read as images: {shown}. Check that the list points at the right images.")
    if not skip_bad:
        raise UserError(f"Image list {images.source}: {len(bad)} file(s) cannot be read as images: "
                        f"{shown}. Fix or remove them, or set reader.skip_bad=true to skip them.")
    log.warning("skipping %d unreadable image(s) of %s: %s", len(bad), images.source, shown)
    return images.subset([i for i, why in enumerate(problems) if not why])


def _checked(paths: List[str], record: Optional[Path]) -> Dict[str, list]:
    """path -> [size, mtime, problem (None: readable), sha256, perceptual hash, mirror's hash].

    From the record where the file is unchanged since it was checked and hashed, else
    decoded now (a record written before hashing was added is checked again once).
    """
    known = _read_record(record)
    stamps = {p: [os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths}
    todo = [p for p in paths if not (len(known.get(p, ())) == 6 and known[p][:2] == stamps[p])]
    with _pil_limit_lifted():
        for path, (problem, hashes) in zip(todo, in_threads(_examine, todo)):
            known[path] = [*stamps[path], problem, *(hashes or (None, None, None))]
    if record is not None and todo:
        write_json(record, known)
    return known


def _read_record(record: Optional[Path]) -> Dict[str, list]:
    """An earlier check's results by path ({} when there is none or it cannot be read: then all is checked)."""
    try:
        known = json.loads(Path(record).read_text()) if record else {}
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _check_paths(images: ImageList) -> None:
    """Stop on listed paths that do not exist or are folders (skip_bad does not excuse these)."""
    missing = [p for p in images.paths if not Path(p).exists()]
    folders = [p for p in images.paths if Path(p).is_dir()]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(images)} listed files do not exist, "
                        f"e.g. {', '.join(missing[:SHOWN])}")
    if folders:
        problems.append(f"{len(folders)} listed path(s) are folders: "
                        + "; ".join(f"{p} is a folder, not an image file" for p in folders[:SHOWN]))
    if problems:
        raise UserError(f"Image list {images.source}: {'; '.join(problems)}.")


def in_threads(function: Callable[[T], R], items: Sequence[T], threads: int = 8, per_task: int = 32) -> List[R]:
    """[function(item) for item in items], computed in `threads` threads, `per_task` items to a task.

    A task per item costs the pool about as much CPU again as PIL takes to check a
    small image (a future, its locks and a wake-up each); a task per slice does not.
    """
    slices = [items[i:i + per_task] for i in range(0, len(items), per_task)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [result for part in pool.map(lambda part: [function(item) for item in part], slices)
                for result in part]


@contextmanager
def _pil_limit_lifted() -> Iterator[None]:
    """Lift PIL's decompression-bomb limit (it refuses 179 Mpx, which TensorFlow reads); MAX_PIXELS applies instead."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def header_problem(path: str) -> Optional[str]:
    """Why the file is not an image TensorFlow reads, as far as its header tells (format, mode, size), or None.

    No pixel is decoded: for a caller whose decoder names a file it cannot decode (predict
    classifies such a file alone and keeps TensorFlow's reason), a second decode here would
    cost as much CPU as the network's share of a small image.
    """
    try:
        with Image.open(path) as image:
            return _header_problem(image)
    except Exception as error:  # PIL raises many types for broken files
        return _unreadable(error)


def _examine(path: str, hashed: bool = True) -> Tuple[Optional[str], Optional[Hashes]]:
    """(why the file is not an image TensorFlow reads, or None; its Hashes, when readable and `hashed`).

    A JPEG is decoded at down to 1/8 scale (`draft`), no smaller than the perceptual hash's
    DRAFT: the whole stream is still read and entropy-decoded, so a cut or corrupt file
    fails, at a fraction of the cost. The content hash is taken of the bytes decoded.
    """
    try:
        data = Path(path).read_bytes() if hashed else None
        with Image.open(io.BytesIO(data) if hashed else path) as image:
            problem = _header_problem(image)
            if problem:
                return problem, None
            if image.format == "JPEG":
                image.draft(None, (DRAFT, DRAFT))
            large = image.format != "JPEG" and image.width * image.height > LARGE_PIXELS
            with _LARGE if large else nullcontext():
                image.load()
                hashes = (content_hash(data), *(perceptual_hash(image) or (None, None))) if hashed else None
    except Exception as error:  # PIL raises many types for broken files
        return _unreadable(error), None
    return None, hashes


def _unreadable(error: Exception) -> str:
    """The reason PIL's `error` gives a file: no known format, or what broke while reading it."""
    if isinstance(error, UnidentifiedImageError):
        return UNIDENTIFIED
    return f"not a readable image ({error.__class__.__name__}: {error})"


def _header_problem(image: Image.Image) -> Optional[str]:
    if image.format not in FORMATS:
        return f"format {image.format} is not one of {', '.join(FORMATS)}"
    if image.format == "BMP" and image.mode not in BMP_MODES:
        return f"BMP of mode {image.mode} (palette or 1-bit) would be misread; save it as PNG or 24-bit BMP"
    if image.width * image.height > MAX_PIXELS:
        return (f"{image.width} x {image.height} px is more than the {MAX_PIXELS} px "
                "(worklab.data.imagelist.MAX_PIXELS) the check decodes; shrink the image")
    return None
