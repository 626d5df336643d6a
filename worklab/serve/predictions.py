"""Predict's files: the images to classify, each file's check, and predictions.csv / .jsonl (no TensorFlow).

`schedule.images` is one of three kinds of source, told apart by what is on disk:
- a JSON list file: the reader's formats ({path: label} or [{"path", "label"}]), or,
  without labels, a list of paths or of {"path": ...} objects; relative paths resolve
  against the list's folder;
- a class-folder tree: a folder whose images all sit in sub-folders named after classes
  of the model (the labels are the folder names);
- any other folder: searched recursively for image files (imagelist.IMAGE_SUFFIXES);
  hidden files and folders (.name) are left out.

A file that cannot be classified (missing, unreadable, not an image) is not an error of
the job: `check` (or, for a file whose header is fine but whose pixels are not, the
classifier's decoder) gives its reason and the file gets a row with it. Predict writes its
rows as the images are classified (`prediction_files`), so no row is held in memory;
the output files are written under a temporary name and renamed at the end, so a kill
or an interrupt never leaves a file, whole or half, under the final name.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Sequence

from worklab.atomic import replacing
from worklab.data.imagelist import IMAGE_SUFFIXES, SHOWN, _pil_limit_lifted, header_problem, in_threads, read_entries
from worklab.errors import UserError

log = logging.getLogger(__name__)

LIST = "list file"
TREE = "class-folder tree"
FOLDER = "folder"


@dataclass
class Source:
    """The images to classify, in a fixed order, with their labels (class names) when the source has them."""

    location: str
    kind: str  # LIST, TREE or FOLDER
    paths: List[str]
    labels: Optional[List[str]] = None
    others: int = 0  # files in a folder that are not image files by their name, left out

    def describe(self) -> str:
        """What was found, for the log: the kind, the count, labels or not."""
        what = f"{self.kind} {self.location}: {len(self.paths)} images"
        if self.labels is not None:
            what += f" with labels ({len(set(self.labels))} classes)"
        if self.others:
            what += f"; {self.others} other file(s) left out (not {', '.join(IMAGE_SUFFIXES)})"
        return what

    def for_classes(self, classes: Sequence[str]) -> "Source":
        """This source with the model's classes in view: a tree whose folder names are not all classes is a
        plain folder (its sub-folders are only where the images are kept), said in the log."""
        if self.kind != TREE:
            return self
        unknown = sorted(set(self.labels) - set(classes))
        if not unknown:
            return self
        log.info("%s: sub-folder(s) %s are not classes of the model: read as a plain folder, without labels",
                 self.location, ", ".join(unknown[:SHOWN]))
        return Source(self.location, FOLDER, self.paths, None, self.others)


def find_images(location: str) -> Source:
    """The images named by `schedule.images`; UserError naming it when there are none or it does not exist."""
    path = Path(location)
    if path.is_dir():
        source = _folder(path)
    elif path.is_file():
        source = _list(path)
    else:
        raise UserError(f"schedule.images={location} does not exist: pass a JSON image list, a class-folder "
                        "tree or a folder of images.")
    if not source.paths:
        raise UserError(f"schedule.images={location}: no images found ({source.kind}; image files end in "
                        f"{', '.join(IMAGE_SUFFIXES)}).")
    return source


def _list(path: Path) -> Source:
    """A JSON list file; labels are known when every entry has one."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"schedule.images={path} is not valid JSON ({error}): pass a JSON image list, a "
                        "class-folder tree or a folder of images.") from None
    if isinstance(data, list) and all(isinstance(e, str) or (isinstance(e, dict) and "label" not in e)
                                      for e in data):
        paths = [e if isinstance(e, str) else e.get("path") for e in data]
        if not all(isinstance(p, str) for p in paths):
            raise UserError(f"schedule.images={path}: a list without labels holds paths (strings) or "
                            '{"path": ...} objects; some entries have no path.')
        return Source(str(path), LIST, [str((path.parent / p).resolve()) for p in paths])
    if isinstance(data, (list, dict)) and not data:
        return Source(str(path), LIST, [])
    entries = read_entries(str(path), "json")  # the reader's formats, checked as for training
    return Source(str(path), LIST, [p for p, _ in entries], [str(label) for _, label in entries])


