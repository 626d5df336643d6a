"""Pretrained checkpoints: reading them by key, mapping our variables onto their keys, the report.

A checkpoint is a TF1 name-based checkpoint, a TF2 object-based one (a worklab run's
checkpoint among them) or a Keras .h5 / .weights.h5 weights file; `open_checkpoint`
tells them apart and gives one view: key -> shape, dtype, value. A worklab run's keys
are its readable variable names (`stage1/block1/conv1/kernel`), so its checkpoints map
by name like any other. Other TF2 keys drop TensorFlow's `/.ATTRIBUTES/VARIABLE_VALUE`.

Each of our variables is skipped (restore.skip), or looks for the key the first
matching restore.rules rule gives (re.sub), or for its own name. Every outcome goes in
one report: restored, skipped, or a problem (missing key, shape or dtype mismatch).
Problems stop the run before training, all listed, unless restore.strict=false, which
starts those variables fresh and says so.

One mismatch is expected rather than a problem: a pretrained classifier's head has its
own class count (ImageNet's 1000). A head variable (`head/...`) whose key differs only
in the last dimension is skipped with the reason in the report, so a shipped mapping
works for any class count without restore.skip=['^head/']. Any other difference in a
head, and every mismatch elsewhere, stays a problem.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from worklab.atomic import write_json
from worklab.config.training import RestoreConfig
from worklab.errors import UserError
from worklab.model.rules import check_all_used, compile_patterns, first_match

log = logging.getLogger(__name__)

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
WORKLAB_MODEL = "model/"


class Checkpoint:
    """A checkpoint's tensors by key, whatever its format."""

    def __init__(self, path: str, shapes: Dict[str, Tuple], dtypes: Dict[str, str], read):
        self.path = path
        self.shapes = shapes
        self.dtypes = dtypes
        self._read = read

    def get(self, key: str) -> np.ndarray:
        return self._read(key)


def open_checkpoint(path: str) -> Checkpoint:
    """Open a TF1/TF2 checkpoint (prefix or folder) or a Keras .h5 weights file; a clear error otherwise."""
    file = Path(path)
    if not (file.exists() or Path(f"{path}.index").exists()):
        raise UserError(f"restore.path={path} does not exist (give a checkpoint prefix such as model.ckpt, "
                        "its folder, or a .h5 weights file).")
    if file.is_file() and _is_hdf5(file):
        return _open_h5(file)
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"restore.path={path} is not a TensorFlow checkpoint or Keras weights file: "
                        f"{str(error).splitlines()[0]}") from None
    return _open_tf(path, reader)


def _is_hdf5(file: Path) -> bool:
    with open(file, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _open_tf(path: str, reader) -> Checkpoint:
    raw = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    worklab = "step" + VALUE_SUFFIX in raw and any(k.startswith(WORKLAB_MODEL) for k in raw)
    names = {}
    for key in raw:
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH" or (worklab and not key.startswith(WORKLAB_MODEL)):
            continue
        name = key.removesuffix(VALUE_SUFFIX)
        names[_unescape(name.removeprefix(WORKLAB_MODEL)) if worklab else name] = key
    return Checkpoint(path, {n: tuple(raw[k]) for n, k in names.items()},
                      {n: dtypes[k].name for n, k in names.items()}, lambda n: reader.get_tensor(names[n]))


def _unescape(name: str) -> str:
    """Undo TensorFlow's escaping of object names ('.S' is '/', '..' is '.')."""
    return re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), name)


def _open_h5(file: Path) -> Checkpoint:
    import h5py

    with h5py.File(file, "r") as h5:
        datasets = {}
        h5.visititems(lambda name, node: datasets.update({name: node}) if isinstance(node, h5py.Dataset) else None)
        shapes = {name: tuple(d.shape) for name, d in datasets.items()}
        dtypes = {name: np.dtype(d.dtype).name for name, d in datasets.items()}

    def read(name: str) -> np.ndarray:
        with h5py.File(file, "r") as h5:
            return np.asarray(h5[name])

    return Checkpoint(str(file), shapes, dtypes, read)


HEAD = re.compile(r"^head/")  # the classifier the network builders put on top, sized for our classes


@dataclass
class Row:
    """How one of our variables is restored."""

    variable: str
    key: Optional[str]
    shape: List[int]
    status: str  # restored | skipped | missing | shape mismatch | dtype mismatch | fresh (not strict)
    found: Optional[List[int]] = None  # the checkpoint's shape when it differs
    reason: Optional[str] = None  # what the status does not say: the dtypes, or why a head was skipped


