"""TensorFlow starts inside the job, after runtime.configure: the checks before Hydra never import it.

Threads, logical CPU devices and GPU memory growth can only be set before TensorFlow's
context starts, and oneDNN only before its import; command.prepare runs before any of
them, for every network kind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import pytest

from conftest import ROOT, run_py, tiny

SIZE = 16  # conftest's TINY image size


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A tiny network file of each kind that reads one: a Keras model, an HDF5 weight file, a SavedModel."""
    root = tmp_path_factory.mktemp("networks")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs))
    body = keras.Model(inputs, features)
    body.save(root / "body.keras")
    body.export(str(root / "extractor"), verbose=False)
    with h5py.File(root / "mobilenet.weights.h5", "w") as weights:  # before Hydra only its HDF5 header is read
        weights.create_dataset("conv/kernel", data=[0.0])
    return root


NETWORKS = {
    "resnet": ["network=resnet"],
    "keras": ["network=keras", "network.path={root}/body.keras"],
    "applications": ["network=applications", "network.arch=MobileNetV3Small", "reader.image_size=32",
                     "network.weights={root}/mobilenet.weights.h5"],  # MobileNetV3Small's smallest input
    "saved_model": ["network=saved_model", "network.path={root}/extractor"],
}


@pytest.mark.parametrize("kind", NETWORKS)
def test_prepare_does_not_import_tensorflow(files, tmp_path, kind):
    overrides = [o.format(root=files) for o in NETWORKS[kind]]
    argv = ["run.py", *tiny(overrides), *overrides, "schedule=train", f"hydra.run.dir={tmp_path / 'run'}"]
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from worklab import command

        command.prepare({argv!r}, Path({str(ROOT / "conf")!r}))
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_a_saved_model_run_takes_the_runtime_settings(files, tmp_path, data_dir):
    run = tmp_path / "run"
    overrides = ["network=saved_model", f"network.path={files / 'extractor'}"]
    done = run_py([*tiny(overrides), *overrides, "runtime.intra_op_threads=1", "schedule=train", "schedule.steps=2",
                   f"data_dir={data_dir}", f"hydra.run.dir={run}"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["step"] == 2
    assert "threads 1/auto" in (run / "run.log").read_text()


def test_an_endpoint_the_saved_model_lacks_is_refused_in_the_job_and_undone(files, tmp_path, data_dir):
    """Checked when the network is built: what the job wrote is put back, and the refusal marked in summary.json."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("kept")
    overrides = ["network=saved_model", f"network.path={files / 'extractor'}", "network.endpoint=predict"]
    done = run_py([*tiny(overrides), *overrides, "schedule=train", "schedule.steps=2", f"data_dir={data_dir}",
                   f"hydra.run.dir={run}"], tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said[-3000:]
    assert "network.endpoint=predict is not a function of the SavedModel" in said
    assert "Traceback" not in said
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "summary.json"]
    assert (run / "notes.txt").read_text() == "kept"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("network.endpoint=predict")
