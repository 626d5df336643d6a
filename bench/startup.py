"""Start-up time: `python run.py --cfg job` and `python run.py --help` against importing TensorFlow.

What it measures: the wall time of each command below, from process start to exit, run from
the repository root with this script's Python, output discarded. The commands are run in
interleaved rounds (one of each per round, same order every round); the table shows the
median and the min-max over the rounds.
    python -c pass                     the interpreter alone (the floor)
    python -c "import tensorflow"      what any command that touches TensorFlow pays
    python run.py --cfg job            compose and print the config (Hydra), no TensorFlow
    python run.py --help               Hydra's help for the config groups, no TensorFlow
Neither run.py command creates a run folder.

Run from the repository root:
    python bench/startup.py            # about 1 minute
    python bench/startup.py --quick    # about 20 seconds

Reading the ratios: "vs import tensorflow" below 1.0x means the command returns faster than
TensorFlow alone can be imported, i.e. it does not import TensorFlow (both run.py commands
should be well below 1.0x); "vs python -c pass" is the cost over a bare interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COMMANDS = [
    ("python -c pass", ["-c", "pass"]),
    ('python -c "import tensorflow"', ["-c", "import tensorflow"]),
    ("python run.py --cfg job", ["run.py", "--cfg", "job"]),
    ("python run.py --help", ["run.py", "--help"]),
]


def wall_time(arguments):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], cwd=common.REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def main():
    args = common.arguments(__doc__)
    rounds = args.rounds or (3 if args.quick else 10)
    common.print_header("startup: run.py --cfg job / --help vs import tensorflow", args,
                        {"rounds": rounds, "python": sys.executable, "cwd": common.REPO})
    for _, arguments in COMMANDS:  # one untimed run each: bytecode and the page cache warm up
        wall_time(arguments)
    print(f"\n{rounds} interleaved rounds (seconds):", flush=True)
    results = common.interleave([(name, lambda a=a: wall_time(a)) for name, a in COMMANDS], rounds)
    print(common.others_summary(results))
    med = {name: common.median(values) for name, values in results.items()}
    tensorflow, bare = med['python -c "import tensorflow"'], med["python -c pass"]
    common.table(["command", "median s", "rounds min-max", "vs import tensorflow", "vs python -c pass"],
                 [[name, med[name], common.spread(results[name]), common.ratio(med[name], tensorflow),
                   common.ratio(med[name], bare)] for name, _ in COMMANDS],
                 title=f"wall time from the repository root, median of {rounds} interleaved rounds")


if __name__ == "__main__":
    main()
