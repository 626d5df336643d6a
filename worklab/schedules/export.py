"""schedule=export: one checkpoint of a run as models to deploy, in RUN/export/step-N/.

    python run.py schedule=export resume=RUN [schedule.step=N] ['schedule.formats=[saved_model,keras,tflite]']

The weights come through `Parts.restore_for_inference` (schedule.step, else the best
step, else the latest). The export goes to RUN/export/step-N, or with schedule.out=DIR to
DIR/step-N (a read-only run folder is exported that way). Everything is written into a
temporary folder .step-N.<pid>.* beside it and renamed to step-N only when complete, so a
kill leaves no partial step-N; the next export removes what a killed one left. Exporting
a step again writes a new folder and then replaces the old one: the old step-N is renamed
aside, the new one renamed into place, and the old one deleted. No checkpoint, and
nothing else of the run, is changed.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict

import keras
import tensorflow as tf

from worklab.atomic import umask, write_json
from worklab.data.reader import FILTERS
from worklab.errors import UserError
from worklab.run.runfolder import read_state
from worklab.run.session import listed_steps
from worklab.serve import export

log = logging.getLogger("worklab")

TEST_KEYS = ("loss", "accuracy", "top_k", "top_k_accuracy", "count")


def run(parts) -> Dict:
    """Restore the chosen checkpoint, write every format asked for, and return export.json's contents."""
    s = parts.cfg.schedule
    start = time.monotonic()
    _check_step(parts, s.step)
    root = Path(s.out) if s.out else parts.folder.exports
    _check_writable(root)
    step = parts.restore_for_inference(s.step)
    root.mkdir(parents=True, exist_ok=True)
    _clear_stale(root)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}.{os.getpid()}."))
    try:
        info = _write(parts, step, tmp)
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported step %d to %s in %.1fs", step, final, time.monotonic() - start)
    return info


def _check_step(parts, step) -> None:
    """Refuse a run with no checkpoint, or a step it does not have, before anything is built."""
    folder = parts.folder.checkpoints
    steps = listed_steps(folder)
    if not steps:
        raise UserError(f"No checkpoint in {folder}: nothing to export. Pass resume= a run folder that has "
                        "checkpoints.")
    if step is not None and step not in steps:
        raise UserError(f"schedule.step={step}: no checkpoint of that step in {folder}; available: {steps}.")


def _check_writable(root: Path) -> None:
    """Refuse an export folder that cannot be written (a read-only run), naming the key that moves it."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise UserError(f"Cannot write {root}: {existing} is read-only. Export into a folder you can write with "
                        "schedule.out=DIR (the export goes to DIR/step-N).")


def _clear_stale(root: Path) -> None:
    """Remove what an export killed part-way left: its temporary folders (.step-N.<pid>.*, the pid gone)."""
    for folder in root.glob(".step-*.*"):
        pid = folder.name.split(".")[2]
        if folder.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("export: removed %s, left by an export that was stopped part-way", folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(parts, step: int, folder: Path) -> Dict:
    cfg, s = parts.cfg, parts.cfg.schedule
    r = cfg.reader
    classifier = export.Classifier(parts.model, parts.inputs.classes, r, cfg.top_k)
    resizing = (f"{FILTERS[r.resample]}, as reader.resize" if r.resize == "squash" else
                f"the centred square of {r.crop_fraction:g} of the shorter side, then {FILTERS[r.resample]}, "
                "as reader.resize=crop")
    notes = {}
    saved_model = folder / "saved_model"
    # The SavedModel is written whatever formats says: TFLite is converted from it; when not
    # asked for, it is removed again before the rename.
    tf.saved_model.save(classifier, str(saved_model), signatures=classifier.signatures())
    if "keras" in s.formats:
        export.keras_model(parts.model, r.image_size).save(folder / "model.keras")
        notes["keras"] = (f"float32 [N, {r.image_size}, {r.image_size}, 3] RGB 0-255, already resized to "
                          f"{r.image_size}x{r.image_size} ({resizing}); "
                          "output: softmax probabilities")
    if "tflite" in s.formats:
        files = [("model.tflite", False)] + ([("model_dynamic.tflite", True)] if s.quantize == "dynamic" else [])
        for name, quantize in files:
            data, ops = export.tflite(saved_model, quantize)
            (folder / name).write_bytes(data)
        notes["tflite"] = (f"signature {export.TFLITE_SIGNATURE}: float32 [N, {r.image_size}, {r.image_size}, 3] "
                           f"RGB 0-255, already resized ({resizing}); TFLite has no kernel for decoding files nor "
                           f"for reader.resample's resize, so those stay the caller's job (ops: {ops})")
    if "saved_model" not in s.formats:
        shutil.rmtree(saved_model)
    info = {
        "run": str(parts.run_dir.resolve()),
        "step": step,
        "classes": list(parts.inputs.classes),
        "image_size": r.image_size,
        "resize": {"mode": r.resize, **({"crop_fraction": r.crop_fraction} if r.resize == "crop" else {})},
        "preprocessing": parts.model.get_layer("preprocess").spec(),
        "top_k": classifier.k,
        "test": _test_statistics(parts, step),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "formats": list(s.formats),
        "quantize": s.quantize,
        "signatures": {"serving_default": "images: string [N], encoded JPEG/PNG/BMP/GIF/WebP files",
                       "serving_pixels": "images: float32 [N, H, W, 3], RGB 0-255, any size",
                       "serving_uint8": "images: uint8 [N, H, W, 3], RGB, any size",
                       "serving_resized": f"images: float32 [N, {r.image_size}, {r.image_size}, 3], RGB 0-255",
                       "outputs": "probabilities [N, classes], log_probabilities [N, classes], classes [N, k], "
                                  "labels [N, k], scores [N, k]"},
        "notes": notes,
    }
    info["sha256"] = {str(p.relative_to(folder)): export.sha256(p) for p in export.files_in(folder)}
    for path in info["sha256"]:
        log.info("export: wrote %s (%s)", path, _size(folder / path))
    write_json(folder / "export.json", info)
    log.info("export: wrote export.json (the sha256 of every other file)")
    return info


def _test_statistics(parts, step: int):
    """The checkpoint's test statistics from evaluations/step-N.json, or None when it was not tested."""
    stats = read_state(parts.folder.evaluation(step, "test"), ("loss",))
    return {k: stats[k] for k in TEST_KEYS if k in stats} if stats else None


def _replace(tmp: Path, final: Path) -> None:
    """Put the complete export in place; an earlier export of the same step is swapped out, then deleted."""
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's folder is owner-only
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old:
        shutil.rmtree(old)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
