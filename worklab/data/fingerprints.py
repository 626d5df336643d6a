"""Fingerprints of the image lists a run trains, validates and tests on, so a resumed run knows its data.

A fingerprint is the sha256 of the list's (path, class) pairs in list order, each path
taken relative to the list's own folder (a list file's folder, or a class-folder root),
so a data set moved together with its list keeps its fingerprint while a changed,
added, removed, relabelled or reordered image changes it. The run folder keeps them in
lists.json; a training schedule that continues a run with checkpoints refuses lists
that differ from the recorded ones unless reader.new_data=true says it is meant.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Optional

from worklab.data.imagelist import ImageList

# The key that names each list in a message.
KEYS = {"train": "reader.train", "val": "reader.val", "test": "reader.test"}


def fingerprint(images: ImageList, classes: List[str], kind: str) -> Dict:
    """{source, images, sha256} of a list; `kind` is how it was read (json, folder), which fixes its base folder."""
    source = images.source.split(" (held out", 1)[0]  # a validation split is named after its training list
    base = Path(source) if kind == "folder" else Path(source).parent
    digest = hashlib.sha256()
    for path, label in zip(images.paths, images.labels):
        digest.update(f"{os.path.relpath(path, base)}\t{classes[label]}\n".encode())
    return {"source": images.source, "images": len(images), "sha256": digest.hexdigest()}


def difference(name: str, recorded: Optional[Dict], now: Dict) -> Optional[str]:
    """What changed in list `name` (train, val, test) since it was recorded; None when it is the same."""
    if recorded is None or recorded.get("sha256") == now["sha256"]:
        return None
    key = KEYS[name] + (" (or reader.val_split)" if name == "val" else "")
    same_place = recorded.get("source") == now["source"]
    return (f"{key}: the run was trained on {recorded.get('source')} ({recorded.get('images')} images), now "
            f"{now['source']} ({now['images']} images)" + (", whose images or labels have changed" if same_place
                                                           else ""))
