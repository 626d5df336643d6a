"""Input speed: training from image files on disk against the same images cached in memory.

What it measures (images per second, median of interleaved rounds):
  * training with worklab's Reader and Trainer on the built-in demo set (1000 training images
    drawn at 48 px as PNG files, written under bench/.data), with reader.cache=false (every
    example is read from its file, decoded and resized on the fly) against reader.cache=true
    (decoded, resized images held in memory, gathered per example). Everything else is the
    demo run's defaults: reader.image_size=32, batch 32, the default augmentations, ResNet-18
    width 1, momentum SGD at lr 0.1, weight decay 1e-4, no lr_mult rules, oneDNN on, float32.
  * the raw input pipeline alone: the same Reader.train datasets iterated without training.
The files are read through the operating system's page cache: after the first pass (and the
set-up warm-up) they are in memory anyway, so "disk" measures open/read/decode/resize per
example, not the storage device.

Each contender runs in its own child process (bench/common.py Worker), frozen between its
rounds, so one contender's tf.data threads neither take CPU nor fill buffers while another is
timed. A round runs steps (or batches) until a time budget has passed.

Run from the repository root:
    python bench/input_speed.py            # about 4 minutes
    python bench/input_speed.py --quick    # about 1 minute

Reading the ratios: "disk/memory" for training is the target (>= 0.9x): below it, reading the
files costs more than a tenth of the training speed. For the pipeline alone, the ratio shows
how much slower the file path is when nothing else runs; pipeline img/s far above training
img/s means the input is not the bottleneck (on 2 cores it still competes for the same CPU).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)

SEED = 0
IMAGE_SIZE = 32  # reader.image_size of the demo run
DEMO = dict(image_size=48, train_per_class=100, test_per_class=30)  # the demo set's defaults
BATCH = 32
WORKERS = [
    ("train disk", dict(cache=False, train=True)),
    ("train memory", dict(cache=True, train=True)),
    ("pipeline disk", dict(cache=False, train=False)),
    ("pipeline memory", dict(cache=True, train=False)),
]


# Worker side -------------------------------------------------------------------------------------

def setup(spec):
    started = time.perf_counter()
    from worklab import runtime
    from worklab.config import NetworkConfig, OptimizerConfig, ReaderConfig, RuntimeConfig

    tf = runtime.configure(RuntimeConfig(), SEED)
    from worklab.data.imagelist import build_classes, check_files, read_entries, to_image_list
    from worklab.data.reader import Reader

    train_json, _ = common.demo_set(**DEMO, seed=SEED)
    entries = read_entries(str(train_json), "json")  # as worklab.run.parts does for reader=demo
    images = check_files(to_image_list(entries, build_classes(entries, str(train_json)), str(train_json)), False)
    reader = Reader(ReaderConfig(source="json", image_size=IMAGE_SIZE, batch_size=BATCH, cache=spec["cache"]), SEED)
    opened = time.perf_counter()
    dataset = reader.train(images, start=0)
    info = {"images": len(images), "classes": len(set(images.labels)), "TF_ENABLE_ONEDNN_OPTS":
            os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "reader_train_seconds": time.perf_counter() - opened}

    if spec["train"]:
        from worklab.model.resnet import build_resnet
        from worklab.train.trainer import OptimizerGroups, Trainer
        from worklab.model.rules import lr_multipliers

        network, optimizer = NetworkConfig(), OptimizerConfig()
        model = build_resnet(network, len(set(images.labels)), IMAGE_SIZE)
        plan = lr_multipliers([], [v.path for v in model.variables])
        lr = tf.Variable(optimizer.lr, dtype=tf.float32, trainable=False, name="lr")
        trainer = Trainer(model, OptimizerGroups(optimizer, model, plan, lr), dataset,
                          tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64), lr,
                          network.weight_decay, tf.distribute.get_strategy())

        def run(budget):
            deadline = time.perf_counter() + budget
            return trainer.train(10 ** 9, on_step=lambda done: time.perf_counter() >= deadline)["steps"]

        def finite():
            return int(trainer.bad_step.numpy()) < 0
    else:
        iterator = iter(dataset)

        def run(budget):
            deadline = time.perf_counter() + budget
            batches = 0
            while True:
                next(iterator)
                batches += 1
                if time.perf_counter() >= deadline:
                    return batches

        def finite():
            return True

    warm = time.perf_counter()
    run(0.0)
    run(2.0)
    info["warmup_seconds"] = time.perf_counter() - warm

    def measure(budget):
        start = time.perf_counter()
        batches = run(budget)
        seconds = time.perf_counter() - start
        return {"images_per_second": batches * BATCH / seconds, "batches": batches, "seconds": seconds}

    info["setup_seconds"] = time.perf_counter() - started
    return info, {"measure": measure, "check": lambda: {"finite": finite()}}


# Driver side -------------------------------------------------------------------------------------

def main():
    args = common.arguments(__doc__)
    if args.worker:
        return common.serve(setup, args.worker)
    budget = 1.5 if args.quick else 4.0
    rounds = args.rounds or (3 if args.quick else 9)
    common.print_header("input_speed: images from files vs cached in memory", args, {
        "data": f"demo set, {DEMO['train_per_class'] * 10} training PNGs at {DEMO['image_size']} px",
        "reader.image_size": IMAGE_SIZE, "batch": BATCH, "augment": "defaults",
        "network": "ResNet-18 width 1 (training rows)", "rounds": rounds,
        "round": f"steps/batches until {budget} s have passed (at least 1)"})
    train_json, _ = common.demo_set(**DEMO, seed=SEED)  # written once here, before the workers read it
    print(f"demo set: {train_json.parent}")

    print("\nstarting workers (set-up and warm-up are not timed):", flush=True)
    script = os.path.abspath(__file__)
    workers = common.launch([lambda n=n, s=s: common.Worker(n, script, s) for n, s in WORKERS])
    try:
        contenders = [(w.name, lambda w=w: w.call("measure", budget=budget)["images_per_second"]) for w in workers]
        print(f"\n{rounds} interleaved rounds (img/s):", flush=True)
        results = common.interleave(contenders, rounds, own_pids=lambda: [w.proc.pid for w in workers])
        checks = {w.name: w.call("check")["finite"] for w in workers}
        infos = {w.name: w.info for w in workers}
    finally:
        common.close_all(workers)

    med = {name: common.median(values) for name, values in results.items()}

    def paired(a, b):
        return f"{common.median([x / y for x, y in zip(results[a], results[b])]):.2f}x"

    rows = []
    for what in ("train", "pipeline"):
        disk, memory = f"{what} disk", f"{what} memory"
        rows.append([what, med[disk], med[memory], common.spread(results[disk]), common.spread(results[memory]),
                     common.ratio(med[disk], med[memory]), paired(disk, memory)])
    common.table(["what", "disk img/s", "memory img/s", "disk rounds min-max", "memory rounds min-max",
                  "disk/memory", "paired"], rows,
                 title=f"reader.cache=false (files) vs cache=true (memory), median of {rounds} rounds; "
                       "target train disk/memory >= 0.9x")
    print(common.others_summary(results))
    predicted = 1 / (1 / med["train memory"] + 1 / med["pipeline disk"] - 1 / med["pipeline memory"])
    print(f"if reading files only added its pipeline CPU time to each image's training time: disk/memory "
          f"= {predicted / med['train memory']:.2f}x predicted from the pipeline rows")
    for cache in ("disk", "memory"):
        print(f"{cache}: pipeline alone delivers {med[f'pipeline {cache}'] / med[f'train {cache}']:.1f}x "
              f"the images training consumes")
    bad = [name for name, ok in checks.items() if not ok]
    print("losses finite in both training contenders" if not bad else f"NON-FINITE loss in: {', '.join(bad)}")
    common.print_workers(infos)


if __name__ == "__main__":
    main()
