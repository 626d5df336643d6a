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
3. each file's header checked in threads, a chunk of files ahead of the reading (the
   first chunk two batches, so classifying starts at once); a file that is missing or
   whose header is not that of an image TensorFlow reads gets a row with its reason,
   and is never read by TensorFlow;
4. the others read in parallel by tf.data, batched and prefetched; a batch the
   classifier refuses (a file cut short or corrupt after its header) is classified
   again one image at a time, so only that image gets an error, TensorFlow's reason;
5. predictions.csv and predictions.jsonl, each image's row written, in the order of the
   images, as its batch is classified, and, when the source has labels, the Tester's
   statistics (evaluation.json) gathered as they go (`Evaluation`), all in this job's own
   folder; the run or model read is never written to.

Beyond the list of the images itself, nothing is kept per image (no rows, no
probabilities; only a labelled image of a SavedModel without export.json may wait for its
class to be named, see `Evaluation`), so memory does not grow with the number of
images. The two files take their names when every image has its row: an
interrupted or failed predict leaves neither.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from worklab.errors import Interrupted, UserError
from worklab.progress import Progress
from worklab.run.run_config import load_run_config
from worklab.run.runfolder import RunFolder
from worklab.serve.predictions import UNKNOWN, PredictionRows, Row, Source, check, find_images, prediction_files

log = logging.getLogger("worklab")

CHUNK = 2048  # files checked ahead of the reading: a pipeline restart per chunk costs one batch's prefetch
FLUSH = 256  # classified images whose probabilities are added to the statistics at once
Classify = Callable[[object], Dict[str, np.ndarray]]  # encoded image files (tf.string [N]) -> outputs as numpy


def run(parts) -> Dict:
    """Classify schedule.images; write the results into this job's folder; return counts (and statistics)."""
    s = parts.cfg.schedule
    out = Path(parts.cfg.run_dir)
    source = find_images(s.images)
    log.info("images: %s", source.describe())
    classify, classes, origin = (_from_run(parts) if s.run else _from_model(s.model, out))
    source = source.for_classes(classes.names) if classes.complete else source
    evaluation = (Evaluation(source, classes, parts.cfg.top_k, parts.cfg.worst) if source.labels is not None
                  else None)
    start = time.perf_counter()
    r = parts.cfg.reader
    files = write_predictions(classify, source, classes, out, r.test_batch_size or r.batch_size, parts.stop,
                              s.min_score, evaluation)
    seconds = time.perf_counter() - start
    summary = {"images": files.count, "errors": files.errors, "images_per_second": files.count / max(seconds, 1e-9),
               "model": origin}
    if s.min_score is not None:
        summary["unknown"] = files.unknown
        log.info("%d of %d images predicted %s: their top probability is below schedule.min_score=%g",
                 files.unknown, files.count - files.errors, UNKNOWN, s.min_score)
    statistics = evaluation.result() if evaluation else None
    if statistics:
        _write_evaluation(statistics, source, files.errors, classes, origin, out)
        summary["evaluation"] = statistics
    log.info("predicted %d images (%d errors) in %.1f s, %.1f images/s: %s", files.count, files.errors, seconds,
             summary["images_per_second"], out / "predictions.csv")
    if files.errors == files.count:
        first = files.first_error
        raise UserError(f"schedule.images={s.images}: none of the {files.count} images could be read "
                        f"(e.g. {first.path}: {first.error}); each one's reason is in {out / 'predictions.csv'}.")
    return summary


def write_predictions(classify: Classify, source: Source, classes: ClassNames, out: Path, batch_size: int,
                      stop=None, min_score: Optional[float] = None, evaluation: Optional["Evaluation"] = None,
                      chunk: int = CHUNK) -> PredictionRows:
    """Classify the source's images and write each one's row to predictions.csv and .jsonl in `out` as its batch
    is classified, feeding `evaluation` the classified ones; return the rows' counts.

    Nothing is held per image beyond a chunk of paths (classify_files): memory does not
    grow with the number of images. The files take their names only when every image has
    its row, so an interrupt (`stop`) or an error leaves none.
    """
    with prediction_files(out, source.labels is not None, min_score) as files:
        for index, output, error in classify_files(classify, source.paths, batch_size, stop, classes, chunk=chunk):
            path = source.paths[index]
            files.write(_row(path, output, error, source.labels[index] if source.labels else None))
            if evaluation is not None and output is not None:
                evaluation.add(index, path, output)
    return files


