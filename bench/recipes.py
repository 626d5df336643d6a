"""Training recipes compared on the demo sets: validation and test accuracy over seeds, at equal steps.

    python bench/recipes.py                                  # every recipe on both demo sets, seeds 0 1 2
    python bench/recipes.py --datasets hard --seeds 0 --steps 200
    python bench/recipes.py --recipes default= cosine=schedule=cosine,optimizer.lr=0.05
    python bench/recipes.py --pretrain shapes --datasets hard   # fine-tuning: every run starts from a shapes model

Each (dataset, recipe, seed) is one `python run.py` in a subprocess, one after the other,
with a validation set held out of the training list (reader.val_split=0.1). Every run
trains for the same number of steps, --steps: the script sets the length for the
schedule the recipe ends up with, so recipes do not give it. A fixed schedule's stages
are scaled to it, keeping their learning rates and proportions, and its warmup with the
first stage; a cosine's schedule.steps is set and its warmup scaled alike; train's
schedule.steps is set; patience gets schedule.max_steps and may stop earlier. A recipe whose config
worklab refuses (a preset that does not exist, a bad value) is skipped with one line
saying why; a run that fails is reported and left out of the means.

From each run folder's summary.json it reads the accuracy of the run's best checkpoint
on the validation set, the one the run chose by, and the test accuracy of that
checkpoint, reported apart from the choice. The table gives both as mean ± standard
deviation over the seeds, and the wall seconds of one run (the subprocess, start-up
included).

With --pretrain DATASET the grid measures fine-tuning, the use the presets are written
for: the default recipe first trains one model on DATASET (seed 0, --steps), and every run
of the grid starts from its last checkpoint (restore.path); a head for another class count
starts fresh. Run folders go to --out (default bench/.runs/DATE-TIME, git-ignored), the demo
sets to bench/.data.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA, REPO, machine, table, tree_state  # noqa: E402  (also puts the repository root on sys.path)

# name -> overrides. "default" is run.py's own recipe: the fixed schedule, 0.1 then 0.01 (scaled to --steps).
RECIPES: Dict[str, List[str]] = {
    "default": [],
    "transfer": ["experiment=transfer"],
    # BiT's rule would crop the demo's 48 px images at 128 px, 16x the compute of the others' 32 px:
    # its 160 -> 128 crop is scaled to the demo's size instead.
    "bit": ["experiment=bit", "schedule.crop=32", "schedule.resize=40"],
}
# demo=full: every recipe trains the ResNet-18 (the numbers in docs/performance.md section 5 are for it),
# not the smaller ResNet a first `python run.py` gets.
DATASETS: Dict[str, List[str]] = {
    "shapes": ["reader.demo.variant=shapes", "demo=full"],
    "hard": ["reader.demo.variant=hard", "demo=full"],
}
VAL_SPLIT = 0.1
RUNS = REPO / "bench" / ".runs"


# Arguments -------------------------------------------------------------------------------------

def split_overrides(text: str) -> List[str]:
    """Split 'a=1,b=[1,2],c={x: 1, y: 2}' at the commas outside brackets and quotes: ['a=1', 'b=[1,2]', ...]."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    if quote or depth:
        raise ValueError(f"unbalanced brackets or quotes in {text!r}")
    parts.append(current.strip())
    return [part for part in parts if part]


def parse_recipes(items: Sequence[str]) -> Dict[str, List[str]]:
    """--recipes NAME=OVERRIDE,OVERRIDE ... as {name: overrides}; 'NAME=' is the default config."""
    recipes: Dict[str, List[str]] = {}
    for item in items:
        name, sep, overrides = item.partition("=")
        if not sep or not name or "/" in name:
            raise ValueError(f"--recipes {item!r}: write NAME=OVERRIDE,OVERRIDE (NAME= for the defaults), "
                             "NAME without '/'")
        if name in recipes:
            raise ValueError(f"--recipes names {name!r} twice")
        recipes[name] = split_overrides(overrides)
    return recipes


def arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--steps", type=int, default=500, help="training steps of every run (default 500)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default 0 1 2)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--recipes", nargs="+", default=None, metavar="NAME=OVERRIDES",
                        help="replace the recipe table: NAME=OVERRIDE,OVERRIDE ...")
    parser.add_argument("--pretrain", choices=list(DATASETS), default=None,
                        help="first train the default recipe on this set; every run starts from that model")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run folders (default bench/.runs/DATE)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be at least 1")
    try:
        args.recipes = parse_recipes(args.recipes) if args.recipes else dict(RECIPES)
    except ValueError as error:
        parser.error(str(error))
    args.out = args.out or RUNS / time.strftime("%Y-%m-%d-%H%M%S")
    return args


# Run length ------------------------------------------------------------------------------------

def scaled_stages(steps_per_stage: Sequence[int], total: int) -> List[int]:
    """Stage lengths in the same proportions as `steps_per_stage`, summing to `total`, each at least 1."""
    if total < len(steps_per_stage):
        raise ValueError(f"{total} steps cannot hold {len(steps_per_stage)} stages")
    whole = sum(steps_per_stage)
    ends, done = [], 0
    for i in range(len(steps_per_stage)):
        done += steps_per_stage[i]
        ends.append(round(total * done / whole))
    lengths = [end - start for start, end in zip([0] + ends, ends)]
    while min(lengths) < 1:  # a tiny stage rounded away takes a step from the longest
        lengths[lengths.index(min(lengths))] += 1
        lengths[lengths.index(max(lengths))] -= 1
    return lengths


def length_overrides(schedule, steps: int) -> List[str]:
    """The overrides that make `schedule` (a plain schedule config) train `steps` steps in all."""
    from worklab.config.schedules import BitSchedule, CosineSchedule, FixedSchedule, PatienceSchedule, TrainSchedule

    if isinstance(schedule, FixedSchedule):
        lengths = scaled_stages([stage.steps for stage in schedule.stages], steps)
        stages = ", ".join(f"{{lr: {stage.lr}, steps: {n}}}" for stage, n in zip(schedule.stages, lengths))
        warmup = round(schedule.warmup_steps * lengths[0] / schedule.stages[0].steps)
        return [f"schedule.stages=[{stages}]", f"schedule.warmup_steps={warmup}"]
    if isinstance(schedule, CosineSchedule):
        return [f"schedule.steps={steps}", f"schedule.warmup_steps={schedule.warmup_steps * steps // schedule.steps}"]
    if isinstance(schedule, (TrainSchedule, BitSchedule)):
        return [f"schedule.steps={steps}"]
    if isinstance(schedule, PatienceSchedule):
        return [f"schedule.max_steps={steps}"]
    raise ValueError(f"schedule {type(schedule).__name__} does not train for a number of steps")


