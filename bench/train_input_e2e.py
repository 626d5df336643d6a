"""End-to-end training speed at 224 px from JPEG files: worklab's Trainer on its reader against Keras fit.

What it measures (training images per second, batches of 32 at 224 x 224, median of interleaved
rounds, and per core of the machine) on a network whose step is cheap enough that the input
matters on this CPU: MobileNetV3Small (Keras Applications, fresh weights, so nothing is
downloaded) with its body frozen and a fresh dense head for the photo set's classes.
  * worklab: the Trainer as run.py builds it (worklab.run.parts.Parts, from conf/ composed with
    network=applications network.arch=MobileNetV3Small network.freeze=conv_1_bn reader=folder
    network.weight_decay=0), fed by Reader.train from the JPEG files with the default
    augmentations (zoom crop, shift, brightness, contrast, flip; reader.cache=false).
    network.freeze=conv_1_bn (the body's last layer with weights) is worklab's way to freeze a
    body: one lr_mult rule of mult 0 over every variable up to that layer, which leaves them out
    of the gradient and runs the body's batch norm in inference mode, so only head/kernel and
    head/bias train. weight_decay=0 (worklab's default is 1e-4, an L2 term on the head's kernel
    here) makes it minimise the same loss as fit.
  * keras fit: keras.applications.MobileNetV3Small(weights=None, include_top=False, pooling="avg")
    with trainable=False, called with training=False as Keras' transfer-learning guide does, then
    a Dense head; compile(SGD(0.1, momentum=0.9), SparseCategoricalCrossentropy(from_logits=True)),
    the other compile settings at their defaults; fit on keras.utils.image_dataset_from_directory
    (labels from the class folders, image_size=(224, 224), batch_size=32), .repeat(), then
    input_speed.py's Keras augmentation layers (RandomFlip, RandomZoom, RandomTranslation,
    RandomContrast) in a parallel map, prefetched.
  * worklab, input in memory: the same Trainer built the same way, its reader replaced by one
    batch of that reader's output held in memory and repeated: the step alone, its ceiling here.
Both networks have the same parameters (the body's and a dense head for the same classes: the
class folders, sorted by name on both sides) and train the same two variables, the head's;
worklab's `preprocess` layer is `raw` for MobileNetV3, which scales its own input in both.

The photos: --images DIR (a folder of class sub-folders of images), or else input_speed.py's
built-in small set, 240 JPEGs of 500x375 in two class folders (written once under bench/.data/).

Each contender runs in its own child process (bench/common.py Worker), frozen between its
rounds, so one contender's tf.data threads neither take CPU nor fill buffers while another is
timed. A round runs training steps until a time budget has passed (at least two steps); its
speed is the images of the steps after the first over the time from the end of the first step
to the end of the last. That leaves out what a call pays before its first step: fit makes a new
iterator over its dataset in every call (its pipeline starts again from empty buffers), where
Trainer.train carries its iterator on across calls, and a real run calls either once. fit's
last batch of each pass over the files holds the remainder (240 = 7 x 32 + 16) and counts as
what it holds; worklab's batches are all full (its stream runs on across passes). The files are
read through the operating system's page cache after the first pass.

Run from the repository root:
    python bench/train_input_e2e.py                     # about 4 minutes
    python bench/train_input_e2e.py --images ~/photos   # class sub-folders of your own images
    python bench/train_input_e2e.py --quick             # about 2 minutes

Reading the ratios: "vs keras fit" above 1.0x means that contender trains more images per
second than fit on image_dataset_from_directory. "of the step" is a contender's speed over
worklab's step alone on in-memory input: the fraction of the step's speed its input lets
through (1.0 when the input keeps up; keras fit's is against worklab's step, which
bench/train_speed.py compares with fit's own). "paired" is the median of the per-round ratios,
less sensitive to a burst of load than the ratio of the medians.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)
from input_speed import keras_augmentation, write_photos  # noqa: E402
from worklab.data.imagelist import IMAGE_SUFFIXES  # noqa: E402  (no TensorFlow)

SEED = 0
SIZE = 224
BATCH = 32
ARCH = "MobileNetV3Small"
FREEZE = "conv_1_bn"  # the last layer with weights of MobileNetV3Small's body (include_top=False)
LR, MOMENTUM = 0.1, 0.9  # worklab's optimizer=momentum defaults, set on both sides
WARMUP_SECONDS = 3.0  # after the first (tracing) steps: tf.data threads and buffers settle
WORKLAB_OVERRIDES = ["network=applications", f"network.arch={ARCH}", "network.weights=null",
                     f"network.freeze={FREEZE}", "network.weight_decay=0", "reader=folder",
                     f"reader.image_size={SIZE}", f"reader.batch_size={BATCH}", "optimizer=momentum",
                     f"optimizer.lr={LR}", f"optimizer.momentum={MOMENTUM}", f"seed={SEED}"]
WORKERS = [  # in the order of a round
    ("worklab", dict(kind="worklab", memory=False)),
    ("keras fit", dict(kind="keras fit")),
    ("worklab, input in memory", dict(kind="worklab", memory=True)),
]


# Worker side -------------------------------------------------------------------------------------

def setup(spec):
    started = time.perf_counter()
    folder = spec["images"]
    info, run = worklab_trainer(folder, spec["memory"]) if spec["kind"] == "worklab" else keras_fit(folder)
    warm = time.perf_counter()
    run(0.0)  # two steps: the first traces the step
    run(WARMUP_SECONDS)
    info["warmup_seconds"] = time.perf_counter() - warm

    def train(budget):
        images, seconds, steps, loss = run(budget)
        return {"images_per_second": images / seconds, "images": images, "seconds": seconds, "steps": steps,
                "loss": loss}

    info["setup_seconds"] = time.perf_counter() - started
    return info, {"train": train}


class StepClock:
    """The time from the end of a round's first step to the end of its last, and the images in between."""

    def __init__(self, budget):
        self.deadline = time.perf_counter() + budget
        self.steps, self.images, self.first, self.last = 0, 0, None, None

    def step_ended(self, images):
        """Count a step of `images` that has just ended; True once the round is over (two steps at least)."""
        self.last = time.perf_counter()
        self.steps += 1
        if self.steps == 1:
            self.first = self.last
        else:
            self.images += images
        return self.steps >= 2 and self.last >= self.deadline

    def result(self):
        return self.images, self.last - self.first, self.steps


