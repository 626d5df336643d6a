"""Training speed: worklab's Trainer against keras Model.fit, runtime settings, lr_mult, and FLOP/s.

What it measures (images per second of training, median of interleaved rounds):
  * worklab's Trainer (with lr_mult rules: stem frozen at mult 0, stage1 at mult 0.1) against
    keras Model.fit (compile with SGD momentum and sparse categorical cross-entropy from logits,
    all other compile settings default, so no XLA on CPU and one step per execution), on the
    same network (ResNet-18, width 1, 64 px inputs, 10 classes, batch 32) and the same data: a
    tf.data.Dataset of 512 seeded random images and labels held in memory, batched, .repeat(),
    prefetched. Both use SGD momentum 0.9 at lr 0.01 and no weight decay, so both minimise the
    same loss; worklab's default weight decay (network.weight_decay=1e-4, an L2 term added to
    the loss) is measured on its own row ("worklab decay").
  * every runtime setting worklab exposes in RuntimeConfig that changes speed on CPU: oneDNN
    on/off (TF_ENABLE_ONEDNN_OPTS, read when TensorFlow is imported), XLA on/off
    (Trainer(xla=True)), precision float32/mixed_bfloat16 (the Keras global policy set before
    the model is built). Each is applied through worklab.runtime.configure, as run.py does.
    Model.fit is also run with oneDNN off and with compile(jit_compile=True), for reference.
  * the lr_mult effect: the same worklab run with those rules against one with no rules.
  * this machine's float32 matmul rate (tf.linalg.matmul of 2048x2048 in a tf.function), the
    network's FLOPs per image, and the training FLOP/s achieved as a fraction of the matmul rate.
    Forward FLOPs are counted twice: by the TF1 profiler (float_operation over the graph of a
    concrete function, batch 1) and analytically (2 x multiply-adds of every Conv2D and Dense).
    Training FLOPs per image are taken as 3 x forward (forward, plus gradients with respect to
    inputs and weights); this is nominal: it is not reduced for the frozen stem.

Every contender runs in its own child process (bench/common.py Worker): the oneDNN flag and the
precision policy are per process. Rounds are interleaved (A, B, C, ..., A, B, C, ...); a worker
is frozen (SIGSTOP) between its rounds, so it takes no CPU while another is timed.

Run from the repository root:
    python bench/train_speed.py                  # about 5 minutes
    python bench/train_speed.py --quick          # about 1 minute: fewer contenders and rounds
    python bench/train_speed.py --xla-detail     # adds the XLA diagnostic (about a minute more)

Each round runs a contender's steps until 1 s has passed (at least one step: an XLA step
takes longer) and reports steps x 32 / seconds, timed around the whole Trainer.train or
Model.fit call. --xla-detail adds a diagnostic contender: worklab's step with the optimizer
update outside its tf.cond (a bench-only subclass), to show what the cond costs under XLA.

Reading the ratios: "worklab/fit" above 1.0x means worklab trains faster than Model.fit under
the same runtime settings (the target is >= 1.0x). "vs default" compares a runtime setting with
the default (oneDNN on, XLA off, float32): above 1.0x is faster. "rules/no rules" above 1.0x
means the frozen stem paid for itself. "fraction of matmul" is how much of the machine's dense
float32 matmul rate the training step achieves. The "paired" column is the median of the
per-round ratios, which is less sensitive to a burst of load than the ratio of the medians.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)

SEED = 0
IMAGE_SIZE = 64
BATCH = 32
CLASSES = 10
EXAMPLES = 512  # random images held in memory
RULES = (("^stem/", 0.0), ("^stage1/", 0.1))
MATMUL_N = 2048
WARMUP_SECONDS = 0.5  # after the first (tracing) step

DEFAULT = dict(onednn=True, xla=False, precision="float32")
WORKERS = [  # (name, spec): one child process each, in the order of a round (compared pairs adjacent)
    ("worklab", dict(kind="worklab", rules=True, matmul=True, flops=True, **DEFAULT)),
    ("fit", dict(kind="fit", rules=False, **DEFAULT)),
    ("worklab no rules", dict(kind="worklab", rules=False, **DEFAULT)),
    ("worklab decay", dict(kind="worklab", rules=True, decay=True, **DEFAULT)),
    ("worklab bf16", dict(kind="worklab", rules=True, **dict(DEFAULT, precision="mixed_bfloat16"))),
    ("worklab oneDNN off", dict(kind="worklab", rules=True, matmul=True, **dict(DEFAULT, onednn=False))),
    ("fit oneDNN off", dict(kind="fit", rules=False, **dict(DEFAULT, onednn=False))),
    ("worklab XLA", dict(kind="worklab", rules=True, **dict(DEFAULT, xla=True))),
    ("fit XLA", dict(kind="fit", rules=False, **dict(DEFAULT, xla=True))),
]
QUICK = ("worklab", "fit", "worklab no rules", "worklab bf16")
# --xla-detail: worklab's step with the optimizer update outside tf.cond (a bench-only subclass
# overriding the private Trainer._replica_step_fn), to show what the cond costs under XLA.
XLA_DETAIL = ("worklab XLA no cond", dict(kind="worklab", rules=True, nocond=True, **dict(DEFAULT, xla=True)))
MATMUL_AFTER = {"worklab bf16": ("worklab", "oneDNN on"), "fit oneDNN off": ("worklab oneDNN off", "oneDNN off")}


# Worker side -------------------------------------------------------------------------------------

def setup(spec):
    """Build one contender in this process; return its info and command handlers."""
    started = time.perf_counter()
    from worklab import runtime
    from worklab.config.network import LrRule, NetworkConfig
    from worklab.config.runtime import RuntimeConfig
    from worklab.config.training import OptimizerConfig

    tf = runtime.configure(RuntimeConfig(onednn=spec["onednn"], xla=spec["xla"], precision=spec["precision"]),
                           SEED)
    import keras
    import numpy as np

    from worklab.model.resnet import build_resnet

    Budget = budget_callback_class()

    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((EXAMPLES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    labels = rng.integers(0, CLASSES, EXAMPLES).astype(np.int32)
    dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH, drop_remainder=True)
               .repeat().prefetch(tf.data.AUTOTUNE))
    network, optimizer = NetworkConfig(depth=18, width=1.0), OptimizerConfig(name="momentum", lr=0.01)
    model = build_resnet(network, CLASSES, IMAGE_SIZE)
    info = {"policy": keras.mixed_precision.global_policy().name,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "tensorflow": tf.__version__,
            "params": model.count_params()}

    if spec["kind"] == "worklab":
        from worklab.model.rules import lr_multipliers
        from worklab.train.trainer import OptimizerGroups, Trainer

        rules = [LrRule(pattern, mult) for pattern, mult in RULES] if spec["rules"] else []
        plan = lr_multipliers(rules, [v.path for v in model.variables])
        lr = tf.Variable(optimizer.lr, dtype=tf.float32, trainable=False, name="lr")
        groups = OptimizerGroups(optimizer, model, plan, lr)
        trainer_class = no_cond_trainer(tf, Trainer) if spec.get("nocond") else Trainer
        trainer = trainer_class(model, groups, dataset, tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64),
                          lr, network.weight_decay if spec.get("decay") else 0.0, tf.distribute.get_strategy(),
                          xla=spec["xla"])
        info.update(groups=len(groups.groups), trained_variables=len(groups.variables),
                    trainable_variables=len(model.trainable_variables))

        def run(budget):
            deadline = time.perf_counter() + budget
            scalars = trainer.train(10 ** 9, on_step=lambda done: time.perf_counter() >= deadline)
            return scalars["steps"], scalars["loss"]

        def finite():
            return int(trainer.bad_step.numpy()) < 0
    else:
        xla = {"jit_compile": True} if spec["xla"] else {}  # otherwise the default ("auto": off on CPU)
        model.compile(optimizer=keras.optimizers.SGD(optimizer.lr, momentum=optimizer.momentum),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **xla)
        losses = []
        budget_callback = Budget()

        def run(budget):
            budget_callback.start(budget)
            history = model.fit(dataset, epochs=1, steps_per_epoch=10 ** 9, verbose=0, shuffle=False,
                                callbacks=[budget_callback])
            losses.append(history.history["loss"][-1])
            return budget_callback.steps, losses[-1]

        def finite():
            return bool(np.all(np.isfinite(losses)))

    warm = time.perf_counter()
    run(0.0)  # one step: traces (and with XLA compiles) the step
    if not (spec["xla"] and spec["kind"] == "worklab"):  # one more worklab XLA step takes over 10 s
        run(WARMUP_SECONDS)
    info["warmup_seconds"] = time.perf_counter() - warm
    if spec["kind"] == "fit":
        info["jit_compile"] = bool(model.jit_compile)
        info["steps_per_execution"] = int(getattr(model, "steps_per_execution", 1) or 1)

    def train(budget):
        start = time.perf_counter()
        steps, loss = run(budget)
        seconds = time.perf_counter() - start
        return {"images_per_second": steps * BATCH / seconds, "steps": steps, "seconds": seconds,
                "loss": float(loss)}

    def check():
        return {"finite": finite()}

    handlers = {"train": train, "check": check}
    if spec.get("matmul"):
        handlers["matmul"] = matmul_handler(tf)
    if spec.get("flops"):
        handlers["flops"] = lambda: count_flops(tf, keras, build_resnet, network)
    info["setup_seconds"] = time.perf_counter() - started
    return info, handlers


def no_cond_trainer(tf, Trainer):
    """worklab's replica step with the update applied unconditionally (no tf.cond, no skip of a
    non-finite step): a diagnostic only, to measure the cost of the cond under XLA."""

    class NoCondTrainer(Trainer):
        def _replica_step_fn(self, images, labels):
            with tf.GradientTape() as tape:
                logits = tf.cast(self.model(images, training=True), tf.float32)
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                data_loss = tf.nn.compute_average_loss(losses)
                loss = data_loss + tf.nn.scale_regularization_loss(self._decay())
            self.optimizers.apply(tape.gradient(loss, self.optimizers.variables), self.strategy)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                            tf.float32))
            return tf.stack([data_loss, correct, tf.cast(tf.size(labels), tf.float32)])

    return NoCondTrainer


def budget_callback_class():
    import keras

    class Budget(keras.callbacks.Callback):
        """Stops Model.fit at the first step that ends past the round's time budget (as on_step does
        for the Trainer). Keras with TensorFlow calls batch-end callbacks synchronously anyway."""

        async_safe = True

        def start(self, budget):
            self.deadline = time.perf_counter() + budget
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.perf_counter() >= self.deadline:
                self.model.stop_training = True

    return Budget


def matmul_handler(tf):
    a = tf.random.stateless_normal([MATMUL_N, MATMUL_N], seed=[1, 2])
    b = tf.random.stateless_normal([MATMUL_N, MATMUL_N], seed=[3, 4])
    product = tf.function(lambda: tf.linalg.matmul(a, b))
    for _ in range(2):
        product().numpy()

    def matmul(repeats):
        start = time.perf_counter()
        for _ in range(repeats):
            result = product()
        result[0, 0].numpy()
        seconds = time.perf_counter() - start
        return {"flops_per_second": repeats * 2 * MATMUL_N ** 3 / seconds, "seconds": seconds}

    return matmul


def count_flops(tf, keras, build_resnet, network):
    """Forward FLOPs per image: TF1 profiler on a concrete function, and 2 x Conv2D/Dense multiply-adds."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from worklab import compat

    model = build_resnet(network, CLASSES, IMAGE_SIZE)
    forward = tf.function(lambda x: model(x, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec([1, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(graph=convert_variables_to_constants_v2(concrete).graph,
                                             options=options).total_float_ops

    multiply_adds = {}
    for layer in compat.flatten_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            def counted(x, *args, _call=layer.call, _layer=layer, **kwargs):
                y = _call(x, *args, **kwargs)
                positions = int(tf.reduce_prod(tf.shape(y)[1:-1]))  # output pixels (1 for Dense)
                multiply_adds[_layer.path] = positions * int(tf.reduce_prod(_layer.kernel.shape))
                return y
            layer.call = counted
    model(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]), training=False)
    stem = sum(v for k, v in multiply_adds.items() if k.startswith("stem/"))
    return {"profiler": int(profiled), "analytic": 2 * sum(multiply_adds.values()), "stem": 2 * stem,
            "layers": len(multiply_adds)}


# Driver side -------------------------------------------------------------------------------------

def main():
    args = common.arguments(__doc__, lambda parser: parser.add_argument(
        "--xla-detail", action="store_true",
        help="also run worklab's XLA step with the update outside tf.cond (a bench-only subclass)"))
    if args.worker:
        return common.serve(setup, args.worker)
    budget = 1.0
    rounds = args.rounds or (3 if args.quick else 6)
    matmul_repeats = 4 if args.quick else 8
    chosen = [(n, s) for n, s in WORKERS if not args.quick or n in QUICK]
    if args.xla_detail:
        chosen.insert(next(i for i, (n, _) in enumerate(chosen) if n == "worklab XLA") + 1, XLA_DETAIL)
    common.print_header("train_speed: worklab Trainer vs keras Model.fit", args, {
        "network": "ResNet-18 width 1", "image size": IMAGE_SIZE, "batch": BATCH, "classes": CLASSES,
        "data": f"{EXAMPLES} random images in memory", "rules": ", ".join(f"{p} x{m}" for p, m in RULES),
        "optimizer": "SGD momentum 0.9, lr 0.01", "rounds": rounds,
        "round": f"steps until {budget} s have passed (at least 1)",
        "matmul": f"{MATMUL_N}x{MATMUL_N} float32 x{matmul_repeats}/round"})
    if args.quick:
        print("--quick: oneDNN off and XLA are left out (XLA alone compiles for about a minute)")

    print("\nstarting workers (set-up and warm-up are not timed):", flush=True)
    script = os.path.abspath(__file__)
    slow_first = sorted(chosen, key=lambda item: not item[1]["xla"])  # XLA compiles longest: start it first
    makers = [lambda n=n, s=s: common.Worker(n, script, s, env={"TF_ENABLE_ONEDNN_OPTS": "1" if s["onednn"] else "0"})
              for n, s in slow_first]
    workers = common.launch(makers)
    try:
        by_name = {w.name: w for w in workers}
        flops = by_name["worklab"].call("flops")
        contenders = []
        for name, _ in chosen:
            contenders.append((name, lambda w=by_name[name]: w.call("train", budget=budget)["images_per_second"]))
            if name in MATMUL_AFTER and MATMUL_AFTER[name][0] in by_name:
                host, label = MATMUL_AFTER[name]
                contenders.append((f"matmul {label}", lambda w=by_name[host]: w.call(
                    "matmul", repeats=matmul_repeats)["flops_per_second"] / 1e9))
        print(f"\n{rounds} interleaved rounds (training img/s, matmul GFLOP/s):", flush=True)
        results = common.interleave(contenders, rounds, own_pids=lambda: [w.proc.pid for w in workers])
        checks = {w.name: w.call("check")["finite"] for w in workers}
        infos = {n: by_name[n].info for n, _ in chosen}
    finally:
        common.close_all(workers)
    report(results, flops, checks, infos, rounds)


def report(results, flops, checks, infos, rounds):
    med = {name: common.median(values) for name, values in results.items()}
    skipped = "not run (--quick)"
    detail = "not run (needs --xla-detail)"

    def paired(a, b):
        return common.median([x / y for x, y in zip(results[a], results[b])])

    def row(name, versus, note=""):
        if name not in med or versus not in med:
            return [name, "-", "-", "-", "-", detail if name == XLA_DETAIL[0] else skipped]
        return [name, med[name], common.spread(results[name]), common.ratio(med[name], med[versus]),
                f"{paired(name, versus):.2f}x", note]

    print("\n" + common.others_summary(results))
    print("ratio = ratio of the medians; paired = median over rounds of the ratio within a round (the two ran "
          "seconds apart, under the same outside load): trust paired when the min-max ranges are wide")
    headers = ["contender", "img/s (median)", "rounds min-max", "ratio", "paired", "note"]
    common.table(headers, [
        row("worklab", "fit", "worklab/fit, oneDNN on (stem frozen, stage1 x0.1)"),
        row("worklab no rules", "fit", "worklab/fit, oneDNN on, no lr_mult rules"),
        row("worklab oneDNN off", "fit oneDNN off", "worklab/fit, oneDNN off"),
        row("fit", "fit", "Model.fit, oneDNN on"),
        row("fit oneDNN off", "fit", "Model.fit oneDNN off vs on"),
    ], title=f"worklab Trainer vs keras Model.fit (median of {rounds} rounds; target worklab/fit >= 1.0x)")

    common.table(headers, [
        row("worklab", "worklab", "default: oneDNN on, XLA off, float32"),
        row("worklab oneDNN off", "worklab", "runtime.onednn=false"),
        row("worklab XLA", "worklab", "runtime.xla=true"),
        row("worklab bf16", "worklab", "runtime.precision=mixed_bfloat16"),
    ], title="worklab runtime settings (Trainer with the rules; ratio vs default)")

    common.table(headers, [
        row("worklab XLA", "fit XLA", "worklab/fit, both XLA (fit: compile(jit_compile=True))"),
        row("fit XLA", "fit", "Model.fit XLA vs default compile"),
        row(XLA_DETAIL[0], "worklab XLA", "update outside tf.cond vs worklab XLA (bench subclass)"),
    ], title="XLA: worklab vs Model.fit, both with XLA")

    common.table(headers, [
        row("worklab decay", "worklab", "network.weight_decay=1e-4 (worklab's default) vs 0"),
        row("worklab decay", "fit", "worklab with its default decay / fit (no decay)"),
    ], title="weight decay: worklab's L2 term in the loss (the other worklab rows use weight_decay=0, as fit)")

    common.table(headers, [
        row("worklab", "worklab no rules", "rules / no rules"),
        row("worklab no rules", "worklab no rules", "no rules"),
    ], title="lr_mult effect: stem frozen (mult 0, out of the gradient) and stage1 x0.1 vs no rules")

    training = 3 * flops["profiler"]
    print(f"forward FLOPs per image ({IMAGE_SIZE} px): profiler {flops['profiler'] / 1e6:.1f} M; analytic "
          f"2 x multiply-adds of the {flops['layers']} Conv2D/Dense layers {flops['analytic'] / 1e6:.1f} M "
          f"(of which stem {flops['stem'] / 1e6:.1f} M)")
    print(f"training FLOPs per image: 3 x profiler forward = {training / 1e6:.1f} M (nominal: forward, input "
          "gradients, weight gradients; not reduced for frozen variables)")
    matmul = {"on": med.get("matmul oneDNN on"), "off": med.get("matmul oneDNN off")}
    rows = []
    for key in ("on", "off"):
        name = f"matmul oneDNN {key}"
        if matmul[key] is None:
            rows.append([name, "-", "-", "-", skipped])
        else:
            rows.append([name, "-", matmul[key], common.spread(results[name]),
                         "1.00" if key == "on" else f"{matmul['off'] / matmul['on']:.2f} of oneDNN on"])
    for name, _ in WORKERS + [XLA_DETAIL]:
        if name not in med:
            rows.append([name, "-", "-", "-", detail if name == XLA_DETAIL[0] else skipped, "-"])
            continue
        key = "off" if name.endswith("oneDNN off") else "on"
        achieved = med[name] * training / 1e9
        per_round = "-"
        if matmul[key] is not None:
            per_round = f"{common.median([x * training / 1e9 / m for x, m in zip(results[name], results[f'matmul oneDNN {key}'])]):.2f}"
        rows.append([name, med[name], achieved, "-",
                     f"{achieved / matmul[key]:.2f}" if matmul[key] is not None else skipped, per_round])
    for row_ in rows[:2]:
        row_.append("-")
    common.table(["what", "img/s", "GFLOP/s", "rounds min-max", "fraction of matmul rate (same oneDNN)",
                  "paired"], rows,
                 title=f"compute: float32 matmul {MATMUL_N}x{MATMUL_N} and training FLOP/s achieved "
                       "(training FLOP/s = img/s x 3 x forward FLOPs)")

    bad = [name for name, ok in checks.items() if not ok]
    print("losses finite in every contender" if not bad else f"NON-FINITE loss in: {', '.join(bad)} "
          "(worklab skips such updates, which makes its steps cheaper: numbers not comparable)")
    common.print_workers(infos)


if __name__ == "__main__":
    main()
