"""schedule=predict: finding the images, each file's check, the output files, and predict end to end.

The end-to-end cases share one tiny trained run and check what a user would: the rows
of predictions.csv, probabilities and statistics equal to the Tester's for the same
step, error rows for bad files with every other image classified, true labels from a
class-folder tree, the exported model giving the same rows as its run, bad input
refused with exit 2, and the run folder byte for byte as it was.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, one_device, run_py, train_here
from worklab.errors import UserError
from worklab.hydra_edge import to_plain
from worklab.serve import predictions
from worklab.serve.predictions import FOLDER, LIST, TREE, Row, find_images


# Finding the images (no TensorFlow) -----------------------------------------------------------------


def image(path: Path, colour=(200, 30, 30), size=12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def test_a_list_file_in_each_format_with_and_without_labels(tmp_path):
    for name in ("a.png", "b.png"):
        image(tmp_path / "img" / name)
    formats = {"dict.json": {"img/a.png": "cat", "img/b.png": "dog"},
               "objects.json": [{"path": "img/a.png", "label": 0}, {"path": "img/b.png", "label": 1}],
               "paths.json": ["img/a.png", "img/b.png"],
               "unlabelled.json": [{"path": "img/a.png"}, {"path": "img/b.png"}]}
    for name, data in formats.items():
        (tmp_path / name).write_text(json.dumps(data))
    paths = [str(tmp_path / "img" / n) for n in ("a.png", "b.png")]
    found = {name: find_images(str(tmp_path / name)) for name in formats}
    assert all(s.kind == LIST and s.paths == paths for s in found.values())
    assert found["dict.json"].labels == ["cat", "dog"]
    assert found["objects.json"].labels == ["0", "1"]  # int labels name the classes "0", "1" as in classes.json
    assert found["paths.json"].labels is None and found["unlabelled.json"].labels is None
    assert "2 images with labels (2 classes)" in found["dict.json"].describe()


def test_a_class_folder_tree_gives_labels_and_a_plain_folder_is_searched_recursively(tmp_path):
    for name in ("cat/1.png", "cat/deep/2.jpg", "dog/3.PNG", ".hidden/4.png", "cat/.5.png"):
        image(tmp_path / "tree" / name)
    (tmp_path / "tree" / "dog" / "notes.txt").write_text("not an image")
    tree = find_images(str(tmp_path / "tree"))
    assert tree.kind == TREE and tree.labels == ["cat", "cat", "dog"] and tree.others == 1
    assert [Path(p).name for p in tree.paths] == ["1.png", "2.jpg", "3.PNG"]  # hidden files and folders left out
    assert tree.for_classes(["cat", "dog", "emu"]) is tree
    plain = tree.for_classes(["cat", "emu"])  # "dog" is no class of the model: only where images are kept
    assert plain.kind == FOLDER and plain.labels is None and plain.paths == tree.paths

    image(tmp_path / "tree" / "loose.png")
    assert find_images(str(tmp_path / "tree")).kind == FOLDER  # an image at the top: a plain folder


@pytest.mark.parametrize("make, says", [
    (lambda d: d.mkdir(), "no images found"),
    (lambda d: (d.mkdir(), (d / "notes.txt").write_text("x")), "no images found"),
    (lambda d: None, "does not exist"),
    (lambda d: d.write_text("[]"), "no images found"),
    (lambda d: d.write_text("{not json"), "is not valid JSON"),
    (lambda d: d.write_text('[{"path": "a.png", "label": 1}, {"label": 2}]'), "must be a JSON object"),
])
def test_a_source_without_images_is_refused_naming_it(tmp_path, make, says):
    source = tmp_path / "source"
    make(source)
    with pytest.raises(UserError, match=says) as error:
        find_images(str(source))
    assert str(source) in str(error.value)


def test_each_file_is_checked_and_a_bad_one_named_with_its_reason(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    problems = predictions.check([str(good), str(cut), str(text), str(tmp_path / "gone.png"), str(tmp_path)])
    assert problems[0] is None
    assert problems[1] is None  # its header is whole: the check decodes no pixel, the classifier's decoder names it
    assert "no known image format" in problems[2]
    assert problems[3] == "file does not exist" and "a folder" in problems[4]


def test_a_file_cut_short_after_its_header_gets_tensorflows_reason_and_its_batch_is_classified(tmp_path):
    import tensorflow as tf

    from worklab.schedules.predict import classify_files

    paths = [str(image(tmp_path / f"{i}.png", (i * 40, 0, 0))) for i in range(3)]
    noise = np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(paths[1])
    whole = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(whole[:len(whole) // 2])

    def decoding(images):  # a stand-in classifier that decodes its files, as Classifier.from_bytes does
        red = tf.map_fn(lambda contents: tf.cast(tf.io.decode_image(contents, channels=3)[0, 0, 0], tf.float32),
                        images, fn_output_signature=tf.float32).numpy()
        n = len(red)
        return {"probabilities": red[:, None] / 255, "classes": np.zeros((n, 1), np.int32),
                "labels": np.array([[b"red"]] * n), "scores": red[:, None] / 255}

    results = list(classify_files(decoding, paths, batch_size=3))
    assert [index for index, _, _ in results] == [0, 1, 2]
    assert results[1][1] is None and results[1][2].startswith("TensorFlow cannot decode it")
    assert [round(float(output["scores"][0]) * 255) for _, output, _ in (results[0], results[2])] == [0, 80]


def write_rows(folder, rows, with_true_label, min_score):
    """predictions.csv and .jsonl in `folder` as predict writes them, a row at a time."""
    with predictions.prediction_files(folder, with_true_label, min_score) as files:
        for row in rows:
            files.write(row)


def test_the_output_files_hold_every_row_in_order(tmp_path):
    rows = [Row("/a.png", ["cat", "dog"], [0.75, 0.25], None, "cat"),
            Row("/b,c.png", [], [], "file does not exist", "dog")]
    write_rows(tmp_path, rows, with_true_label=True, min_score=None)
    table = predictions.read_csv(tmp_path / "predictions.csv")
    assert list(table[0]) == ["path", "true_label", "prediction", "label_1", "prob_1", "label_2", "prob_2", "error"]
    assert table[0] == {"path": "/a.png", "true_label": "cat", "prediction": "cat", "label_1": "cat",
                        "prob_1": "0.750000", "label_2": "dog", "prob_2": "0.250000", "error": ""}
    assert table[1]["path"] == "/b,c.png" and table[1]["label_1"] == "" and table[1]["error"] == "file does not exist"
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert lines[1] == {"path": "/b,c.png", "prediction": None, "labels": [], "scores": [],
                        "error": "file does not exist", "true_label": "dog"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_top_probability_below_min_score_predicts_unknown_and_keeps_the_scores(tmp_path):
    rows = [Row("/sure.png", ["cat", "dog"], [0.75, 0.25]), Row("/unsure.png", ["dog", "cat"], [0.55, 0.45]),
            Row("/edge.png", ["cat", "dog"], [0.6, 0.4]), Row("/gone.png", [], [], "file does not exist")]
    write_rows(tmp_path, rows, with_true_label=False, min_score=0.6)
    table = predictions.read_csv(tmp_path / "predictions.csv")
    assert [row["prediction"] for row in table] == ["cat", "unknown", "cat", ""]
    assert table[1]["label_1"] == "dog" and table[1]["prob_1"] == "0.550000"  # its scores kept
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [line["prediction"] for line in lines] == ["cat", "unknown", "cat", None]


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_min_score_outside_0_to_1_is_refused_naming_the_key(value):
    from worklab.config.schedules import PredictSchedule

    with pytest.raises(UserError, match=rf"schedule.min_score={value} must be in \[0, 1\]"):
        PredictSchedule(images="x", run="r", min_score=value)


def test_a_batch_the_classifier_refuses_is_classified_one_image_at_a_time():
    import tensorflow as tf

    from worklab.schedules.predict import _classify_batch

    def classify(images):  # refuses any batch that holds b"bad", as a decoder would
        if any(x == b"bad" for x in images.numpy()):
            raise tf.errors.InvalidArgumentError(None, None, "Unknown image file format")
        n = len(images.numpy())
        return {"probabilities": np.full((n, 2), 0.5, np.float32), "classes": np.zeros((n, 1), np.int32),
                "labels": np.array([[b"cat"]] * n), "scores": np.full((n, 1), 0.5, np.float32)}

    out = list(_classify_batch(tf, classify, np.array([4, 7, 9]), tf.constant([b"ok", b"bad", b"ok"])))
    assert [(i, error is None) for i, _, error in out] == [(4, True), (7, False), (9, True)]
    assert "Unknown image file format" in out[1][2]


def test_files_are_classified_in_order_across_chunks_with_bad_ones_named(tmp_path):
    from worklab.schedules.predict import ClassNames, classify_files

    paths = [str(image(tmp_path / f"{i}.png", (i * 20, 0, 0))) for i in range(7)]
    (tmp_path / "3.png").write_text("not an image")
    paths.append(str(tmp_path / "gone.png"))

    def classify(images):  # class 0 or 1 by the file's length, to have outputs to learn names from
        n = len(images.numpy())
        sizes = np.array([[len(x) % 2] for x in images.numpy()], np.int32)
        return {"probabilities": np.full((n, 2), 0.5, np.float32), "classes": sizes,
                "labels": np.where(sizes == 0, b"even", b"odd"), "scores": np.full((n, 1), 0.5, np.float32)}

    names = ClassNames()
    results = list(classify_files(classify, paths, batch_size=2, classes=names, chunk=3))
    assert [index for index, _, _ in results] == list(range(8))  # every path once, in order
    assert [error is None for _, _, error in results] == [True, True, True, False, True, True, True, False]
    assert "no known image format" in results[3][2] and results[7][2] == "file does not exist"
    assert [index for index, output, _ in results if output is not None] == [0, 1, 2, 4, 5, 6]
    assert all(output["labels"][0] in (b"even", b"odd") for _, output, error in results if error is None)
    assert set(names.index()) <= {"even", "odd"} and names.index()


def one_class(images):
    """A stand-in classifier: every image is class "one", with probability 1."""
    n = len(images.numpy())
    return {"probabilities": np.full((n, 1), 1.0, np.float32), "classes": np.zeros((n, 1), np.int32),
            "labels": np.array([[b"one"]] * n), "scores": np.full((n, 1), 1.0, np.float32)}


def test_the_first_check_covers_two_batches_so_classifying_starts_before_the_folder_is_checked(tmp_path):
    from worklab.schedules.predict import classify_files
    from worklab.serve.predictions import check

    paths = [str(image(tmp_path / f"{i}.png", (i, 0, 0), size=4)) for i in range(11)]
    checked = []

    def recorded_check(chunk):
        checked.append(len(chunk))
        return check(chunk)

    results = list(classify_files(one_class, paths, batch_size=2, check_files=recorded_check, chunk=5))
    assert checked == [4, 5, 2]  # two batches first, then chunk by chunk
    assert [index for index, output, error in results if output is not None and error is None] == list(range(11))


def test_the_next_batch_is_classified_while_the_caller_takes_the_rows_of_one_before(tmp_path):
    import threading

    from worklab.schedules.predict import classify_files

    paths = [str(image(tmp_path / f"{i}.png", (i, 0, 0), size=4)) for i in range(6)]
    second_started = threading.Event()
    calls = []

    def classify(images):
        calls.append(len(images.numpy()))
        if len(calls) == 2:
            second_started.set()
        return one_class(images)

    rows = classify_files(classify, paths, batch_size=2)
    first = next(rows)
    assert first[0] == 0 and second_started.wait(timeout=20)  # while the first batch's rows are being taken
    assert [index for index, output, _ in [first, *rows] if output is not None] == list(range(6))


# Streaming -------------------------------------------------------------------------------------------

NAMES = [f"class{i}" for i in range(1000)]


def a_thousand_classes(images):
    """A stand-in for the classifier: 1000 classes, each image's top class picked by its file's bytes."""
    files = images.numpy()
    logits = np.zeros((len(files), len(NAMES)), np.float32)
    logits[np.arange(len(files)), [sum(f) % len(NAMES) for f in files]] = 5.0
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    return {"probabilities": probs, "log_probabilities": log_probs, "classes": top.astype(np.int32),
            "labels": np.array(NAMES, dtype=object)[top].astype(bytes), "scores": np.take_along_axis(probs, top, 1)}


def labelled_images(folder: Path, count: int):
    """`count` tiny image files, each labelled with a class of NAMES."""
    paths = [str(image(folder / f"{i}.png", (i % 256, i // 256, 7), size=4)) for i in range(count)]
    return predictions.Source(str(folder), LIST, paths, [NAMES[i * 7 % len(NAMES)] for i in range(count)])


def test_memory_does_not_grow_with_the_number_of_images(tmp_path, monkeypatch):
    """Classifying and writing the rows of 4N images, and then their statistics, take no more memory at their
    peak than those of N: no image's probabilities or row is kept."""
    import tracemalloc

    from worklab.schedules import predict
    from worklab.schedules.predict import ClassNames, Evaluation, write_predictions

    monkeypatch.setattr(predict, "FLUSH", 16)  # N and 4N both fill the statistics' buffer while streaming

    def peak(work):
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def peaks(count: int, job: str):
        source = predictions.Source(every.location, LIST, every.paths[:count], every.labels[:count])
        classes = ClassNames(NAMES)
        evaluation = Evaluation(source, classes, top_k=5, worst=4)
        streaming = peak(lambda: write_predictions(a_thousand_classes, source, classes, tmp_path / job, 8,
                                                   evaluation=evaluation, chunk=16))  # several chunks of files
        statistics = peak(evaluation.result)
        assert len(predictions.read_csv(tmp_path / job / "predictions.csv")) == count
        assert evaluation.result()["count"] == count
        return np.array([streaming, statistics])

    n = 64
    every = labelled_images(tmp_path / "images", 4 * n)
    peaks(n, "warm-up")  # TensorFlow's first tracing and caches, not counted
    small, large = peaks(n, "n"), peaks(4 * n, "4n")
    row = len(NAMES) * 4  # one image's float32 probabilities; before, each image kept two and a row
    # Python's free lists and TensorFlow's per-chunk pipelines add some 150 KB from N to 4N (as much from 4N to 16N).
    assert np.all(large - small < 3 * n * row / 2), (small, large)  # less than half a row per added image


