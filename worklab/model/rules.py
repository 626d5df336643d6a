"""Pattern rules over variable names, turned into per-variable decisions once, at build time.

A rule list is ordered and the first rule whose regex matches (re.search) a variable's
name decides for it; a variable no rule matches gets the defaults. A rule that matches
no variable at all is an error, so a typo cannot silently train everything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from worklab.config.network import LrRule
from worklab.errors import UserError


@dataclass(frozen=True)
class Multipliers:
    """How one variable trains: its learning-rate and weight-decay multipliers."""

    lr: float = 1.0
    decay: float = 1.0


def compile_patterns(patterns: Sequence[str], key: str) -> List[re.Pattern]:
    """Compile regexes, naming the config key and the pattern when one is invalid."""
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise UserError(f"{key}[{i}] pattern {pattern!r} is not a valid regular expression: {error}.") from None
    return compiled


def first_match(name: str, patterns: Sequence[re.Pattern]) -> int:
    """Index of the first pattern that matches `name`, or -1."""
    return next((i for i, p in enumerate(patterns) if p.search(name)), -1)


def check_all_used(patterns: Sequence[re.Pattern], names: Sequence[str], key: str) -> None:
    """Fail on a pattern that matches none of `names`, showing a few names it could have matched."""
    unused = [p.pattern for p in patterns if not any(p.search(n) for n in names)]
    if unused:
        raise UserError(f"{key}: pattern(s) {unused} match no variable. Variable names look like: "
                        f"{', '.join(names[:4])}, ..., {names[-1]}.")


def lr_multipliers(rules: Sequence[LrRule], names: Sequence[str]) -> Dict[str, Multipliers]:
    """Map each variable name to its multipliers under the network.lr_mult rules."""
    patterns = compile_patterns([r.pattern for r in rules], "network.lr_mult")
    check_all_used(patterns, names, "network.lr_mult")
    plan = {}
    for name in names:
        i = first_match(name, patterns)
        plan[name] = Multipliers(rules[i].mult, rules[i].decay_mult) if i >= 0 else Multipliers()
    return plan


def frozen_batch_norm(layers: Sequence[str], rules: Sequence[LrRule]) -> List[str]:
    """The batch-norm layers (named by their path) that the rules freeze.

    A layer follows the first rule matching its moving_mean variable: `bn: frozen`
    freezes it, `bn: train` trains it, and no `bn` freezes it when the rule's mult is 0.
    """
    patterns = compile_patterns([r.pattern for r in rules], "network.lr_mult")
    frozen = []
    for layer in layers:
        i = first_match(f"{layer}/moving_mean", patterns)
        if i >= 0 and (rules[i].bn == "frozen" or (rules[i].bn is None and rules[i].mult == 0)):
            frozen.append(layer)
    return frozen


def freeze_rules(layers: Sequence[Tuple[str, Sequence[str]]], freeze: Optional[str]) -> List[LrRule]:
    """network.freeze=NAME as a rule: every layer up to and including NAME gets mult 0 (batch norm frozen).

    `layers` are (layer name, its variable paths) in the model's order. NAME is a layer's
    name, or a group of layers named alike, of which the last is taken: every layer whose
    name has NAME at its start or after `_` or `/`, not followed by a digit (nor by a
    letter when NAME ends in one). So `stage_2` is ConvNeXt's stage_2_* but not stage_20,
    `block3` EfficientNet's block3a_* and block3b_*, `conv4` ResNet50's conv4_*.
    """
    if not freeze:
        return []
    names = [name for name, _ in layers]
    end = "(?![0-9])" if freeze[-1].isdigit() else "(?![A-Za-z0-9])"
    group = re.compile(rf"(^|[_/]){re.escape(freeze)}{end}")
    last = names.index(freeze) if freeze in names else \
        max((i for i, name in enumerate(names) if group.search(name)), default=-1)
    if last < 0:
        shown = [n for n, paths in layers if paths]
        raise UserError(f"network.freeze={freeze} names no layer of the network. Its layers with weights "
                        f"include {', '.join(shown[:3])}, {', '.join(shown[len(shown) // 2:len(shown) // 2 + 2])}, "
                        f"..., {shown[-1]} (`python run.py schedule=inspect ...` lists them all).")
    paths = [path for _, layer_paths in layers[:last + 1] for path in layer_paths]
    if not paths:
        raise UserError(f"network.freeze={freeze}: no layer up to {names[last]} has weights, so it freezes nothing.")
    return [LrRule(pattern="^(?:" + "|".join(re.escape(p) for p in paths) + ")$", mult=0.0)]
