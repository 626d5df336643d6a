"""Export wall time: schedule=export against Keras' own SavedModel export of the same network.

What it measures (seconds, median of interleaved rounds), on one run folder made first with
`python run.py schedule=train schedule.steps=1` (ResNet-18 width 1 at --size px, 10 classes):
  * "worklab export, all formats": `python run.py schedule=export resume=RUN
    'schedule.formats=[saved_model,keras,tflite]' schedule.quantize=dynamic`, the whole process
    (start-up, TensorFlow import, building the network, restoring the checkpoint, every file);
  * "worklab export, SavedModel": the same with `schedule.formats=[saved_model]`;
  * "keras model.export": a process that imports TensorFlow, builds the same network, restores the
    same checkpoint through worklab's Session and calls Keras' `model.export(path)` (a SavedModel
    of the bare network: no decoding, resizing, normalisation or class names). The baseline.
The "in the export" column is what schedule=export logs for its own work ("exported step N ...
in S"), without start-up and restore.

Run from the repository root:
    python bench/export_time.py               # about 4 minutes at 224 px
    python bench/export_time.py --quick       # 64 px, 2 rounds
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

RUN_PY = str(common.REPO / "run.py")
KERAS_EXPORT = r"""
import sys
from pathlib import Path
from worklab import runtime
from worklab.config.runtime import RuntimeConfig
from worklab.config.schedules import TestSchedule
tf = runtime.configure(RuntimeConfig(), 0)
from worklab.run.parts import Parts
from worklab.run.run_config import load_run_config
parts = Parts(load_run_config(Path(sys.argv[1]), TestSchedule()), None, tf.distribute.get_strategy())
parts.restore_for_inference(default="latest")
parts.model.export(sys.argv[2], verbose=False)
"""


def run_folder(folder: Path, size: int) -> Path:
    run = folder / "run"
    train_json, test_json = common.demo_set()
    args = [sys.executable, RUN_PY, "reader=json", f"reader.train={train_json}", f"reader.test={test_json}",
            f"reader.image_size={size}", "reader.batch_size=8", "schedule=train", "schedule.steps=1",
            f"hydra.run.dir={run}"]
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return run


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def timed(args, cwd: Path, inside: dict, name: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"exported step \d+ to .* in ([\d.]+)s", done.stdout)
    if found:
        inside.setdefault(name, []).append(float(found.group(1)))
    return seconds


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--size", type=int, default=None))
    size = args.size or (64 if args.quick else 224)
    rounds = args.rounds or (2 if args.quick else 3)
    common.print_header("export_time: schedule=export vs keras model.export", args,
                        {"network": "resnet18 width 1", "image_size": size, "rounds": rounds})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run = run_folder(folder, size)
        inside: dict = {}
        export = [sys.executable, RUN_PY, "schedule=export", f"resume={run}"]
        contenders = [
            ("worklab export, all formats", lambda: timed(
                [*export, "schedule.formats=[saved_model,keras,tflite]", "schedule.quantize=dynamic"], folder,
                inside, "worklab export, all formats")),
            ("worklab export, SavedModel", lambda: timed(
                [*export, "schedule.formats=[saved_model]"], folder, inside, "worklab export, SavedModel")),
            ("keras model.export", lambda: timed(
                [sys.executable, "-c", KERAS_EXPORT, str(run), str(folder / "keras_export")], folder, inside,
                "keras model.export")),
        ]
        results = common.interleave(contenders, rounds)
    base = common.median(results["keras model.export"])
    common.table(["contender", "seconds (median)", "rounds min-max", "in the export", "vs keras model.export"],
                 [[name, common.median(values), common.spread(values),
                   f"{common.median(inside[name]):.1f}" if name in inside else "-", common.ratio(common.median(values), base)]
                  for name, values in results.items() if not name.startswith("_")])
    print(common.others_summary(results))


if __name__ == "__main__":
    main()
