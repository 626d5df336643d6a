"""schedule=predict: classify image files with a run's checkpoint or an exported model.

Every way ends in the same call, a batch of encoded image files in and probabilities and
top-k labels out: `worklab.serve.export.Classifier.from_bytes` around the run's network, the
SavedModel's `serving_default` signature, which export wrote from that same Classifier, or
any other file export wrote (model.keras, a .tflite, model.onnx: worklab.serve.exported),
decoded and resized as the Tester does. So predict gives what the deployed file gives.

The sections, as the log shows them:
1. the images: a list file, a class-folder tree or a folder (worklab.serve.predictions);
2. the classifier: schedule.run (its config, then the best or latest checkpoint, or
   schedule.step, through Parts.restore_for_inference) or schedule.model;
3. each file checked in threads, a chunk of files ahead of the reading; a file that
   is missing or does not read as an image gets a row with its reason, and is never read
   by TensorFlow;
4. the others read in parallel by tf.data, batched and prefetched; a batch the
   classifier refuses (a file TensorFlow cannot decode although PIL could) is
   classified again one image at a time, so only that image gets an error;
5. predictions.csv, predictions.jsonl and, when the source has labels, the Tester's
   statistics (evaluation.json), all in this job's own folder; the run or model read is
   never written to.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from worklab.errors import Interrupted, UserError
from worklab.progress import Progress
from worklab.run.run_config import load_run_config
from worklab.run.runfolder import RunFolder
from worklab.serve.predictions import UNKNOWN, Row, Source, check, find_images, write_csv, write_jsonl

log = logging.getLogger("worklab")

CHUNK = 2048  # files checked ahead of the reading: a pipeline restart per chunk costs one batch's prefetch
Classify = Callable[[object], Dict[str, np.ndarray]]  # encoded image files (tf.string [N]) -> outputs as numpy


def run(parts) -> Dict:
    """Classify schedule.images; write the results into this job's folder; return counts (and statistics)."""
    s = parts.cfg.schedule
    out = Path(parts.cfg.run_dir)
    source = find_images(s.images)
    log.info("images: %s", source.describe())
    classify, classes, origin = (_from_run(parts) if s.run else _from_model(s.model, out))
    source = source.for_classes(classes.names) if classes.complete else source
    start = time.perf_counter()
    r = parts.cfg.reader
    results, outputs = classify_files(classify, source.paths, r.test_batch_size or r.batch_size,
                                      parts.stop, classes)
    seconds = time.perf_counter() - start
    rows = [Row(path, *result, source.labels[i] if source.labels else None)
            for i, (path, result) in enumerate(zip(source.paths, results))]
    k = max((len(r.labels) for r in rows), default=0)
    write_csv(out / "predictions.csv", rows, k, source.labels is not None, s.min_score)
    write_jsonl(out / "predictions.jsonl", rows, s.min_score)
    errors = sum(r.error is not None for r in rows)
    summary = {"images": len(rows), "errors": errors, "images_per_second": len(rows) / max(seconds, 1e-9),
               "model": origin}
    if s.min_score is not None:
        summary["unknown"] = sum(r.prediction(s.min_score) == UNKNOWN for r in rows)
        log.info("%d of %d images predicted %s: their top probability is below schedule.min_score=%g",
                 summary["unknown"], len(rows) - errors, UNKNOWN, s.min_score)
    if source.labels is not None:
        statistics = _evaluate(parts, source, rows, outputs, classes, origin, out)
        if statistics:
            summary["evaluation"] = statistics
    log.info("predicted %d images (%d errors) in %.1f s, %.1f images/s: %s", len(rows), errors, seconds,
             summary["images_per_second"], out / "predictions.csv")
    if errors == len(rows):
        raise UserError(f"schedule.images={s.images}: none of the {len(rows)} images could be read "
                        f"(e.g. {rows[0].path}: {rows[0].error}); each one's reason is in {out / 'predictions.csv'}.")
    return summary


# The classifier ----------------------------------------------------------------------------------

class ClassNames:
    """The model's class names by index: all of them (a run's classes.json, export.json), or, for a
    SavedModel without export.json, those its outputs have named so far."""

    def __init__(self, names: Optional[List[str]] = None):
        self.names = list(names or [])
        self.complete = names is not None
        self._seen: Dict[int, str] = {}

    def learn(self, indices: np.ndarray, labels: np.ndarray) -> None:
        if not self.complete:
            self._seen.update(zip(indices.ravel().tolist(), (l.decode() for l in labels.ravel().tolist())))

    def index(self) -> Dict[str, int]:
        return {name: i for i, name in enumerate(self.names)} if self.complete else \
            {name: i for i, name in self._seen.items()}