def _row(path: str, output: Optional[Dict[str, np.ndarray]], error: Optional[str], true_label: Optional[str]) -> Row:
    """An image's row: the top labels and scores of its outputs, or, without outputs, its error."""
    if output is None:
        return Row(path, [], [], error, true_label)
    return Row(path, [label.decode() for label in output["labels"]], output["scores"].tolist(), None, true_label)


# The classifier ----------------------------------------------------------------------------------

class ClassNames:
    """The model's class names by index: all of them (a run's classes.json, export.json), or, for a
    SavedModel without export.json, those its outputs have named so far."""

    def __init__(self, names: Optional[List[str]] = None):
        self.names = list(names or [])
        self.complete = names is not None
        self._index: Dict[str, int] = {name: i for i, name in enumerate(self.names)}

    def learn(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """Take the names an output gives its top classes (only while the names are not all known)."""
        if not self.complete:
            self._index.update(zip((label.decode() for label in labels.ravel().tolist()), indices.ravel().tolist()))

    def index(self) -> Dict[str, int]:
        """Each known name's class index (not to be changed by the caller)."""
        return self._index


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
                   ) -> Iterator[Tuple[int, Optional[Dict[str, np.ndarray]], Optional[str]]]:
    """Yield (index, outputs of that image, None) for each path classified and (index, None, reason) for each
    that could not be, in the order of `paths`, as the batches are classified.

    The paths go in chunks: while one chunk is read and classified, the next is checked
    (`check_files`) in threads, so the check uses what the network leaves of the CPU. The
    first chunk is two batches, so the first batch waits for the check of its own files
    only. A file with a problem is not read. Each batch is classified in a thread of its
    own while the caller takes the rows of the one before, so the network does not wait
    for them. Held at a time: a chunk's check results and the batches in flight. `stop`
    (a StopRequest) ends the loop between batches with Interrupted; `classes` learns
    names from the outputs.
    """
    import tensorflow as tf

    bar = Progress(len(paths), unit="image")
    classified = 0
    starts = [0, *range(min(2 * batch_size, chunk), len(paths), chunk)]
    spans = [paths[start:end] for start, end in zip(starts, [*starts[1:], len(paths)])]
    with ThreadPoolExecutor(max_workers=1) as ahead, ThreadPoolExecutor(max_workers=1) as network:
        checking = ahead.submit(check_files, spans[0])
        for n, start in enumerate(starts):
            problems = checking.result()
            if n + 1 < len(spans):
                checking = ahead.submit(check_files, spans[n + 1])
            todo = [start + j for j, problem in enumerate(problems) if problem is None]
            done = start  # every path before this one has been yielded
            batches = _batches(tf, [paths[i] for i in todo], todo, batch_size) if todo else ()
            for results in _classified_ahead(tf, classify, batches, network, stop):
                for index, output, error in results:
                    yield from _unclassified(problems, start, done, index)
                    if output is not None:
                        classified += 1
                        if classes is not None:
                            classes.learn(output["classes"], output["labels"])
                    yield index, output, error
                    done = index + 1
                bar.update(done)
            if stop:
                bar.break_line()
                raise Interrupted(stop.signal, classified,
                                  note=f"stopped after classifying {classified} of {len(paths)} images; "
                                       "nothing was written: run the same command again")
            yield from _unclassified(problems, start, done, start + len(problems))
    bar.update(len(paths))
    bar.break_line()


def _classified_ahead(tf, classify: Classify, batches, network: ThreadPoolExecutor, stop=None):
    """Each batch's [(index, outputs, error)], in order, the next batch classified in `network` while the caller
    takes these; once `stop` is set, no further batch is started, and those classified are still given."""
    pending = None
    for indices, images in batches:
        if stop:
            break
        following = network.submit(lambda i=indices.numpy(), x=images: list(_classify_batch(tf, classify, i, x)))
        if pending is not None:
            yield pending.result()
        pending = following
    if pending is not None:
        yield pending.result()


def _unclassified(problems: List[Optional[str]], start: int, first: int, end: int):
    """(index, None, reason) for the paths first .. end - 1 of the chunk that starts at `start`, none of them
    classified: their check's problem, or, when the check passed, that tf.data could not read the file."""
    for index in range(first, end):
        yield index, None, problems[index - start] or "cannot be read any more (changed or removed after the check)"


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