class InMemory:
    """Stands in for Parts.reader: one batch of the real reader's output, held in memory and repeated."""

    def __init__(self, reader, images):
        import tensorflow as tf

        self.tf = tf
        self.batch = next(iter(reader.train(images)))

    def train(self, images, start=0, pipeline=(0, 1), batch=None):
        return self.tf.data.Dataset.from_tensors(self.batch).repeat()


def worklab_trainer(folder, memory):
    """The Trainer of `python run.py` with WORKLAB_OVERRIDES on `folder`, built by worklab.run.parts.Parts."""
    from hydra import compose, initialize_config_dir

    from worklab import distribute, hydra_edge, runtime
    from worklab.model import batchnorm
    from worklab.run import runfolder

    run_dir = common.DATA / "runs" / f"train_input_e2e-{'memory' if memory else 'files'}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh start every time
    overrides = [*WORKLAB_OVERRIDES, f"reader.train={folder}", f"reader.test={folder}", f"run_dir={run_dir}"]
    with initialize_config_dir(config_dir=str(common.REPO / "conf"), version_base="1.3"):
        cfg = hydra_edge.to_plain(compose("config", overrides=overrides))
    runfolder.lock(cfg.run_dir)
    tf = runtime.configure(cfg.runtime, cfg.seed)
    from worklab.run.parts import Parts

    strategy = distribute.build(cfg.runtime, cfg.reader.batch_size)
    with strategy.scope():
        parts = Parts(cfg, None, strategy)
        parts.inputs.check_inputs(train=True, test=False)
        parts.restore()
        if memory:
            parts.reader = InMemory(parts.reader, parts.inputs.train_images)
        trainer = parts.trainer
    trained = parts.optimizers.variables
    info = {"tensorflow": tf.__version__, "classes": len(parts.inputs.classes),
            "images": len(parts.inputs.train_images), "params": parts.model.count_params(),
            "trained": ", ".join(v.path for v in trained),
            "trained_params": sum(int(v.numpy().size) for v in trained),
            "frozen_bn": sum(1 for layer in batchnorm.batch_norm_layers(parts.model) if not layer.trainable)}

    def run(budget):
        clock = StepClock(budget)
        scalars = trainer.train(10 ** 9, on_step=lambda done: clock.step_ended(BATCH))
        return (*clock.result(), scalars["loss"])

    return info, run


