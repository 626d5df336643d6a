"""schedule=export: one checkpoint of a run as models to deploy, in RUN/export/step-N/.

    python run.py schedule=export resume=RUN [schedule.step=N] ['schedule.formats=[saved_model,keras,tflite,onnx]']

The weights come through `Parts.restore_for_inference` (schedule.step, else the best
step, else the latest). The export goes to RUN/export/step-N, or with schedule.out=DIR to
DIR/step-N (a read-only run folder is exported that way). Everything is written into a
temporary folder .step-N.<pid>.* beside it and renamed to step-N only when complete, so a
kill leaves no partial step-N; the next export removes what a killed one left. Exporting
a step again writes a new folder and then replaces the old one: the old step-N is renamed
aside, the new one renamed into place, and the old one deleted. No checkpoint, and
nothing else of the run, is changed.

The formats are worklab.serve.formats' table. Each written file is loaded as predict loads
it and checked against the SavedModel on the run's validation set (else its test set):
export.json's "checks" holds each one's top-1 agreement, accuracy and largest probability
difference, and a format agreeing on less than schedule.min_agreement is warned about, or
with schedule.strict=true refuses the export.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List

import keras
import numpy as np
import tensorflow as tf

from worklab.atomic import umask, write_json
from worklab.data import reader
from worklab.errors import UserError
from worklab.run.runfolder import read_state
from worklab.run.session import listed_steps
from worklab.serve import checks, export, formats, onnx_model
from worklab.serve.formats import FORMATS, Format, Writing

log = logging.getLogger("worklab")

TEST_KEYS = ("loss", "accuracy", "top_k", "top_k_accuracy", "count")
CALIBRATION_IMAGES = 200  # tflite_int8's representative images when schedule.calibration_images is not set


def run(parts) -> Dict:
    """Restore the chosen checkpoint, write every format asked for, and return export.json's contents."""
    s = parts.cfg.schedule
    start = time.monotonic()
    _check_step(parts, s.step)
    root = Path(s.out) if s.out else parts.folder.exports
    _check_writable(root)
    chosen = formats.chosen(s.formats, s.quantize)
    _check_formats(parts, chosen)
    step = parts.restore_for_inference(s.step)
    created = next(p for p in (root, *root.parents) if p.exists()) != root
    root.mkdir(parents=True, exist_ok=True)
    _clear_stale(root)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}.{os.getpid()}."))
    try:
        info = _write(parts, step, tmp, chosen)
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(root.iterdir()):
            root.rmdir()  # the folder this export made, so a refused export leaves the run as it was
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


def _write(parts, step: int, folder: Path, chosen: List[Format]) -> Dict:
    cfg, s = parts.cfg, parts.cfg.schedule
    r = cfg.reader
    temperature = parts.folder.temperature(step)  # schedule=calibrate's for this step, else 1
    classifier = export.Classifier(parts.model, parts.inputs.classes, r, cfg.top_k, temperature)
    resizing = (f"{reader.FILTERS[r.resample]}, as reader.resize" if r.resize == "squash" else
                f"the centred square of {r.crop_fraction:g} of the shorter side, then {reader.FILTERS[r.resample]}, "
                "as reader.resize=crop")
    # The SavedModel is written whatever formats says: the others are converted from it and
    # checked against it; when not asked for, it is removed again before the rename.
    tf.saved_model.save(classifier, str(folder / "saved_model"), signatures=classifier.signatures())
    writing = Writing(classifier, folder, resizing, s.int8_io, lambda: _calibration(parts))
    notes = {f.name: f.write(writing) for f in chosen}
    checks = _checks(parts, folder, chosen)
    if "saved_model" not in s.formats:
        shutil.rmtree(folder / "saved_model")
    info = {
        "run": str(parts.run_dir.resolve()),
        "step": step,
        "classes": list(parts.inputs.classes),
        "image_size": r.image_size,
        "resize": {"mode": r.resize, "resample": r.resample,
                   **({"crop_fraction": r.crop_fraction} if r.resize == "crop" else {})},
        "temperature": temperature,
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
        "checks": checks,
        **({"onnx_opset": onnx_model.OPSET} if FORMATS["onnx"] in chosen else {}),
        **({"calibration_images": _calibration_count(parts)} if FORMATS["tflite_int8"] in chosen else {}),
    }
    info["sha256"] = {str(p.relative_to(folder)): export.sha256(p) for p in export.files_in(folder)}
    for path in info["sha256"]:
        log.info("export: wrote %s (%s)", path, _size(folder / path))
    write_json(folder / "export.json", info)
    log.info("export: wrote export.json (the sha256 of every other file)")
    return info


def _checks(parts, folder: Path, chosen: List[Format]) -> Dict[str, Dict]:
    """Every written file against the SavedModel on the validation set, else the test set: one log line each.

    An agreement below schedule.min_agreement is a warning, or with schedule.strict a
    refusal (UserError; the caller removes the temporary folder, so nothing is written).
    """
    s = parts.cfg.schedule
    split, images = ("val", parts.inputs.val_images) if parts.inputs.has_validation else ("test", parts.inputs.test_images)
    models = {f.name: f.load(folder / f.file) for f in chosen}
    batches = ((pixels.numpy(), labels.numpy()) for pixels, labels in parts.reader.test(images))
    results = checks.compare(FORMATS["saved_model"].load(folder / "saved_model"), models, batches, split)
    low = []
    for name, c in results.items():
        log.info("export: check %-14s agreement %.4f accuracy %.4f max_abs_diff %.2e (%s set, %d images)", name,
                 c["agreement"], c["accuracy"], c["max_abs_diff"], c["set"], c["count"])
        if c["agreement"] < s.min_agreement:
            low.append(f"{name} agrees with the SavedModel's top-1 on {c['agreement']:.4f} of the {c['count']} "
                       f"{split} images, below schedule.min_agreement={s.min_agreement:g}")
    if low and s.strict:
        raise UserError("; ".join(low) + ". schedule.strict=true: nothing was written. Export without that format, "
                        "or with more schedule.calibration_images for tflite_int8.")
    for line in low:
        log.warning("export: %s", line)
    return results


def _check_formats(parts, chosen: List[Format]) -> None:
    """Refuse, before anything is built, a format whose package is missing or whose calibration cannot be drawn."""
    s = parts.cfg.schedule
    if FORMATS["onnx"] in chosen and onnx_model.missing():
        raise UserError(f"schedule.formats has onnx, but {onnx_model.missing()}; nothing was written.")
    if FORMATS["tflite_int8"] in chosen and s.calibration_images is not None:
        count = len(parts.inputs.train_images)
        if s.calibration_images > count:
            raise UserError(f"schedule.calibration_images={s.calibration_images} is more than the training list "
                            f"holds ({count} images): pass at most {count}.")


def _calibration_count(parts) -> int:
    s = parts.cfg.schedule
    return s.calibration_images or min(CALIBRATION_IMAGES, len(parts.inputs.train_images))


def _calibration(parts) -> Iterator[np.ndarray]:
    """tflite_int8's representative images: _calibration_count training images drawn with the run's seed, each
    decoded and resized as the Tester's input does, [1, S, S, 3] float 0-255."""
    paths = parts.inputs.train_images.paths
    drawn = np.random.default_rng(parts.cfg.seed).choice(len(paths), _calibration_count(parts), replace=False)
    for i in sorted(drawn):
        yield reader.load(tf.io.read_file(paths[i]), parts.cfg.reader)[None].numpy()


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
