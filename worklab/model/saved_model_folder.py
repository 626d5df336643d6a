"""network=saved_model's folder on disk, checked without importing TensorFlow.

command.prepare checks it before Hydra writes into the run folder, when TensorFlow must
not be imported yet: runtime.configure sets its threads, devices and oneDNN inside the
job, before its first use. The SavedModel's functions (endpoints, input size, output)
are checked when the network is built (worklab.model.saved_model.check).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from worklab.errors import UserError

GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")  # what every SavedModel folder holds


def check_folder(value: Optional[str]) -> None:
    """Refuse a network.path that is missing, a file, or a folder without saved_model.pb, naming the value."""
    path = Path(value or "")
    if not value or not path.exists():
        raise UserError(f"network.path={value} does not exist: give a SavedModel folder (the one that holds "
                        "saved_model.pb).")
    if not path.is_dir():
        raise UserError(f"network.path={value} is a file, not a SavedModel folder: give {_folder_of(path)}.")
    if not any((path / name).is_file() for name in GRAPH_FILES):
        raise UserError(f"network.path={value} is not a SavedModel folder: it has no saved_model.pb. Give the "
                        "folder that model.export or tf.saved_model.save wrote.")


def _folder_of(file: Path) -> str:
    """What to pass instead of a file: its folder when it is a SavedModel's graph file."""
    if file.name in GRAPH_FILES:
        return f"the folder that holds it, network.path={file.parent}"
    return "the folder that holds saved_model.pb"