def test_an_interrupted_predict_leaves_no_predictions_file(tmp_path):
    import os
    import signal

    from worklab.errors import Interrupted
    from worklab.interrupt import StopRequest
    from worklab.schedules.predict import ClassNames, Evaluation, write_predictions

    source = labelled_images(tmp_path / "images", 40)
    calls = []

    def interrupted_after_two_batches(images):
        calls.append(len(images.numpy()))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while the second batch is classified
        return a_thousand_classes(images)

    job = tmp_path / "job"
    with StopRequest() as stop, pytest.raises(Interrupted) as raised:
        write_predictions(interrupted_after_two_batches, source, ClassNames(NAMES), job, 8, stop,
                          evaluation=Evaluation(source, ClassNames(NAMES), top_k=5, worst=4))
    # The batch after the second may have been started beside it (batches are classified one ahead); no later one.
    assert len(calls) in (2, 3)
    assert f"stopped after classifying {8 * len(calls)} of 40 images; nothing was written" in raised.value.note
    assert list(job.iterdir()) == []  # neither file, nor a temporary one


def test_an_image_whose_label_no_output_has_named_yet_waits_and_counts_in_its_place():
    """A SavedModel without export.json names its classes only in its outputs' top k: the statistics are those
    of all the images once every label is named, each image at its place among the classified ones."""
    from worklab.schedules.predict import ClassNames, Evaluation
    from worklab.train.stats import cross_entropy, evaluation_statistics

    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]], np.float32)
    labels = ["c", "b", "c", "a"]  # "c" is named by the third output only
    source = predictions.Source("list.json", LIST, [f"/{i}.png" for i in range(4)], labels)
    names = ClassNames()
    evaluation = Evaluation(source, names, top_k=1, worst=4)
    for i, row in enumerate(probs):
        top = np.argsort(-row, kind="stable")[:1]
        output = {"probabilities": row, "log_probabilities": np.log(row), "classes": top,
                  "labels": np.array([b"abc"[j:j + 1] for j in top]), "scores": row[top]}
        names.learn(output["classes"], output["labels"])  # as classify_files does
        evaluation.add(i, source.paths[i], output)
    indices = np.array([2, 1, 2, 0])
    expected = evaluation_statistics(indices, probs.astype(np.float64), cross_entropy(indices, np.log(probs)),
                                     top_k=1, worst=4)
    assert json.dumps(evaluation.result()) == json.dumps({**expected, "worst": [
        {"path": f"/{row['index']}.png", **row} for row in expected["worst"]]})