def compose(overrides: Sequence[str]):
    """worklab's plain config for `overrides`, checked as run.py checks it (no TensorFlow import)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from worklab.hydra_edge import to_plain

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_plain(hydra_compose("config", overrides=[*overrides, "run_dir=unused"]))


def plan(dataset: List[str], recipe: List[str], steps: int, data_dir: Path = DATA) -> Tuple[Optional[List[str]], str]:
    """(the run's overrides, '') for a recipe worklab accepts, or (None, why) for one it refuses.

    The demo set the runs read is drawn here, so that no run's time includes drawing it.
    """
    base = [*dataset, *recipe, f"reader.val_split={VAL_SPLIT}", f"data_dir={data_dir}"]
    try:
        overrides = base + length_overrides(compose(base).schedule, steps)
        cfg = compose(overrides)
    except Exception as error:  # Hydra's and worklab's config errors: the message says what is wrong
        return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    from worklab.data.demo import ensure_demo

    d = cfg.reader.demo
    ensure_demo(data_dir, d.image_size, d.train_per_class, d.test_per_class, d.seed, d.variant)
    return overrides, ""


# Runs and results ------------------------------------------------------------------------------

def pretrain(dataset: str, steps: int, out: Path, data_dir: Path = DATA) -> List[str]:
    """Train the default recipe on `dataset` into out/pretrain-DATASET; the override that starts a run from it."""
    overrides, why = plan(DATASETS[dataset], RECIPES["default"], steps, data_dir)
    if overrides is None:
        raise SystemExit(f"--pretrain {dataset}: worklab refuses the default recipe ({why})")
    run_dir = out / f"pretrain-{dataset}"
    summary, wall, error = run_once(overrides, 0, run_dir)
    if summary is None:
        raise SystemExit(f"--pretrain {dataset}: the run failed after {wall:.0f} s\n{error}")
    val, test = accuracies(summary)
    print(f"  pretrained on {dataset}: val {val:.3f}, test {test:.3f}, {wall:.0f} s; "
          f"every run starts from {run_dir / 'checkpoints'}", flush=True)
    return [f"restore.path={run_dir / 'checkpoints'}"]


def run_once(overrides: List[str], seed: int, run_dir: Path) -> Tuple[Optional[Dict], float, str]:
    """Run `python run.py` into `run_dir`; (the summary, or None if it failed, wall seconds, error tail)."""
    from worklab.run.summary import read_summary

    args = [sys.executable, str(REPO / "run.py"), *overrides, f"seed={seed}", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - started
    summary = read_summary(run_dir)
    if done.returncode != 0 or not summary or summary.get("status") != "finished":
        return None, seconds, "\n".join((done.stderr or done.stdout).strip().splitlines()[-3:])
    return summary, seconds, ""


def accuracies(summary: Dict) -> Tuple[float, float]:
    """(validation accuracy of the chosen checkpoint, test accuracy of that checkpoint) from a summary.json."""
    best, test = summary.get("best") or {}, summary.get("test") or {}
    if best.get("split") != "val":
        raise ValueError(f"the run chose on {best.get('split')!r}, not on a validation set")
    return float(best["accuracy"]), float(test["accuracy"])


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (nan for the deviation of fewer than two values)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def mean_pm_std(values: Sequence[float], digits: int = 3) -> str:
    """'0.912 ± 0.013' ('0.912' for one value, '-' for none)."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def main() -> None:
    args = arguments()
    m = machine()
    print("# Training recipes on the demo sets\n")
    print(f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, TensorFlow {m['tensorflow']}")
    print(f"tree: {tree_state()}")
    print(f"settings: steps={args.steps}, seeds={args.seeds}, datasets={args.datasets}, pretrain={args.pretrain}, "
          f"reader.val_split={VAL_SPLIT}, run folders in {args.out}")
    print("recipes: " + "; ".join(f"{name}: {' '.join(o) or '(defaults)'}" for name, o in args.recipes.items()),
          flush=True)
    start = pretrain(args.pretrain, args.steps, args.out) if args.pretrain else []
    rows = []
    for dataset in args.datasets:
        for name, recipe in args.recipes.items():
            overrides, why = plan(DATASETS[dataset], [*recipe, *start], args.steps)
            if overrides is None:
                print(f"skipped {dataset} / {name}: worklab refuses the config ({why})", flush=True)
                continue
            vals, tests, seconds = [], [], []
            for seed in args.seeds:
                summary, wall, error = run_once(overrides, seed, args.out / dataset / name / f"seed{seed}")
                seconds.append(wall)
                if summary is None:
                    print(f"  {dataset} / {name} / seed {seed}: FAILED after {wall:.0f} s\n    {error}", flush=True)
                    continue
                val, test = accuracies(summary)
                vals.append(val)
                tests.append(test)
                print(f"  {dataset} / {name} / seed {seed}: val {val:.3f}, test {test:.3f}, {wall:.0f} s", flush=True)
            rows.append([dataset, name, f"{len(vals)}/{len(args.seeds)}", mean_pm_std(vals), mean_pm_std(tests),
                         f"{statistics.fmean(seconds):.0f}"])
    text = table(["dataset", "recipe", "runs", "val accuracy", "test accuracy", "s / run"], rows,
                 title=f"{args.steps} steps, seeds {' '.join(map(str, args.seeds))}"
                 + (f", from a model pretrained on {args.pretrain}" if args.pretrain else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
