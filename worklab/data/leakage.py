"""Copies of one image across and within the training, validation and test lists, found before step 1.

A test image that is also a training image, re-encoded, resized or mirrored, makes the
test score a memory score; the same image under two labels teaches the network nothing
but noise. The image check hashes every file (worklab.data.imagehash); here the hashes
are compared: equal content hashes are an `exact` pair (distance 0), perceptual hashes
at most NEAR_BITS of their 256 bits apart (either image mirrored) a `near` one.

What is done about copies across lists is reader.leakage: `warn` logs one line, `refuse`
stops before step 1 naming the key, `drop` removes the held-out side's copy (the test
image of a test-training or test-validation pair, the validation image of a
validation-training pair). Copies within a list, and images under two labels, are
reported, never dropped or refused: they do not make a score dishonest. The pairs go to
leakage.json in the run folder; the lists' fingerprints (lists.json) stay those of the
lists as given, so a run resumed with another reader.leakage trains on the same data.

Every pair of images is compared, in blocks of one matrix product each: quadratic in the
number of images (bench/image_check.py measures it).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np

from worklab.data.imagelist import SHOWN, ImageList
from worklab.errors import UserError

log = logging.getLogger(__name__)

NEAR_BITS = 40  # copies measured 10-38 apart (JPEG quality 20, resized to 1/4, mirrored); distinct photos 94+
ORDER = ("train", "val", "test")  # a copy in a later list of an image in an earlier one is the held-out side's
NAMES = {"train": "training", "val": "validation", "test": "test"}
WRITTEN = 2000  # pairs listed in leakage.json at most (counts always complete): under the 1 MiB runfolder.SMALL
#                a refused command's snapshot puts back whole
BLOCK = 1 << 22  # hash comparisons held in memory at once


def find_pairs(lists: Dict[str, ImageList], classes: List[str]) -> List[Dict]:
    """Every exact and near pair among the images of `lists` (name -> checked list), closest first.

    A path listed twice in one list is not a pair (the list check already warns of it).
    """
    rows = [(name, path, label) for name in ORDER if lists.get(name) is not None
            for path, label in zip(lists[name].paths, lists[name].labels) if path in lists[name].hashes]
    hashes = [lists[name].hashes[path] for name, path, _ in rows]
    distances = {**_near(hashes), **_exact(hashes)}
    pairs = []
    for (i, j), distance in distances.items():
        (list_a, path_a, label_a), (list_b, path_b, label_b) = rows[i], rows[j]
        if list_a == list_b and path_a == path_b:
            continue
        pairs.append({"a": {"path": path_a, "list": list_a, "label": classes[label_a]},
                      "b": {"path": path_b, "list": list_b, "label": classes[label_b]},
                      "kind": "exact" if hashes[i][0] == hashes[j][0] else "near", "distance": distance})
    return sorted(pairs, key=lambda p: (p["distance"], p["a"]["path"], p["b"]["path"]))


def _exact(hashes: List[tuple]) -> Dict[tuple, int]:
    """(i, j) -> 0 for every pair i < j of equal content hashes."""
    groups = defaultdict(list)
    for i, (content, _, _) in enumerate(hashes):
        groups[content].append(i)
    return {(a, b): 0 for rows in groups.values() for n, a in enumerate(rows) for b in rows[n + 1:]}


def _near(hashes: List[tuple]) -> Dict[tuple, int]:
    """(i, j) -> bits apart for every pair i < j of perceptual hashes at most NEAR_BITS apart, either mirrored.

    With the bits as +1/-1, two hashes of n bits that differ in d agree in n - d, so their
    dot product is n - 2d: every pair's distance comes from one matrix product per block
    (BLAS), many times quicker than counting bits pair by pair.
    """
    rows = [i for i, (_, plain, _) in enumerate(hashes) if plain is not None]
    if len(rows) < 2:
        return {}
    plain, mirror = (np.unpackbits(np.array([np.frombuffer(bytes.fromhex(hashes[i][which]), np.uint8) for i in rows]),
                                   axis=1).astype(np.float32) * 2 - 1 for which in (1, 2))
    bits = plain.shape[1]
    found = {}
    step = max(1, BLOCK // len(rows))
    for start in range(0, len(rows), step):
        block = plain[start:start + step]  # against itself and every later hash: each pair once
        agree = np.maximum(block @ plain[start:].T, block @ mirror[start:].T)
        distance = np.rint((bits - agree) / 2).astype(np.int64)
        for a, b in zip(*np.nonzero(distance <= NEAR_BITS)):
            if a < b:
                found[(rows[start + a], rows[start + b])] = int(distance[a, b])
    return found


def held_out_copies(pairs: List[Dict]) -> Dict[str, Dict[str, str]]:
    """For val and test: path -> 'exact' or 'near', its images with a copy in an earlier list."""
    copies: Dict[str, Dict[str, str]] = {"val": {}, "test": {}}
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        if a["list"] != b["list"]:
            seen = copies[b["list"]]
            if seen.get(b["path"]) != "exact":
                seen[b["path"]] = pair["kind"]
    return copies


def summary(pairs: List[Dict], lists: Dict[str, ImageList]) -> str:
    """The one log line: held-out images that copy earlier lists, copies within lists, images under two labels."""
    parts = []
    for name, copies in held_out_copies(pairs).items():
        if copies:
            exact = sum(kind == "exact" for kind in copies.values())
            earlier = " or ".join(NAMES[n] for n in ORDER[:ORDER.index(name)] if lists.get(n) is not None)
            parts.append(f"{len(copies)} {NAMES[name]} images duplicate {earlier} images: {exact} exact, "
                         f"{len(copies) - exact} near")
    within = sum(p["a"]["list"] == p["b"]["list"] for p in pairs)
    if within:
        parts.append(f"{within} duplicate pairs within a list")
    conflicts = sum(p["a"]["label"] != p["b"]["label"] for p in pairs)
    if conflicts:
        parts.append(f"{conflicts} pairs of copies under two labels")
    if not parts:
        sizes = ", ".join(f"{len(lists[n])} {NAMES[n]}" for n in ORDER if lists.get(n) is not None)
        return f"no duplicate images among {sizes} images"
    return "; ".join(parts) + "; see leakage.json"


def guard(policy: str, lists: Dict[str, Optional[ImageList]], classes: List[str], folder) -> Dict[str, ImageList]:
    """Find the copies among `lists`, record them in `folder` (a RunFolder, when this process may write it),
    act on reader.leakage=`policy`; return the lists, the held-out copies removed with `drop`.

    `off` skips the search, whose time grows with the square of the number of images (about
    10 s for 20,000 on two cores, hours for a million): for lists checked some other way.
    """
    lists = {name: images for name, images in lists.items() if images is not None}
    if policy == "off":
        log.info("leakage: not checked (reader.leakage=off)")
        return lists
    pairs = find_pairs(lists, classes)
    line = summary(pairs, lists)
    copies = held_out_copies(pairs)
    leaking = sum(len(c) for c in copies.values())
    if leaking and policy == "refuse":
        across = [p for p in pairs if p["a"]["list"] != p["b"]["list"]][:SHOWN]
        shown = "; ".join(f"{p['b']['path']} ({p['b']['list']}) is a {p['kind']} copy of {p['a']['path']} "
                          f"({p['a']['list']})" for p in across)
        raise UserError(f"reader.leakage=refuse: {line.removesuffix('; see leakage.json')}, e.g. {shown}. "
                        "Remove the copies from the held-out lists, or pass reader.leakage=drop to leave them out "
                        "of validation and testing, or reader.leakage=warn.")
    kept = dict(lists)
    if leaking and policy == "drop":
        kept.update({name: _without(lists[name], set(copies[name])) for name in copies if name in lists})
    record = {"policy": policy, "near_bits": NEAR_BITS, "images": {n: len(i) for n, i in lists.items()},
              "dropped": {n: len(lists[n]) - len(kept[n]) for n in copies if n in lists},
              "pairs_found": len(pairs), "pairs": pairs[:WRITTEN]}
    if folder.writable and folder.read("leakage.json") != record:
        folder.write("leakage.json", record)
    (log.warning if pairs else log.info)("leakage: %s", line)
    if leaking and policy == "drop":
        log.warning("reader.leakage=drop: left out %s", ", ".join(
            f"{record['dropped'][n]} of {len(lists[n])} {NAMES[n]} images" for n in record["dropped"]))
    return kept


def _without(images: ImageList, paths: set) -> ImageList:
    """`images` less `paths`; refused when nothing would be left to evaluate."""
    rows = [i for i, path in enumerate(images.paths) if path not in paths]
    if not rows:
        raise UserError(f"reader.leakage=drop: every image of {images.source} is a copy of an image it is held out "
                        "from, so nothing is left to evaluate on: give a list of other images, or reader.leakage=warn.")
    return images.subset(rows)