# End to end ------------------------------------------------------------------------------------------

def contents(folder: Path):
    """Every file's bytes, by path: the folder byte for byte."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_network):
    """A run trained for 4 steps on the tiny demo set, with the .hydra/ files run.py would save, and its test list.

    Trained in this process (conftest.train_here), on a demo set of its own, with conftest's small network: what
    predict gives does not depend on which network, and the small one exports in a fraction of the ResNet's time.
    """
    root = tmp_path_factory.mktemp("predict")
    run = train_here(root / "run", root / "data", ["schedule=train", "schedule.steps=4", *small_network])
    return run, next((root / "data").glob("demo-*")) / "test.json"


def predict(job: Path, *overrides: str):
    """schedule=predict in this process (the real config composed), returning app.run's result."""
    from hydra import compose, initialize_config_dir

    from worklab import app

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["schedule=predict", f"run_dir={job}", *overrides])
    return app.run(to_plain(cfg))


def outputs_of_the_tester(run: Path):
    """The Tester's probabilities and statistics for the run's latest checkpoint."""
    from worklab.config.schedules import TestSchedule
    from worklab.interrupt import StopRequest
    from worklab.run.parts import Parts
    from worklab.run.run_config import load_run_config

    with StopRequest() as stop:
        parts = Parts(load_run_config(run, TestSchedule()), stop, one_device(), results_dir=run.parent / "tester")
        parts.restore_for_inference(default="latest")
        tester = parts.tester
        probs = np.concatenate([tester._predict(x)[0].numpy() for x, _ in tester.dataset])
        return probs, tester.evaluate(), parts.inputs.test_images.paths, parts.inputs.classes