def _folder(root: Path) -> Source:
    """A class-folder tree when every image sits in a sub-folder, else a plain folder (searched recursively)."""
    files = sorted(p for p in root.rglob("*") if not any(part.startswith(".") for part in p.relative_to(root).parts)
                   and p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = len(files) - len(images)
    paths = [str(p.resolve()) for p in images]
    tops = [p.relative_to(root).parts for p in images]
    if images and all(len(parts) > 1 for parts in tops):
        return Source(str(root), TREE, paths, [parts[0] for parts in tops], others)
    return Source(str(root), FOLDER, paths, None, others)


def check(paths: Sequence[str], threads: int = 8) -> List[Optional[str]]:
    """Each file's problem, or None when its header is that of an image TensorFlow reads (in threads).

    A file whose pixels cannot be decoded (cut short, corrupt) passes; the classifier's
    decoder refuses it, and predict gives it TensorFlow's reason.
    """
    def problem(path: str) -> Optional[str]:
        if not os.path.exists(path):
            return "file does not exist"
        if os.path.isdir(path):
            return "a folder, not an image file"
        return header_problem(path)

    with _pil_limit_lifted():
        return in_threads(problem, paths, threads)


UNKNOWN = "unknown"  # the prediction of an image whose top probability is below schedule.min_score


@dataclass
class Row:
    """One image's result: its top-k labels and scores, or the reason it has none."""

    path: str
    labels: List[str]
    scores: List[float]
    error: Optional[str] = None
    true_label: Optional[str] = None

    def prediction(self, min_score: Optional[float]) -> Optional[str]:
        """The top label, or UNKNOWN when its probability is below `min_score`; None for a file with an error."""
        if self.error is not None or not self.labels:
            return None
        return UNKNOWN if min_score is not None and self.scores[0] < min_score else self.labels[0]


@contextmanager
def prediction_files(folder: Path, with_true_label: bool, min_score: Optional[float]) -> Iterator["PredictionRows"]:
    """predictions.csv and predictions.jsonl in `folder`, written a row at a time (`PredictionRows.write`) while
    the block runs, each under a temporary name that becomes its own when the block ends: a block that raises
    (an interrupted or failed predict) leaves neither file, nor a part of one."""
    with replacing(folder / "predictions.csv", "w+", newline="") as table, \
            replacing(folder / "predictions.jsonl") as lines:
        yield PredictionRows(table, lines, with_true_label, min_score, folder)


class PredictionRows:
    """The rows of predictions.csv and predictions.jsonl as they are written, and their counts: rows, errors and
    images predicted UNKNOWN.

    The csv's k (its label columns) is that of the widest row, as if all rows were in
    hand: 0 until an image is classified, then the classifier's top k. A row wider than
    the header (the first classified one) has the csv written so far written again with
    its k, once: only the header and the error rows before it, and no rows are held.
    """

    def __init__(self, table: IO, lines: IO, with_true_label: bool, min_score: Optional[float], folder: Path):
        """`table` and `lines`: the open csv (readable too) and jsonl; `folder`: where a widened csv is copied."""
        self.table, self.lines, self.folder = table, lines, folder
        self.with_true_label, self.min_score = with_true_label, min_score
        self.k = 0
        self.count = self.errors = self.unknown = 0
        self.first_error: Optional[Row] = None
        self._writer = csv.writer(table, lineterminator="\n")
        self._writer.writerow(_csv_header(self.k, with_true_label))

    def write(self, row: Row) -> None:
        """Append a row to both files and count it."""
        if len(row.labels) > self.k:
            self._widen(len(row.labels))
        self._writer.writerow(_csv_cells(row, self.k, self.with_true_label, self.min_score))
        self.lines.write(_json_line(row, self.min_score))
        self.count += 1
        self.errors += row.error is not None
        self.unknown += row.prediction(self.min_score) == UNKNOWN
        if row.error is not None and self.first_error is None:
            self.first_error = row

    def _widen(self, k: int) -> None:
        """Write the csv so far again with k label columns, each row's labels and scores padded to k pairs."""
        self.table.flush()
        self.table.seek(0)
        with tempfile.TemporaryFile("w+", dir=self.folder, newline="") as before:
            shutil.copyfileobj(self.table, before)
            before.seek(0)
            self.table.seek(0)
            self.table.truncate()
            rows = csv.reader(before)
            next(rows)
            self._writer.writerow(_csv_header(k, self.with_true_label))
            fixed = 3 if self.with_true_label else 2  # path, [true_label], prediction
            self._writer.writerows(cells[:fixed] + cells[fixed:-1] + [""] * (2 * k - len(cells[fixed:-1])) + cells[-1:]
                                   for cells in rows)
        self.k = k


def _csv_header(k: int, with_true_label: bool) -> List[str]:
    return ["path", *(["true_label"] if with_true_label else []), "prediction",
            *(f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "prob")), "error"]


def _csv_cells(row: Row, k: int, with_true_label: bool, min_score: Optional[float]) -> List[str]:
    """A row's csv cells: its labels and scores (6 decimals) padded to k pairs."""
    ranked = [value for label, score in zip(row.labels, row.scores) for value in (label, f"{score:.6f}")]
    ranked += [""] * (2 * k - len(ranked))
    return [row.path, *([row.true_label or ""] if with_true_label else []), row.prediction(min_score) or "",
            *ranked, row.error or ""]


def _json_line(row: Row, min_score: Optional[float]) -> str:
    return json.dumps({"path": row.path, "prediction": row.prediction(min_score), "labels": row.labels,
                       "scores": [float(s) for s in row.scores], "error": row.error,
                       "true_label": row.true_label}) + "\n"


def read_csv(path: Path) -> List[Dict[str, str]]:
    """predictions.csv back as one dict per row (for checks and tests)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