class Evaluation:
    """The Tester's statistics (worklab.train.stats) over the classified images whose label is a class of the
    model, gathered as the images are classified (evaluation.json).

    Each classified image is an example of the set by its place among the classified ones
    (the index its row in "worst" gives, with its file), as if they had been gathered first.
    Its probabilities wait in a buffer of FLUSH images at most, then go to the accumulator.
    When every class name is known up front (a run, an exported model with export.json)
    nothing else is kept. A SavedModel without export.json names its classes only in its
    outputs' top k: an image whose label no output has named yet waits, with its
    probabilities, until one does (those images are what can grow), and a label never
    named leaves the job without statistics, as a label that is not a class of the model.
    """

    def __init__(self, source: Source, classes: ClassNames, top_k: int, worst: int):
        from worklab.train.stats import EvaluationAccumulator

        self.source = source
        self.classes = classes
        self.accumulator = EvaluationAccumulator(top_k, worst)
        self.unknown = sorted(set(source.labels) - set(classes.names)) if classes.complete else []
        self.classified = 0
        self._ready: List[Tuple[int, int, str, Dict[str, np.ndarray]]] = []  # (place, class, path, outputs)
        self._waiting: Dict[str, List[Tuple[int, str, Dict[str, np.ndarray]]]] = {}  # label -> (place, path, outputs)

    def add(self, index: int, path: str, output: Dict[str, np.ndarray]) -> None:
        """Take the classified image source.paths[index] (`path`) with its outputs."""
        place = self.classified
        self.classified += 1
        if self.unknown:
            return
        label = self.source.labels[index]
        named = self.classes.index().get(label)
        if named is None:
            self._waiting.setdefault(label, []).append((place, path, {key: np.array(value) for key, value in
                                                                       output.items()}))
        else:
            self._ready.append((place, named, path, output))
        if self._waiting:
            self._release()
        if len(self._ready) >= FLUSH:
            self._flush()

    def result(self) -> Optional[Dict]:
        """The statistics, or None: when a label is not a class of the model (said in the log) or no image was
        classified."""
        index = self.classes.index()
        unknown = self.unknown or sorted({label for label in self.source.labels if label not in index})
        if unknown:
            log.warning("no statistics: label(s) %s of %s are not classes of the model%s", ", ".join(unknown[:5]),
                        self.source.location, "" if self.classes.complete else " (as far as its outputs have "
                        "named them; export.json would list them all)")
            return None
        if not self.classified:
            return None
        self._release()
        self._flush()
        return self.accumulator.result()

    def _release(self) -> None:
        """Make ready the waiting images whose label the outputs have named by now."""
        index = self.classes.index()
        for label in [label for label in self._waiting if label in index]:
            self._ready += [(place, index[label], path, output) for place, path, output in self._waiting.pop(label)]

    def _flush(self) -> None:
        """Add the ready images to the accumulator, their losses taken from their log-probabilities."""
        from worklab.train.stats import cross_entropy

        if not self._ready:
            return
        places, labels, paths, outputs = zip(*self._ready)
        labels = np.array(labels, np.int64)
        probs = np.stack([output["probabilities"] for output in outputs]).astype(np.float64)
        losses = cross_entropy(labels, np.stack([_log_probabilities(output) for output in outputs]))
        self.accumulator.add(labels, probs, losses, indices=places, paths=paths)
        self._ready = []


def _write_evaluation(stats: Dict, source: Source, errors: int, classes: ClassNames, origin: Dict,
                      out: Path) -> None:
    """evaluation.json in this job's folder: the statistics, what was classified and with which model."""
    from worklab.atomic import write_json

    write_json(out / "evaluation.json", {**stats, **origin, "images": str(source.location), "errors": errors,
                                         "classes": classes.names if classes.complete else None})
    log.info("predict %s loss %.4f accuracy %.3f top%d %.3f f1 %.3f (%d images)",
             f"step {origin['step']}" if "step" in origin else "model", stats["loss"], stats["accuracy"],
             stats["top_k"], stats["top_k_accuracy"], stats["f1_macro"], stats["count"])


def _log_probabilities(output: Dict[str, np.ndarray]) -> np.ndarray:
    """An image's log-probabilities, as the classifier gives them; from a SavedModel exported before it gave
    them, the log of its probabilities, a probability that underflowed to 0 taken as float32's smallest normal
    (so that loss is large, not infinite)."""
    if "log_probabilities" in output:
        return output["log_probabilities"]
    return np.log(np.maximum(output["probabilities"], np.finfo(np.float32).tiny))
