"""What each tf.distribute strategy costs on this machine: one process against two replicas and two workers.

What it measures (training images per second, median of interleaved rounds):
  * one process: runtime.strategy=default with runtime.intra_op_threads=2 (the baseline);
  * two logical devices: runtime.strategy=mirrored runtime.devices=[CPU:0,CPU:1] in one
    process with 2 threads: MirroredStrategy's split, all-reduce and synchronized batch norm;
  * two workers: runtime.strategy=multi_worker with two run.py processes on loopback ports
    (TF_CONFIG), 1 thread each: MultiWorkerMirroredStrategy's collectives over gRPC, each
    worker reading its own slice of every batch;
  * one process, 1 thread, for reference: what a single worker's core does alone.
Each round is a whole `python run.py` job (the demo set, a ResNet-18 of width 1/2 at 48 px,
the same global batch, schedule=train); the rate is what the chief's train lines report
(the global batch's images over the steps' time), taken from the lines after the first,
which hold the tracing. Rounds are interleaved (A, B, C, D, A, B, ...), so load on a shared
machine hits every contender alike; the paired column is the median of per-round ratios.

On a machine with several GPUs the same contenders are runtime.strategy=mirrored (all GPUs)
against one GPU, and multi_worker across machines against mirrored on one: see
docs/performance.md.

Run from the repository root:
    python bench/distribute_speed.py              # about 15 minutes
    python bench/distribute_speed.py --quick      # 9 minutes
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)
from worklab import cluster  # noqa: E402

BASE = ["reader.image_size=48", "network.depth=18", "network.width=0.5", "schedule=train",
        "schedule.save_every=100000"]
CONTENDERS = {
    "one process, 2 threads": dict(workers=1, args=["runtime.intra_op_threads=2"]),
    "2 logical devices (mirrored)": dict(workers=1, args=["runtime.intra_op_threads=2", "runtime.strategy=mirrored",
                                                          "runtime.devices=[CPU:0,CPU:1]"]),
    "2 workers (multi_worker)": dict(workers=2, args=["runtime.intra_op_threads=1",
                                                      "runtime.strategy=multi_worker"]),
    "one process, 1 thread": dict(workers=1, args=["runtime.intra_op_threads=1"]),
}
RATE = re.compile(r"train step (\d+)/\d+ .* images/s ([\d.]+)")


def one_round(contender: Dict, args: List[str], folder: Path) -> float:
    """Run the contender's job once; the median rate of its train lines after the first."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    configs = cluster.loopback(contender["workers"]) if contender["workers"] > 1 else [None]
    processes = []
    for tf_config in configs:
        extra = {"TF_CONFIG": tf_config} if tf_config else {}
        processes.append(subprocess.Popen(
            [sys.executable, str(common.REPO / "run.py"), *BASE, *args, *contender["args"], f"hydra.run.dir={folder}"],
            cwd=common.REPO, env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate()[0] for p in processes]
    if any(p.returncode for p in processes):
        raise RuntimeError(f"a job failed:\n{outputs[0][-3000:]}")
    rates = [float(m.group(2)) for m in RATE.finditer(outputs[0])][1:]
    if not rates:
        raise RuntimeError(f"no train lines after the first:\n{outputs[0][-3000:]}")
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 60 steps instead of 3 of 100")
    parser.add_argument("--batch", type=int, default=32, help="the global batch (reader.batch_size)")
    args = parser.parse_args()
    rounds, steps = (2, 60) if args.quick else (3, 100)
    job = [f"reader.batch_size={args.batch}", f"schedule.steps={steps}", f"schedule.log_every={steps // 5}",
           f"data_dir={common.DATA}"]
    common.print_header("tf.distribute strategies on this machine", args,
                        {"rounds": rounds, "steps": steps, "batch": args.batch, "network": "ResNet-18 x0.5, 48 px"})
    rates: Dict[str, List[float]] = {name: [] for name in CONTENDERS}
    for r in range(rounds):
        for name, contender in CONTENDERS.items():
            with tempfile.TemporaryDirectory(prefix="bench-distribute-") as folder:
                rates[name].append(one_round(contender, job, Path(folder) / "run"))
            print(f"round {r + 1}: {name}: {rates[name][-1]:.1f} images/s", flush=True)
    baseline = rates["one process, 2 threads"]
    print(f"\n| contender | images/s (median of {rounds}) | vs one process | paired |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        median, paired = statistics.median(values), statistics.median(v / b for v, b in zip(values, baseline))
        print(f"| {name} | {median:.1f} | {median / statistics.median(baseline):.2f}x | {paired:.2f}x |")


if __name__ == "__main__":
    main()
