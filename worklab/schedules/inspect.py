"""schedule=inspect: the configured network's layers and how each trains, and what a checkpoint holds.

It replaces the seed's use of TensorFlow's inspect_checkpoint.py, and answers the first
questions of a fine-tuning: which layers the network has, their parameters, which
learning-rate rule (network.freeze, network.lr_mult) each variable gets and which batch
norm is frozen; whether network.weights loads; then, with restore.path, every key of the
checkpoint with its shape and dtype and the row each variable would get, so a mapping
can be written and checked without training. schedule.filter narrows every list. Nothing
is trained and no run folder is changed.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from worklab.model import networks
from worklab.model.batchnorm import batch_norm_layers, layer_path
from worklab.model.restore import PROBLEMS, format_rows, open_checkpoint, plan
from worklab.model.rules import compile_patterns, first_match


def run(parts) -> Dict:
    """Print the network's layers, then the checkpoint's keys and the mapping; return counts."""
    keep = compile_patterns([parts.cfg.schedule.filter], "schedule.filter")[0].search \
        if parts.cfg.schedule.filter else (lambda name: True)
    counts = {"layers": print_layers(parts, keep)}
    loader = networks.pretrained_weights(parts.model, parts.cfg)
    if loader:
        print(f"\n{loader()}")  # it names network.weights and says what it loaded
    if parts.cfg.restore.path:
        counts.update(print_mapping(parts, keep))
    return counts


def print_layers(parts, keep) -> int:
    """One line per layer with weights: its parameters and how it trains. Returns the lines printed."""
    model, rules = parts.model, parts.rules
    patterns = compile_patterns([r.pattern for r in rules], "network.lr_mult")
    names = _rule_names(len(rules) - len(parts.cfg.network.lr_mult), len(rules))
    variables = {v.path: v for v in model.variables}
    frozen_bn = {f"{layer_path(layer)}/moving_mean" for layer in batch_norm_layers(model) if not layer.trainable}
    rows = [(name, paths) for name, paths in networks.layer_variables(model) if paths and keep(name)]
    width = max([len(name) for name, _ in rows] + [5])
    total = sum(int(np.prod(v.shape)) for v in model.variables)
    print(f"{model.name}: {len(rows)} layers with weights, {total:,} parameters "
          f"(input preprocessing {model.get_layer('preprocess').describe()})")
    for name, paths in rows:
        size = sum(int(np.prod(variables[p].shape)) for p in paths)
        how = sorted({_how(parts.plan[p].lr, names[first_match(p, patterns)]) for p in paths})
        bn = sum(p in frozen_bn for p in paths)
        frozen = "" if not bn else ", batch-norm statistics frozen" if bn == 1 else f", {bn} batch norms frozen"
        print(f"  {name:<{width}}  {size:>11,}  {'; '.join(how)}{frozen}")
    return len(rows)


def _rule_names(freeze: int, count: int) -> Dict[int, str]:
    """Rule index -> how inspect names it: the first `freeze` come from network.freeze, then lr_mult[i]."""
    names = {i: "network.freeze" if i < freeze else f"network.lr_mult[{i - freeze}]" for i in range(count)}
    return {**names, -1: "no rule"}


def _how(lr: float, rule: str) -> str:
    return f"frozen ({rule})" if lr == 0 else f"lr x{lr:g} ({rule})"


def print_mapping(parts, keep) -> Dict:
    """The checkpoint restore.path's keys, then the row each network variable gets under the mapping."""
    cfg = parts.cfg.restore
    source = open_checkpoint(cfg.path)
    keys = sorted(k for k in source.shapes if keep(k))
    width = max([len(k) for k in keys] + [3])
    matching = f", {len(keys)} matching the filter" if parts.cfg.schedule.filter else ""
    print(f"\n{cfg.path}: {len(source.shapes)} keys{matching}")
    for key in keys:
        print(f"  {key:<{width}}  {str(list(source.shapes[key])):<20}  {source.dtypes[key]}")
    rows = [r for r in plan({v.path: v for v in parts.model.variables}, source, cfg) if keep(r.variable)]
    print(f"\n{parts.model.name} variables and their checkpoint keys:\n{format_rows(rows)}")
    counts = {status: sum(r.status == status for r in rows) for status in ("restored", "skipped", *PROBLEMS)}
    print("\n" + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return counts