def _from_run(parts) -> Tuple[Classify, ClassNames, Dict]:
    """A run's checkpoint (best, latest or schedule.step) wrapped in export's Classifier; the run is only read."""
    from worklab.run.parts import Parts

    s = parts.cfg.schedule
    run = Path(s.run)
    cfg = load_run_config(run, s)  # a folder without .hydra/config.yaml is refused here, naming it
    _refuse_own_folder(parts, run, "schedule.run")
    if not RunFolder(run).file("classes.json").is_file():
        raise UserError(f"schedule.run={run} has no classes.json: it has not started training, so there is "
                        "no model to predict with. Pass a run folder that has checkpoints.")
    target = Parts(cfg, parts.stop, parts.strategy, results_dir=Path(parts.cfg.run_dir))
    step = target.restore_for_inference(s.step)
    from worklab.serve.export import Classifier

    r, classes = cfg.reader, target.inputs.classes
    k = min(parts.cfg.top_k, len(classes))
    classifier = Classifier(target.model, classes, r, k, target.folder.temperature(step))
    log.info("classifier: %s step %d, %d classes, top %d, %d px", run, step, len(classes), k, r.image_size)

    def classify(images):
        return {key: value.numpy() for key, value in classifier.from_bytes(images).items()}

    return classify, ClassNames(classes), {"run": str(run), "step": step}


def _from_model(location: str, out: Path) -> Tuple[Classify, ClassNames, Dict]:
    """An exported file (worklab.serve.exported), or a SavedModel's serving_default signature with the class names
    from export.json beside it."""
    import tensorflow as tf

    path = Path(location)
    if path.is_file():
        from worklab.serve.exported import from_file

        classify, names, origin = from_file(path, "schedule.model")
        log.info("classifier: %s %s, %d classes", origin["format"], path, len(names))
        return classify, ClassNames(names), origin
    folder = next((p for p in (path, path / "saved_model") if p.is_dir() and tf.saved_model.contains_saved_model(
        str(p))), None)
    if folder is None:
        raise UserError(f"schedule.model={location} is not a SavedModel: neither it nor {path / 'saved_model'} holds "
                        "a saved_model.pb. Pass RUN/export/step-N (written by schedule=export), its saved_model "
                        "folder, or a file in it (model.keras, model.tflite, model_int8.tflite, model.onnx).")
    if out.resolve() == path.resolve() or path.resolve() in out.resolve().parents:
        raise UserError(f"this job's folder {out} is inside schedule.model={location}: predict never writes into "
                        "the model it reads; drop hydra.run.dir (a new dated folder is used) or pick another.")
    try:
        signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    except KeyError:
        raise UserError(f"schedule.model={location}: the SavedModel has no serving_default signature; export it "
                        "with schedule=export.") from None
    except Exception as error:  # what a damaged or foreign SavedModel raises varies
        raise UserError(f"schedule.model={location}: the SavedModel cannot be loaded "
                        f"({error.__class__.__name__}: {str(error).splitlines()[0][:200]}).") from None
    if "images" not in signature.structured_input_signature[1]:
        raise UserError(f"schedule.model={location}: serving_default takes "
                        f"{sorted(signature.structured_input_signature[1])}, not images (encoded image files); "
                        "export it with schedule=export.")
    info = next((p / "export.json" for p in (folder.parent, folder) if (p / "export.json").is_file()), None)
    classes = ClassNames(json.loads(info.read_text()).get("classes") if info else None)
    if info is None:
        log.warning("%s: no export.json beside the SavedModel: class names come from its outputs", location)
    log.info("classifier: SavedModel %s%s", folder, f", {len(classes.names)} classes" if classes.complete else "")

    def classify(images):
        return {key: value.numpy() for key, value in signature(images=images).items()}

    return classify, classes, {"model": str(folder)}


def _refuse_own_folder(parts, run: Path, key: str) -> None:
    if Path(parts.cfg.run_dir).resolve() == run.resolve():
        raise UserError(f"this job's folder is {key}={run} itself: predict never writes into the run it reads. "
                        "Drop resume= and hydra.run.dir= (a new dated folder is used), or pick another folder.")


# Reading and classifying -------------------------------------------------------------------------

