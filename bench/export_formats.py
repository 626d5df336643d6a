"""Export formats: file size, latency at batch 1, throughput at batch 32, and each file's check, on this CPU.

What it measures, on one run folder made first (`python run.py schedule=train` for --steps
steps on the bench demo set, ResNet-18 width 1 at --size px, 10 classes) and exported once
with every format (`schedule.formats=[saved_model,keras,tflite,tflite_int8,onnx]
schedule.quantize=dynamic`):
  * size: the file (the saved_model folder's files together);
  * latency at batch 1: one resized image through the format's loader (worklab.serve.formats:
    the SavedModel's serving_resized, model.keras in Keras, the TFLite files in LiteRT with
    the interpreter's default threads, model.onnx in onnxruntime's CPU provider), median and
    90th percentile of --calls calls after a warm-up;
  * throughput at batch 32: images per second over --calls batches of 32;
  * agreement and accuracy: export.json's "checks", computed by the export on the run's test
    set against the SavedModel.
The formats are timed in turn within each round (interleaved), so a drift in the machine's
load falls on all of them; the numbers are medians over the rounds.

Run from the repository root:
    python bench/export_formats.py            # about 3 minutes
    python bench/export_formats.py --quick    # 32 px, fewer calls
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository root on sys.path)
from export_time import RUN_PY, _env  # noqa: E402

FORMATS = "schedule.formats=[saved_model,keras,tflite,tflite_int8,onnx]"


def trained_run(folder: Path, size: int, steps: int) -> Path:
    run = folder / "run"
    train_json, test_json = common.demo_set()
    done = subprocess.run([sys.executable, RUN_PY, "reader=json", f"reader.train={train_json}",
                           f"reader.test={test_json}", f"reader.image_size={size}", "reader.batch_size=16",
                           "schedule=train", f"schedule.steps={steps}", f"schedule.save_every={steps}",
                           f"hydra.run.dir={run}"], cwd=folder, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, RUN_PY, "schedule=export", f"resume={run}", FORMATS,
                           "schedule.quantize=dynamic"], cwd=folder, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return next((run / "export").glob("step-*"))


def seconds_per_call(model, pixels: np.ndarray, calls: int) -> list:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model(pixels)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    def extra(parser):
        parser.add_argument("--size", type=int, default=None)
        parser.add_argument("--steps", type=int, default=200)
        parser.add_argument("--calls", type=int, default=None)

    args = common.arguments(__doc__, extra)
    size = args.size or (32 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 3)
    calls = args.calls or (10 if args.quick else 40)
    common.print_header("export_formats: each format's size, latency, throughput and check", args,
                        {"network": "resnet18 width 1", "image_size": size, "steps": args.steps, "rounds": rounds,
                         "calls": calls})
    from worklab.serve.formats import FORMATS as TABLE
    from worklab.serve.litert import runtime

    with tempfile.TemporaryDirectory() as tmp:
        export = trained_run(Path(tmp), size, args.steps)
        info = json.loads((export / "export.json").read_text())
        models = {name: TABLE[name].load(export / TABLE[name].file) for name in info["checks"]}
        sizes = {name: sum(p.stat().st_size for p in (export / TABLE[name].file).rglob("*") if p.is_file())
                 if (export / TABLE[name].file).is_dir() else (export / TABLE[name].file).stat().st_size
                 for name in models}
        pixels = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype(np.float32)
        latency = {name: [] for name in models}
        throughput = {name: [] for name in models}
        for name, model in models.items():  # warm-up: the first calls trace, allocate and pick kernels
            seconds_per_call(model, pixels[:1], 3)
            seconds_per_call(model, pixels, 2)
        for _ in range(rounds):
            for name, model in models.items():
                latency[name] += seconds_per_call(model, pixels[:1], calls)
                throughput[name].append(32 * calls / sum(seconds_per_call(model, pixels, calls)))
    checked = info["checks"]["saved_model"]
    print(f"TFLite runtime: {runtime()}; onnx opset {info['onnx_opset']}; checks on the {checked['set']} set, "
          f"{checked['count']} images")
    common.table(["format", "file", "size (MB)", "latency b1 median (ms)", "latency b1 p90 (ms)",
                  "throughput b32 (img/s)", "agreement", "accuracy", "max_abs_diff"],
                 [[name, TABLE[name].file, sizes[name] / 1e6, 1e3 * float(np.median(latency[name])),
                   1e3 * float(np.percentile(latency[name], 90)), common.median(throughput[name]),
                   info["checks"][name]["agreement"], info["checks"][name]["accuracy"],
                   f"{info['checks'][name]['max_abs_diff']:.2e}"] for name in models])


if __name__ == "__main__":
    main()
