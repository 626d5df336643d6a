"""Predict speed: schedule=predict from image files against keras Model.predict on images in memory.

What it measures (images per second, median of interleaved rounds), all on the same network
(ResNet-18 width 1, 64 px inputs, 10 classes, seeded weights, inference mode, batch 32) and
the same 640 images (the demo set's drawing at 64 px, PNG files under bench/.data):
  * "predict files": what schedule=predict does per image after loading the model: every file's
    header checked with PIL in threads (worklab.serve.predictions.check), read by tf.data in parallel
    (tf.io.read_file, batched, prefetched) and classified by worklab.serve.export.Classifier.from_bytes
    (decode, resize, the network with its preprocessing layer, softmax, top 5), the outputs fetched as numpy;
    worklab.schedules.predict.classify_files. Writing the rows is not included.
  * "predict files, rows written": all that schedule=predict does per image: "predict files" and
    each image's row written to predictions.csv and .jsonl (bench/.data/predict_speed/rows) and its
    statistics gathered (the demo set has labels); worklab.schedules.predict.write_predictions.
  * "predict files, no check": "predict files" without the header check, to show what the check costs.
  * "keras predict (memory)": Model.predict(x, batch_size=32) on the images already decoded,
    resized (with worklab.data.reader's functions) in a float32 array of 0-255 pixels: the target
    (issue 22) is "predict files" at >= 1.0x of this.
  * "from_bytes (memory)": Classifier.from_bytes called directly on the file bytes already read
    into memory, in batches of 32: the Classifier without files, tf.data or the check.
  * "SavedModel signature (memory)": the exported SavedModel (tf.saved_model.save of the same
    Classifier with its signatures, as schedule=export writes it, then tf.saved_model.load)
    called through signatures["serving_default"] on the same in-memory byte batches.
A check at the end compares every contender's probabilities for the first 32 images.

Every contender runs in its own child process (bench/common.py Worker), frozen (SIGSTOP)
between its rounds, so one's tf.data threads take no CPU while another is timed. A round
runs whole passes over the 640 images until the time budget has passed (at least one).

Run from the repository root:
    python bench/predict_speed.py            # about 3 minutes
    python bench/predict_speed.py --quick    # about 1 minute

Reading the ratios: "vs keras" above 1.0x is faster than Model.predict on preprocessed images
in memory; "predict files" pays for reading, checking and decoding the files on the same 2
cores, and is to match it all the same (>= 1.0x). "paired" is the median of the per-round ratios.
The second table is each contender's CPU time per image (its process, all threads): on a
machine whose rounds swing with load from outside, the steadier measure of the work each
does; there, below 1.0x is less CPU than keras.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)

SEED = 0
IMAGE_SIZE = 64
BATCH = 32
TOP_K = 5
DEMO = dict(image_size=IMAGE_SIZE, train_per_class=1, test_per_class=64)  # 640 test PNGs at 64 px
KERAS = "keras predict (memory)"
WRITTEN = "predict files, rows written"
WORKERS = [  # (name, spec), in the order of a round
    ("predict files", dict(kind="files", check=True)),
    (WRITTEN, dict(kind="write")),
    (KERAS, dict(kind="keras")),
    ("predict files, no check", dict(kind="files", check=False)),
    ("from_bytes (memory)", dict(kind="from_bytes")),
    ("SavedModel signature (memory)", dict(kind="signature")),
]
QUICK = ("predict files", WRITTEN, KERAS)


# Worker side -------------------------------------------------------------------------------------

def setup(spec):
    """Build one contender in this process; return its info and command handlers."""
    started = time.perf_counter()
    from worklab import runtime
    from worklab.config.network import NetworkConfig
    from worklab.config.reader import ReaderConfig
    from worklab.config.runtime import RuntimeConfig

    tf = runtime.configure(RuntimeConfig(), SEED)
    import numpy as np

    from worklab.data import reader
    from worklab.model.preprocessing import Preprocess, settings
    from worklab.model.resnet import build_resnet
    from worklab.serve.export import Classifier
    from worklab.serve.predictions import find_images

    _, test_json = common.demo_set(**DEMO, seed=SEED)
    source = find_images(str(test_json))
    paths, classes = source.paths, sorted(set(source.labels))
    r = ReaderConfig(image_size=IMAGE_SIZE)
    preprocess = Preprocess("mean_std", **settings("mean_std", r.mean, r.std))
    model = build_resnet(NetworkConfig(depth=18, width=1.0), len(classes), IMAGE_SIZE, preprocess)  # seeded
    classifier = Classifier(model, classes, r, TOP_K)
    files = [open(p, "rb").read() for p in paths]
    batches = [tf.constant(files[i:i + BATCH]) for i in range(0, len(files), BATCH)]
    info = {"images": len(paths), "classes": len(classes), "params": model.count_params()}

    def classify(images):
        return {key: value.numpy() for key, value in classifier.from_bytes(images).items()}

    if spec["kind"] == "files":
        from worklab.schedules.predict import classify_files
        from worklab.serve.predictions import check

        def one_pass():
            first = []
            for index, output, error in classify_files(classify, paths, BATCH, check_files=check if spec["check"]
                                                       else lambda chunk: [None] * len(chunk)):
                assert error is None, f"{paths[index]} failed: {error}"
                if index < BATCH:
                    first.append(output["probabilities"])
            return np.stack(first)
    elif spec["kind"] == "write":
        from worklab.schedules.predict import ClassNames, Evaluation, write_predictions
        from worklab.serve.predictions import read_csv

        out = common.DATA / "predict_speed" / "rows"  # each pass replaces the files

        def one_pass():
            names = ClassNames(classes)
            evaluation = Evaluation(source, names, TOP_K, 16)
            files = write_predictions(classify, source, names, out, BATCH, evaluation=evaluation)
            assert files.errors == 0 and evaluation.result()["count"] == len(paths), "an image failed"
            rows = read_csv(out / "predictions.csv")[:BATCH]
            return np.array([[float(row[f"prob_{i}"]) for i in range(1, TOP_K + 1)] for row in rows])
    elif spec["kind"] == "keras":
        x = np.stack([reader.resize(reader.decode(tf.constant(f)), r).numpy() for f in files])
        info["array_mb"] = x.nbytes / 1e6

        def one_pass():
            probabilities = tf.nn.softmax(model.predict(x, batch_size=BATCH, verbose=0)).numpy()
            return probabilities[:BATCH]
    else:
        if spec["kind"] == "signature":
            folder = common.DATA / "predict_speed" / "saved_model"
            shutil.rmtree(folder, ignore_errors=True)
            saving = time.perf_counter()
            tf.saved_model.save(classifier, str(folder), signatures=classifier.signatures())
            call = tf.saved_model.load(str(folder)).signatures["serving_default"]
            info["save_and_load_seconds"] = time.perf_counter() - saving
            run = lambda batch: call(images=batch)  # noqa: E731
        else:
            run = classifier.from_bytes

        def one_pass():
            first = None
            for batch in batches:
                outputs = {key: value.numpy() for key, value in run(batch).items()}
                first = outputs["probabilities"] if first is None else first
            return first

    def passes(budget):
        deadline = time.perf_counter() + budget
        count = 0
        while True:
            one_pass()
            count += 1
            if time.perf_counter() >= deadline:
                return count

    warm = time.perf_counter()
    first_probabilities = one_pass()
    passes(1.0)
    info["warmup_seconds"] = time.perf_counter() - warm

    def measure(budget):
        start, cpu = time.perf_counter(), time.process_time()
        count = passes(budget)
        seconds = time.perf_counter() - start
        return {"images_per_second": count * len(paths) / seconds, "passes": count, "seconds": seconds,
                "cpu_ms_per_image": (time.process_time() - cpu) * 1e3 / (count * len(paths))}

    info["setup_seconds"] = time.perf_counter() - started
    return info, {"measure": measure, "probabilities": lambda: {"values": first_probabilities.tolist()}}


# Driver side -------------------------------------------------------------------------------------

def main():
    args = common.arguments(__doc__)
    if args.worker:
        return common.serve(setup, args.worker)
    budget = 1.5 if args.quick else 3.0
    rounds = args.rounds or (3 if args.quick else 7)
    chosen = [(n, s) for n, s in WORKERS if not args.quick or n in QUICK]
    common.print_header("predict_speed: schedule=predict from files vs keras Model.predict in memory", args, {
        "network": "ResNet-18 width 1, inference mode", "image size": IMAGE_SIZE, "batch": BATCH, "top k": TOP_K,
        "data": f"demo drawing, {DEMO['test_per_class'] * 10} PNG files at {DEMO['image_size']} px",
        "rounds": rounds, "round": f"passes over all images until {budget} s have passed (at least 1)"})
    test_json = common.demo_set(**DEMO, seed=SEED)[1]  # written once here, before the workers read it
    print(f"demo set: {test_json.parent}")

    print("\nstarting workers (set-up and warm-up are not timed):", flush=True)
    script = os.path.abspath(__file__)
    workers = common.launch([lambda n=n, s=s: common.Worker(n, script, s) for n, s in chosen])
    try:
        cpu = {w.name: [] for w in workers}

        def measure(w):
            result = w.call("measure", budget=budget)
            cpu[w.name].append(result["cpu_ms_per_image"])
            return result["images_per_second"]

        contenders = [(w.name, lambda w=w: measure(w)) for w in workers]
        print(f"\n{rounds} interleaved rounds (img/s):", flush=True)
        results = common.interleave(contenders, rounds, own_pids=lambda: [w.proc.pid for w in workers])
        probabilities = {w.name: w.call("probabilities")["values"] for w in workers}
        infos = {w.name: w.info for w in workers}
    finally:
        common.close_all(workers)
    report(results, cpu, probabilities, infos, [n for n, _ in chosen], rounds)


def report(results, cpu, probabilities, infos, names, rounds):
    import numpy as np

    med = {name: common.median(values) for name, values in results.items()}

    notes = {"predict files": "check + tf.data from files + from_bytes (target >= 1.0x keras)",
             WRITTEN: "predict files + rows to csv/jsonl + statistics",
             "predict files, no check": "tf.data from files + from_bytes",
             KERAS: "preprocessed float32 array in memory",
             "from_bytes (memory)": "Classifier.from_bytes on bytes in memory",
             "SavedModel signature (memory)": "serving_default on bytes in memory"}
    common.table(["contender", "img/s (median)", "rounds min-max", "vs keras", "paired", "note"],
                 [[n, med[n], common.spread(results[n]), common.ratio(med[n], med[KERAS]),
                   common.paired(results, n, KERAS), notes[n]]
                  for n in names],
                 title=f"predict throughput at {IMAGE_SIZE} px, median of {rounds} rounds")
    cpu_med = {name: common.median(values) for name, values in cpu.items()}
    common.table(["contender", "CPU ms per image (median)", "rounds min-max", "vs keras", "paired"],
                 [[n, cpu_med[n], common.spread(cpu[n]), common.ratio(cpu_med[n], cpu_med[KERAS]),
                   common.paired(cpu, n, KERAS)] for n in names],
                 title="CPU time of each contender's process per image (all its threads), the same rounds")
    if "predict files, no check" in med:
        print(f"the header check costs the file path {1 - med['predict files'] / med['predict files, no check']:.0%} "
              "of its speed (predict files vs no check)")
    print(common.others_summary(results))
    reference = np.asarray(probabilities[KERAS])
    top = np.sort(reference, axis=1)[:, ::-1][:, :TOP_K]  # what predictions.csv holds, to 6 decimals
    for name in names:
        expected, what = (top, f"top {TOP_K} as written") if name == WRITTEN else (reference, "probabilities")
        difference = float(np.max(np.abs(np.asarray(probabilities[name]) - expected)))
        print(f"{what} of the first {BATCH} images, {name} vs {KERAS}: max abs difference {difference:.2e}")
    common.print_workers(infos)


if __name__ == "__main__":
    main()