@pytest.mark.slow
def test_predict_from_a_run_gives_the_testers_probabilities_and_statistics(trained, tmp_path):
    run, test_list = trained
    before = contents(run)
    result = predict(tmp_path / "job", f"schedule.run={run}", f"schedule.images={test_list}")
    assert contents(run) == before  # the run read is left byte for byte as it was
    probs, stats, paths, classes = outputs_of_the_tester(run)

    table = predictions.read_csv(tmp_path / "job" / "predictions.csv")
    assert list(table[0]) == ["path", "true_label", "prediction",
                              *(f"{c}_{i}" for i in range(1, 6) for c in ("label", "prob")), "error"]
    assert [row["path"] for row in table] == paths and len(table) == 30
    lines = [json.loads(line) for line in (tmp_path / "job" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len(probs) == 30  # a line for every image, so the zip below reads them all
    for line, expected in zip(lines, probs):
        top = np.argsort(-expected, kind="stable")[:5]
        np.testing.assert_allclose(line["scores"], expected[top], atol=1e-5)
        assert line["labels"][0] == classes[top[0]] and line["error"] is None
    assert [line["true_label"] for line in lines] == [Path(p).parent.name for p in paths]

    evaluation = json.loads((tmp_path / "job" / "evaluation.json").read_text())
    assert evaluation["step"] == 4 and evaluation["count"] == 30 and result["errors"] == 0
    assert evaluation["accuracy"] == pytest.approx(stats["accuracy"], abs=1e-9)
    assert evaluation["loss"] == pytest.approx(stats["loss"], abs=1e-5)
    assert evaluation["confusion"] == stats["confusion"]
    assert [row["path"] for row in evaluation["worst"]] == [row["path"] for row in stats["worst"]]


@pytest.mark.slow
def test_bad_files_get_error_rows_and_every_other_image_is_classified(trained, tmp_path):
    run, test_list = trained
    folder = tmp_path / "photos"
    for src, name in zip(sorted(test_list.parent.glob("test/*/00000.png")),
                         ["0.png", "album1/1.png", "album0/2.png", "album1/3.png"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / name)
    corrupt = folder / "album1" / "cut.png"
    corrupt.write_bytes((folder / "0.png").read_bytes()[:80])
    (folder / "scan.jpg").write_text("%PDF-1.4 not an image")  # an image's name, not an image
    (folder / "notes.txt").write_text("left out: not an image file by its name")
    before = contents(run)
    result = predict(tmp_path / "job", f"schedule.run={run}", f"schedule.images={folder}")
    assert contents(run) == before
    table = {Path(row["path"]).relative_to(folder).as_posix(): row
             for row in predictions.read_csv(tmp_path / "job" / "predictions.csv")}
    assert sorted(table) == ["0.png", "album0/2.png", "album1/1.png", "album1/3.png", "album1/cut.png", "scan.jpg"]
    assert "true_label" not in table["0.png"]
    errors = {name for name, row in table.items() if row["error"]}
    assert errors == {"album1/cut.png", "scan.jpg"}
    assert "no known image format" in table["scan.jpg"]["error"]
    for name, row in table.items():
        if name not in errors:
            assert row["label_1"] and 0 < float(row["prob_1"]) <= 1
    assert result["images"] == 6 and result["errors"] == 2
    assert not (tmp_path / "job" / "evaluation.json").exists()


@pytest.mark.slow
def test_a_class_folder_tree_gives_true_labels_and_statistics(trained, tmp_path):
    run, test_list = trained
    tree = test_list.parent / "test"
    predict(tmp_path / "job", f"schedule.run={run}", f"schedule.images={tree}", "top_k=2")
    table = predictions.read_csv(tmp_path / "job" / "predictions.csv")
    assert len(table) == 30 and list(table[0])[:5] == ["path", "true_label", "prediction", "label_1", "prob_1"]
    assert "label_3" not in table[0]  # top_k=2
    assert all(row["true_label"] == Path(row["path"]).parent.name for row in table)
    assert json.loads((tmp_path / "job" / "evaluation.json").read_text())["count"] == 30


def test_the_exported_model_gives_the_rows_of_its_run(trained, tmp_path):
    """Exported in this process as a SavedModel and a TFLite model: predict from the SavedModel gives the rows and
    statistics of predict from the run, and the TFLite model the SavedModel's probabilities."""
    import tensorflow as tf

    from worklab import app
    from worklab.config.schedules import ExportSchedule
    from worklab.run.run_config import load_run_config
    from worklab.data.reader import decode, resize

    run, test_list = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    app.run(load_run_config(copy, ExportSchedule(formats=["saved_model", "tflite"])))
    model = next((copy / "export").glob("step-*"))
    assert json.loads((model / "export.json").read_text())["formats"] == ["saved_model", "tflite"]
    predict(tmp_path / "from_run", f"schedule.run={copy}", f"schedule.images={test_list}")
    before = contents(copy)
    predict(tmp_path / "from_model", f"schedule.model={model}", f"schedule.images={test_list}")
    assert contents(copy) == before
    from_run, from_model = (predictions.read_csv(tmp_path / job / "predictions.csv")
                            for job in ("from_run", "from_model"))
    assert len(from_model) == len(from_run) == 30 and [list(r) for r in from_model] == [list(r) for r in from_run]
    for a, b in zip(from_run, from_model):
        assert [a[f"label_{i}"] for i in range(1, 6)] == [b[f"label_{i}"] for i in range(1, 6)]
        np.testing.assert_allclose([float(a[f"prob_{i}"]) for i in range(1, 6)],
                                   [float(b[f"prob_{i}"]) for i in range(1, 6)], atol=2e-6)
    evaluations = [json.loads((tmp_path / job / "evaluation.json").read_text()) for job in ("from_run", "from_model")]
    assert evaluations[0]["accuracy"] == evaluations[1]["accuracy"]
    assert evaluations[1]["model"] == str(model / "saved_model")

    reader = load_run_config(copy, ExportSchedule()).reader
    resized = np.stack([resize(decode(tf.io.read_file(row["path"])), reader).numpy() for row in from_run])
    served = tf.saved_model.load(str(model / "saved_model")).signatures["serving_resized"]
    expected = served(images=tf.constant(resized, tf.float32))["probabilities"].numpy()
    assert expected.shape == (30, 10)
    np.testing.assert_allclose(np.sort(expected, axis=1)[:, ::-1][:, :5],
                               [[float(r[f"prob_{i}"]) for i in range(1, 6)] for r in from_model], atol=2e-6)
    from worklab.serve.litert import TFLiteModel

    assert np.abs(TFLiteModel(model / "model.tflite")(resized) - expected).max() <= 1e-4
    threshold = float(np.median([float(r["prob_1"]) for r in from_model]))  # half the images below it
    summary = predict(tmp_path / "from_tflite", f"schedule.model={model / 'model.tflite'}",
                      f"schedule.images={test_list}", f"schedule.min_score={threshold}")
    from_tflite = predictions.read_csv(tmp_path / "from_tflite" / "predictions.csv")
    unsure = [r["prediction"] == "unknown" for r in from_tflite]
    assert unsure == [float(r["prob_1"]) < threshold for r in from_tflite] and summary["unknown"] == sum(unsure) > 0
    assert [list(r) for r in from_tflite] == [list(r) for r in from_model]  # the same columns, the same rows
    for a, b in zip(from_model, from_tflite):
        assert (a["path"], a["true_label"], a["label_1"]) == (b["path"], b["true_label"], b["label_1"])
        assert b["prediction"] in (b["label_1"], "unknown")
        np.testing.assert_allclose([float(a[f"prob_{i}"]) for i in range(1, 6)],
                                   [float(b[f"prob_{i}"]) for i in range(1, 6)], atol=1e-4)
    evaluation = json.loads((tmp_path / "from_tflite" / "evaluation.json").read_text())
    assert (evaluation["model"], evaluation["format"]) == (str(model / "model.tflite"), "tflite")
    assert contents(copy) == before

    alone = shutil.copytree(model / "saved_model", tmp_path / "alone" / "saved_model")  # no export.json beside it
    predict(tmp_path / "from_alone", f"schedule.model={alone}", f"schedule.images={test_list}")
    rows = predictions.read_csv(tmp_path / "from_alone" / "predictions.csv")
    assert [r["label_1"] for r in rows] == [r["label_1"] for r in from_model]  # names from the model's outputs


@pytest.mark.slow
def test_bad_input_is_refused_with_exit_2_naming_it_and_the_run_is_left_alone(trained, tmp_path):
    run, test_list = trained
    before = contents(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, says in (([f"schedule.run={run}", f"schedule.model={run}"], "not both"),
                       ([], "needs one of schedule.run=RUN"),
                       ([f"schedule.run={run}", f"schedule.images={empty}"], str(empty))):
        images = [] if any(a.startswith("schedule.images") for a in args) else [f"schedule.images={test_list}"]
        result = run_py(["schedule=predict", *images, *args, f"hydra.run.dir={tmp_path / 'job'}"], tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert says in result.stdout + result.stderr
    (tmp_path / "model.pt").write_bytes(b"weights of another framework")
    result = run_py(["schedule=predict", f"schedule.images={test_list}", f"schedule.model={tmp_path / 'model.pt'}",
                     f"hydra.run.dir={tmp_path / 'job3'}"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"schedule.model={tmp_path / 'model.pt'} is a file of an unknown kind (.pt)" in result.stdout
    for args, says in (([f"schedule.model={run}"], f"schedule.model={run} is not a SavedModel"),
                       ([f"schedule.run={tmp_path}"], f"{tmp_path} is not a run folder"),
                       ([f"schedule.run={run}", "schedule.step=3"], "schedule.step=3: no checkpoint of that step")):
        with pytest.raises(UserError, match=says):
            predict(tmp_path / "job2", f"schedule.images={test_list}", *args)
    assert not (tmp_path / "job2" / "predictions.csv").exists()
    assert contents(run) == before
