"""An exported file (model.keras, a .tflite, model.onnx) as predict's classifier: encoded files in, top-k out.

So a user checks the exact file they ship: the file is loaded as export's checks load it
(worklab.serve.formats), the images are decoded and resized as the Tester's input is
(`export.decoded`, with the run's image_size and resize from export.json beside the
file), and the outputs are those of the SavedModel's signatures: probabilities, the top
k classes, their labels and scores. The class names, k and the resize come from that
export.json, so a file without one beside it is refused, as is a file whose input size
is not the export's image_size (a file from another export copied in).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from worklab.errors import UserError
from worklab.serve.formats import for_file


def from_file(path: Path, key: str) -> Tuple[Callable, List[str], Dict]:
    """(classify: encoded files -> outputs as numpy, the class names, what it is for the records)."""
    import tensorflow as tf

    from worklab.config.reader import ReaderConfig
    from worklab.serve.export import decoded

    kind = for_file(path, key)
    info_file = path.parent / "export.json"
    if not info_file.is_file():
        raise UserError(f"{key}={path}: no export.json beside it, which holds the class names and the resize the "
                        "file was exported with. Pass the file in its export folder (RUN/export/step-N).")
    info = json.loads(info_file.read_text())
    try:
        model = kind.load(path)
    except Exception as error:  # what a damaged or foreign file raises varies with its runtime
        raise UserError(f"{key}={path} cannot be loaded as {kind.name} ({error.__class__.__name__}: "
                        f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}).") from None
    size = info["image_size"]
    if tuple(model.input_size) != (size, size):
        height, width = model.input_size
        raise UserError(f"{key}={path} takes {height}x{width} images, but the images are resized to {size}x{size} "
                        f"(image_size in {info_file}): pass the file exported with that export.json.")
    reading = ReaderConfig(image_size=size, resize=info["resize"]["mode"],
                           **{k: v for k, v in info["resize"].items() if k != "mode"})
    resize = tf.function(lambda images: decoded(images, reading))
    names = np.array([name.encode() for name in info["classes"]], dtype=object)
    k = info["top_k"]

    def classify(images) -> Dict[str, np.ndarray]:
        probabilities = model(resize(images).numpy())
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return {"probabilities": probabilities, "classes": top, "labels": names[top],
                "scores": np.take_along_axis(probabilities, top, 1)}

    return classify, list(info["classes"]), {"model": str(path), "format": kind.name}