def plan(variables: Dict[str, tf.Variable], source: Checkpoint, cfg: RestoreConfig) -> List[Row]:
    """Decide, without changing anything, what each variable would be restored from."""
    rules = compile_patterns([r.pattern for r in cfg.rules], "restore.rules")
    skips = compile_patterns(cfg.skip, "restore.skip")
    check_all_used(rules, list(variables), "restore.rules")
    check_all_used(skips, list(variables), "restore.skip")
    return [_row(name, var, source, cfg, rules, skips) for name, var in variables.items()]


def _row(name, var, source: Checkpoint, cfg, rules, skips) -> Row:
    shape = list(var.shape)
    if first_match(name, skips) >= 0:
        return Row(name, None, shape, "skipped")
    i = first_match(name, rules)
    key = cfg.key_prefix + (rules[i].sub(cfg.rules[i].to, name, count=1) if i >= 0 else name)
    if key not in source.shapes:
        return Row(name, key, shape, "missing")
    found = list(source.shapes[key])
    if not fits(found, shape):
        if HEAD.search(name) and only_class_count_differs(found, shape):
            reason = f"class count: checkpoint {found[-1]}, ours {shape[-1]}"
            return Row(name, key, shape, "skipped", found, reason)
        return Row(name, key, shape, "shape mismatch", found)
    ours = tf.as_dtype(var.dtype).name
    if source.dtypes[key] != ours:
        return Row(name, key, shape, "dtype mismatch", reason=f"checkpoint {source.dtypes[key]}, ours {ours}")
    return Row(name, key, shape, "restored")


PROBLEMS = ("missing", "shape mismatch", "dtype mismatch")


def fits(found, ours) -> bool:
    """The same shape, or ours with leading 1s dropped (a 1x1 convolution kernel filling a dense one)."""
    return _squeezed(found, ours) == list(ours)


def only_class_count_differs(found, ours) -> bool:
    """Shapes (leading 1s of the checkpoint's dropped as in `fits`) that differ only in the last dimension."""
    found, ours = _squeezed(found, ours), list(ours)
    return len(found) == len(ours) >= 1 and found[:-1] == ours[:-1] and found[-1] != ours[-1]


def _squeezed(found, ours) -> List[int]:
    found = list(found)
    while len(found) > len(ours) and found[0] == 1:
        found = found[1:]
    return found


def restore(variables: Dict[str, tf.Variable], cfg: RestoreConfig, report: Optional[Path]) -> None:
    """Restore `variables` from cfg.path under the rules and write the report; stop on problems when strict.

    Every row is logged and saved (unless `report` is None: a worker that is not the chief);
    the message names every offender.
    """
    source = open_checkpoint(cfg.path)
    rows = plan(variables, source, cfg)
    problems = [r for r in rows if r.status in PROBLEMS]
    if not cfg.strict:
        for row in problems:
            row.status = f"fresh ({row.status})"
    unused = sorted(set(source.shapes) - {r.key for r in rows if r.status == "restored"})
    if report:
        write_json(report, {"path": cfg.path, "variables": [asdict(r) for r in rows], "unused_keys": unused})
    log.info("restore from %s:\n%s", cfg.path, format_rows(rows))
    for row in rows:
        if row.status == "skipped" and row.reason:
            log.info("restore: %s starts fresh (%s; %s is %s, ours %s)", row.variable, row.reason, row.key,
                     row.found, row.shape)
    if problems and cfg.strict:
        raise UserError(f"restore.path={cfg.path}: {len(problems)} variable(s) cannot be restored "
                        f"({f'all in {report}; ' if report else ''}restore.strict=false starts them fresh): "
                        + describe(problems))
    for row in rows:
        if row.status == "restored":
            variables[row.variable].assign(np.reshape(source.get(row.key), row.shape))
    counts = {s: sum(r.status == s for r in rows) for s in sorted({r.status for r in rows})}
    log.info("restore: %s; %d checkpoint key(s) unused%s", ", ".join(f"{n} {s}" for s, n in counts.items()),
             len(unused), f": {', '.join(unused[:10])}{', ...' if len(unused) > 10 else ''}" if unused else "")


def describe(rows: List[Row]) -> str:
    """Every offender, one clause each: variable (-> key when it differs), what is wrong."""
    return "; ".join(f"{r.variable}" + (f" -> {r.key}" if r.key != r.variable else "") + f" ({r.status}"
                     + (f" {r.found} vs ours {r.shape}" if r.found else "") + (f": {r.reason}" if r.reason else "")
                     + ")" for r in rows) + "."


def format_rows(rows: List[Row]) -> str:
    """The report as an aligned table: variable, checkpoint key, shape, status."""
    width = max([len(r.variable) for r in rows] + [8])
    key_width = max([len(r.key or "-") for r in rows] + [14])
    return "\n".join(f"  {r.variable:<{width}}  {r.key or '-':<{key_width}}  {str(r.shape):<20}  {r.status}"
                     + (f" ({r.reason})" if r.reason else "") for r in rows)
