"""schedule=hyper: the patience schedule for each value of one config key (the seed's train_with_hyper).

Values are tried in order, each in its own sub-folder named `<param>=<value>` that is a
complete, resumable patience run. The search stops when the best loss (on the
validation set when the run has one, else on the test set) has not improved for
hyper_patience values; with a validation set, each value's test result is reported
apart and the table shows it beside the validation loss. Every value's config is built and checked before
the first step. The search's state is the set of finished sub-runs (each marked by its
best.json): a restarted search skips them, resumes the interrupted one from its own
checkpoint, and writes the same table.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import keras

from worklab.atomic import write_text
from worklab.config.hparams import hparams
from worklab.hydra_edge import with_value
from worklab.run import runfolder
from worklab.run.runfolder import RunFolder
from worklab.run.session import checkpoint_path
from worklab.run.summary import Summary, tracked
from worklab.schedules import patience

log = logging.getLogger("worklab")


def run(parts) -> Dict:
    """Search the values; return the test results of the best value's best step."""
    s = parts.cfg.schedule
    variants = [(value, with_value(parts.cfg, s.param, value)) for value in s.values]
    rows: List[Dict] = []
    previous: Optional[Path] = None
    for value, variant in variants:
        variant.run_dir = str(parts.run_dir / f"{s.param}={value}")
        result = run_value(parts, variant, f"{s.param}={value}", previous if s.warm_start else None)
        if parts.summary:
            parts.summary.evaluated(result)
        rows.append({"value": value, "folder": Path(variant.run_dir).name, "loss": result["loss"],
                     "accuracy": result["accuracy"], "step": result["step"],
                     "test_loss": (result.get("test") or {}).get("loss")})
        log.info("%s=%s best %.4f at step %d", s.param, value, result["loss"], result["step"])
        write_table(parts, rows)
        previous = checkpoint_path(Path(variant.run_dir), result["step"])
        if values_since_best(rows) >= s.hyper_patience:
            log.info("%s: no better %s loss for %d value(s): stopping", s.param, parts.inputs.decision_split,
                     values_since_best(rows))
            break
    best, split = min(rows, key=lambda row: row["loss"]), parts.inputs.decision_split
    log.info("best %s=%s: %s loss %.4f at step %d\n%s", s.param, best["value"], split, best["loss"], best["step"],
             format_table(s.param, rows, split))
    result = RunFolder(parts.run_dir / best["folder"]).best()
    if parts.summary and result.get("test"):
        parts.summary.evaluated({**result["test"], "step": result["step"], "split": "test"}, decides=False)
    return result


def run_value(parts, variant, override: str, warm_start: Optional[Path]) -> Dict:
    """One value's patience run in its sub-folder, or its saved result if it finished before."""
    finished = RunFolder(variant.run_dir).best()
    if finished:
        return finished
    from worklab.run.parts import Parts

    runfolder.lock(variant.run_dir)
    keras.utils.set_random_seed(variant.seed)  # each value starts as a run of its own with that seed would
    sub = Parts(variant, parts.stop, parts.strategy)
    sub.session.warm_start = warm_start
    overrides = parts.summary.data["overrides"] + [override] if parts.summary else [override]
    sub.summary = Summary(sub.run_dir, "patience", overrides)
    sub.writer.hparams(hparams(variant))
    with tracked(sub.summary):
        return patience.run(sub)


def values_since_best(rows: List[Dict]) -> int:
    best = min(range(len(rows)), key=lambda i: rows[i]["loss"])
    return len(rows) - 1 - best


def write_table(parts, rows: List[Dict]) -> None:
    s = parts.cfg.schedule
    parts.folder.write("state.json", {"schedule": "hyper", "param": s.param, "values": list(s.values),
                                      "results": rows, "values_since_best": values_since_best(rows)})
    write_text(parts.folder.file("hyper.txt"), format_table(s.param, rows, parts.inputs.decision_split) + "\n")


def format_table(param: str, rows: List[Dict], split: str = "test") -> str:
    """One row per value: the loss it was chosen by, its accuracy and step, and the test loss reported apart."""
    best = min(rows, key=lambda row: row["loss"])
    apart = split == "val"
    lines = [f"{param:>16}  {split + ' loss':>9}  {'accuracy':>8}  {'step':>7}" + ("  test loss" if apart else "")]
    lines += [f"{str(r['value']):>16}  {r['loss']:>9.4f}  {r['accuracy']:>8.3f}  {r['step']:>7d}"
              + (f"  {_number(r.get('test_loss')):>9}" if apart else "") + ("  <- best" if r is best else "")
              for r in rows]
    return "\n".join(lines)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
