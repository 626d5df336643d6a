"""The checkpoint files of a run folder: which are complete, the index that lists them, their names.

A checkpoint is `checkpoints/ckpt-<step>.index` plus its data shards
`ckpt-<step>.data-<i>-of-<n>`. TensorFlow's `checkpoint` index file lists the complete
ones and is replaced atomically after each save. The index is a cache of what is on disk,
not the only truth: when it is missing or cannot be parsed, the list is rebuilt from the
checkpoints whose index and every data shard are present (TensorFlow writes a
checkpoint's .index last, so a save killed part-way is never taken for a complete one).

Listed files are never written over. A step saved a second time (recalibrated batch-norm
statistics, a save after falling back from a damaged checkpoint) gets the next free name
of that step, `ckpt-<step>_<n>`; the newest name of a step is the one in use. A
checkpoint that cannot be read is moved into `checkpoints/damaged/`, never deleted.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from worklab.atomic import write_text

log = logging.getLogger(__name__)

PREFIX = "ckpt"
INDEX = "checkpoint"
_NAME = re.compile(rf"^{PREFIX}-(\d+)(?:_(\d+))?$")
_ENTRY = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths): "([^"]+)"$')
_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)$")


def parse_name(name: str) -> Optional[Tuple[int, int]]:
    """(step, generation) of a checkpoint name such as ckpt-600 or ckpt-600_1, or None."""
    match = _NAME.match(name)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def make_name(step: int, generation: int = 0) -> str:
    return f"{PREFIX}-{step}" + (f"_{generation}" if generation else "")


class CheckpointFolder:
    """`<run>/checkpoints`: the complete checkpoints by step, the index, free names, removal."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.rebuilt: Optional[str] = None  # why the index was not used, when it was rebuilt from the files

    def names(self) -> Dict[int, str]:
        """The name in use for each step (its newest listed generation), from the index or the files."""
        listed = self._listed()
        if listed is None:
            listed = self._complete_on_disk()
        chosen: Dict[int, Tuple[int, str]] = {}
        for name in listed:
            step, generation = parse_name(name)
            if step not in chosen or generation > chosen[step][0]:
                chosen[step] = (generation, name)
        return {step: name for step, (_, name) in sorted(chosen.items())}

    def steps(self) -> List[int]:
        """The steps of the complete checkpoints, oldest first."""
        return list(self.names())

    def path(self, name: str) -> Path:
        return self.directory / name

    def free_name(self, step: int) -> str:
        """The name a new checkpoint of `step` is written under: ckpt-<step>, or its next unused generation."""
        generation = 0
        while any(self.directory.glob(f"{make_name(step, generation)}.*")):
            generation += 1
        return make_name(step, generation)

    def write_index(self, names: List[str]) -> None:
        """Replace the index atomically; the last name is the latest. Names are relative, so a folder can move."""
        lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{n}"' for n in names]
        write_text(self.directory / INDEX, "\n".join(lines) + "\n")
        self.rebuilt = None

    def remove_step(self, step: int) -> None:
        """Delete every generation of a step (a pruned checkpoint)."""
        for pattern in (f"{make_name(step)}.*", f"{make_name(step)}_*.*"):
            for file in self.directory.glob(pattern):
                if parse_name(file.name.split(".", 1)[0]) is not None:
                    file.unlink()

    def move_aside(self, name: str) -> Path:
        """Move a checkpoint that cannot be read into checkpoints/damaged/, where a user can look at it."""
        damaged = self.directory / "damaged"
        damaged.mkdir(exist_ok=True)
        for file in self.directory.glob(f"{name}.*"):
            file.replace(damaged / file.name)
        return damaged

    def _listed(self) -> Optional[List[str]]:
        """The complete checkpoints the index lists, or None when there is no index or it is damaged."""
        index = self.directory / INDEX
        if not index.is_file():
            if self._complete_on_disk():
                self.rebuilt = f"{index} is missing"
            return None
        try:
            entries = [_ENTRY.match(line.strip()) for line in index.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            self.rebuilt = f"{index} cannot be read ({error})"
            return None
        if not entries or not all(entries) or not any(e.group(1) == "all_model_checkpoint_paths" for e in entries):
            self.rebuilt = f"{index} is damaged"
            return None
        names = [Path(e.group(2)).name for e in entries if e.group(1) == "all_model_checkpoint_paths"]
        incomplete = [n for n in names if parse_name(n) is None or not self._complete(n)]
        if incomplete:
            self.rebuilt = f"{index} lists checkpoints whose files are missing: {', '.join(incomplete)}"
            return None
        return names

    def _complete_on_disk(self) -> List[str]:
        names = {file.name.split(".", 1)[0] for file in self.directory.glob(f"{PREFIX}-*.index")}
        return [n for n in names if parse_name(n) is not None and self._complete(n)]

    def _complete(self, name: str) -> bool:
        """The .index and every data shard it names are present."""
        if not (self.directory / f"{name}.index").is_file():
            return False
        shards = [_SHARD.search(f.name) for f in self.directory.glob(f"{name}.data-*")]
        shards = [m for m in shards if m]
        if not shards:
            return False
        total = int(shards[0].group(2))
        return {int(m.group(1)) for m in shards if int(m.group(2)) == total} == set(range(total))