def keras_fit(folder):
    """Model.fit on image_dataset_from_directory with Keras' augmentation layers, the body frozen."""
    from worklab import runtime
    from worklab.config.runtime import RuntimeConfig

    tf = runtime.configure(RuntimeConfig(), SEED)  # the same threads and oneDNN setting as worklab's workers
    import keras

    keras.utils.set_random_seed(SEED)
    files = keras.utils.image_dataset_from_directory(folder, image_size=(SIZE, SIZE), batch_size=BATCH, seed=SEED)
    classes = len(files.class_names)
    augment = keras_augmentation()
    dataset = (files.repeat().map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    base = getattr(keras.applications, ARCH)(input_shape=(SIZE, SIZE, 3), weights=None, include_top=False,
                                             pooling="avg")
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(classes)(base(inputs, training=False)))
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Every fit call starts a new pass over the files: its batches hold 32 images, the last the remainder.
    count = len(files.file_paths)
    sizes = [BATCH] * (count // BATCH) + ([count % BATCH] if count % BATCH else [])

    class Timed(keras.callbacks.Callback):
        """Stops fit at the first step (after the second) that ends past the budget, as on_step does for the
        Trainer; Keras with TensorFlow calls batch-end callbacks synchronously anyway."""

        async_safe = True

        def start(self, budget):
            self.clock = StepClock(budget)

        def on_train_batch_end(self, batch, logs=None):
            if self.clock.step_ended(sizes[self.clock.steps % len(sizes)]):
                self.model.stop_training = True

    timed = Timed()

    def run(budget):
        timed.start(budget)
        history = model.fit(dataset, epochs=1, steps_per_epoch=10 ** 9, verbose=0, shuffle=False, callbacks=[timed])
        return (*timed.clock.result(), history.history["loss"][-1])

    info = {"tensorflow": tf.__version__, "classes": classes, "images": count, "params": model.count_params(),
            "trained": ", ".join(v.path for v in model.trainable_variables),
            "trained_params": sum(int(v.numpy().size) for v in model.trainable_variables),
            "jit_compile": bool(model.jit_compile)}
    return info, run


# Driver side -------------------------------------------------------------------------------------

def main():
    args = common.arguments(__doc__, lambda parser: parser.add_argument(
        "--images", default=None, help="a folder of class sub-folders of images (default: a built-in photo set)"))
    if args.worker:
        return common.serve(setup, args.worker)
    budget = 3.0 if args.quick else 6.0
    rounds = args.rounds or (3 if args.quick else 7)
    folder = Path(args.images).expanduser().resolve() if args.images else write_photos("small")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    images = sum(1 for name in classes for path in (folder / name).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    if len(classes) < 2 or not images:
        sys.exit(f"{folder} needs two or more class sub-folders of images ({', '.join(IMAGE_SUFFIXES)})")
    common.print_header("train_input_e2e: worklab Trainer on its reader vs keras fit on "
                        "image_dataset_from_directory, end to end at 224 px", args, {
        "images": f"{images} under {folder}" + ("" if args.images else " (input_speed's small set)"),
        "classes": f"{len(classes)} ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})",
        "network": f"{ARCH}, fresh weights, body frozen, dense head", "size": SIZE, "batch": BATCH,
        "optimizer": f"SGD momentum {MOMENTUM}, lr {LR}, no weight decay", "rounds": rounds,
        "round": f"steps until {budget} s have passed (at least 2), timed from the end of the first"})
    results, infos = common.worker_rounds(os.path.abspath(__file__), [(n, {**s, "images": str(folder)})
                                                                      for n, s in WORKERS], "train", budget, rounds,
                                          label="training img/s")
    med = {name: common.median(values) for name, values in results.items()}

    cores = os.cpu_count()
    step = "worklab, input in memory"
    rows = [[name, med[name], med[name] / cores, common.spread(results[name]),
             common.ratio(med[name], med["keras fit"]), common.paired(results, name, "keras fit"),
             common.paired(results, name, step)]
            for name, _ in WORKERS]
    common.table(["contender", "img/s (median)", f"per core ({cores})", "rounds min-max", "vs keras fit",
                  "vs keras fit (paired)", "of the step (paired)"], rows,
                 title=f"training end to end at {SIZE} px, {ARCH} body frozen, median of {rounds} rounds")
    print(common.others_summary(results))
    checks = []
    for key in ("classes", "params", "trained_params"):
        values = {info[key] for info in infos.values()}
        checks.append(f"{key} {values.pop()}" if len(values) == 1 else
                      f"{key} DIFFER: " + ", ".join(f"{name} {info[key]}" for name, info in infos.items()))
    print("every contender: " + ", ".join(checks))
    common.print_workers(infos)


if __name__ == "__main__":
    main()