def classify_files(classify: Classify, paths: List[str], batch_size: int, stop=None,
                   classes: Optional[ClassNames] = None, check_files: Callable = check, chunk: int = CHUNK
                   ) -> Tuple[List[Tuple[List[str], List[float], Optional[str]]], Dict[int, Dict[str, np.ndarray]]]:
    """(labels, scores, error) for every path, in order, and each classified image's outputs by index.

    The paths go in chunks: while one chunk is read and classified, the next is checked
    (`check_files`) in threads, so a large folder starts at once and the check uses what
    the network leaves of the CPU. A file with a problem is not read. `stop` (a
    StopRequest) ends the loop between batches with Interrupted; `classes` learns names
    from the outputs.
    """
    import tensorflow as tf

    unread = "cannot be read any more (changed or removed after the check)"  # what the pipeline dropped
    results: List = [([], [], unread) for _ in paths]
    outputs: Dict[int, Dict[str, np.ndarray]] = {}
    bar = Progress(len(paths), unit="image")
    starts = range(0, len(paths), chunk)
    with ThreadPoolExecutor(max_workers=1) as ahead:
        checking = ahead.submit(check_files, paths[:chunk])
        for start in starts:
            problems = checking.result()
            if start + chunk < len(paths):
                checking = ahead.submit(check_files, paths[start + chunk:start + 2 * chunk])
            todo = [start + j for j, problem in enumerate(problems) if problem is None]
            for j, problem in enumerate(problems):
                if problem is not None:
                    results[start + j] = ([], [], problem)
            for indices, images in _batches(tf, [paths[i] for i in todo], todo, batch_size) if todo else ():
                if stop:
                    bar.break_line()
                    raise Interrupted(stop.signal, len(outputs),
                                      note=f"stopped after classifying {len(outputs)} of {len(paths)} images; "
                                           "nothing was written: run the same command again")
                for index, output, error in _classify_batch(tf, classify, indices.numpy(), images):
                    if error:
                        results[index] = ([], [], error)
                    else:
                        results[index] = ([label.decode() for label in output["labels"]],
                                          output["scores"].tolist(), None)
                        outputs[index] = output
                        if classes is not None:
                            classes.learn(output["classes"], output["labels"])
                bar.update(int(indices[-1].numpy()) + 1)
    bar.update(len(paths))
    bar.break_line()
    return results, outputs


def _batches(tf, paths: List[str], indices: List[int], batch_size: int):
    """(indices, file bytes) batches read in parallel; a file that fails to read is dropped, not fatal."""
    data = tf.data.Dataset.from_tensor_slices((tf.constant(indices, tf.int64), tf.constant(paths, tf.string)))
    return (data.map(lambda i, path: (i, tf.io.read_file(path)), num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
            .ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE))


def _classify_batch(tf, classify: Classify, indices: np.ndarray, images):
    """Yield (index, outputs of that image, error) for a batch; on a refused batch, one image at a time."""
    try:
        outputs = classify(images)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        if len(indices) == 1:
            yield int(indices[0]), None, f"TensorFlow cannot decode it ({_first_line(error)})"
            return
        for j, index in enumerate(indices):
            yield from _classify_batch(tf, classify, indices[j:j + 1], images[j:j + 1])
        return
    for j, index in enumerate(indices):
        yield int(index), {key: value[j] for key, value in outputs.items()}, None


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0][:200] if text.strip() else error.__class__.__name__


# Statistics --------------------------------------------------------------------------------------

def _evaluate(parts, source: Source, rows: List[Row], outputs: Dict[int, Dict[str, np.ndarray]],
              classes: ClassNames, origin: Dict, out: Path) -> Optional[Dict]:
    """The Tester's statistics over the classified images whose label is a class of the model (evaluation.json)."""
    from worklab.atomic import write_json
    from worklab.train.failures import with_paths
    from worklab.train.stats import cross_entropy, evaluation_statistics

    index = classes.index()
    unknown = sorted({label for label in source.labels if label not in index})
    if unknown:
        log.warning("no statistics: label(s) %s of %s are not classes of the model%s", ", ".join(unknown[:5]),
                    source.location, "" if classes.complete else " (as far as its outputs have named them; "
                    "export.json would list them all)")
        return None
    kept = sorted(outputs)
    if not kept:
        return None
    labels = np.array([index[source.labels[i]] for i in kept], np.int64)
    probs = np.stack([outputs[i]["probabilities"] for i in kept]).astype(np.float64)
    losses = cross_entropy(labels, np.stack([_log_probabilities(outputs[i]) for i in kept]))
    stats = evaluation_statistics(labels, probs, losses, top_k=parts.cfg.top_k, worst=parts.cfg.worst)
    stats["worst"] = with_paths(stats["worst"], [rows[i].path for i in kept])
    write_json(out / "evaluation.json", {**stats, **origin, "images": str(source.location),
                                         "errors": len(rows) - len(kept),
                                         "classes": classes.names if classes.complete else None})
    log.info("predict %s loss %.4f accuracy %.3f top%d %.3f f1 %.3f (%d images)",
             f"step {origin['step']}" if "step" in origin else "model", stats["loss"], stats["accuracy"],
             stats["top_k"], stats["top_k_accuracy"], stats["f1_macro"], stats["count"])
    return stats


def _log_probabilities(output: Dict[str, np.ndarray]) -> np.ndarray:
    """An image's log-probabilities, as the classifier gives them; from a SavedModel exported before it gave
    them, the log of its probabilities, a probability that underflowed to 0 taken as float32's smallest normal
    (so that loss is large, not infinite)."""
    if "log_probabilities" in output:
        return output["log_probabilities"]
    return np.log(np.maximum(output["probabilities"], np.finfo(np.float32).tiny))
