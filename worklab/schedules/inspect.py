"""schedule=inspect: what a checkpoint holds, and how the configured network's variables map onto it.

It replaces the seed's use of TensorFlow's inspect_checkpoint.py: every key with its
shape and dtype (schedule.filter narrows both lists), then, for the configured network
and restore mapping, the row each variable would get, so a mapping can be written and
checked without training. Nothing is restored or trained.
"""
from __future__ import annotations

from typing import Dict

from worklab.errors import UserError
from worklab.restore import PROBLEMS, format_rows, open_checkpoint, plan
from worklab.rules import compile_patterns


def run(parts) -> Dict:
    """Print the checkpoint's keys and the mapping; return counts of the mapping's outcomes."""
    cfg = parts.cfg.restore
    if not cfg.path:
        raise UserError("schedule=inspect needs restore.path=PATH, the checkpoint to list.")
    source = open_checkpoint(cfg.path)
    keep = compile_patterns([parts.cfg.schedule.filter], "schedule.filter")[0].search \
        if parts.cfg.schedule.filter else (lambda name: True)
    keys = sorted(k for k in source.shapes if keep(k))
    width = max([len(k) for k in keys] + [3])
    matching = f", {len(keys)} matching the filter" if parts.cfg.schedule.filter else ""
    print(f"{cfg.path}: {len(source.shapes)} keys{matching}")
    for key in keys:
        print(f"  {key:<{width}}  {str(list(source.shapes[key])):<20}  {source.dtypes[key]}")
    rows = [r for r in plan({v.path: v for v in parts.model.variables}, source, cfg) if keep(r.variable)]
    print(f"\n{parts.model.name} variables and their checkpoint keys:\n{format_rows(rows)}")
    counts = {status: sum(r.status == status for r in rows) for status in ("restored", "skipped", *PROBLEMS)}
    print("\n" + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return counts
