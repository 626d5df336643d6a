"""Temperature scaling: the fit lowers the NLL of the set it is fitted on; schedule=calibrate refuses bad runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import log_softmax

from conftest import one_device, run_py, train_here
from worklab.run import runfolder
from worklab.train import temperature


def test_the_fitted_temperature_lowers_the_nll_of_its_set_and_finds_the_overconfidence():
    rng = np.random.default_rng(0)
    honest = rng.normal(scale=1.5, size=(400, 5))
    labels = np.array([rng.choice(5, p=np.exp(row)) for row in log_softmax(honest, axis=1)])
    overconfident = log_softmax(honest * 3.0, axis=1)  # the network's logits three times too large
    fitted = temperature.fit(labels, overconfident)
    assert temperature.nll(labels, temperature.scaled(overconfident, fitted)) < temperature.nll(labels, overconfident)
    assert fitted == pytest.approx(3.0, rel=0.2)
    assert temperature.scaled(overconfident, fitted).argmax(axis=1).tolist() == overconfident.argmax(axis=1).tolist()


def test_the_tester_evaluates_softmax_of_the_logits_divided_by_the_temperature():
    import keras
    import tensorflow as tf

    from worklab.train.tester import Tester

    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(12, 3)).astype("float32")
    labels = rng.integers(0, 3, size=12).astype("int32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False, kernel_initializer="identity")(inputs))
    tester = Tester(model, tf.data.Dataset.from_tensor_slices((logits, labels)).batch(5), 12, 5, top_k=1,
                    strategy=one_device())
    stats = tester.evaluate(temperature=2.5)
    hand = log_softmax(logits.astype(np.float64) / 2.5, axis=1)
    assert stats["loss"] == pytest.approx(-hand[np.arange(12), labels].mean(), rel=1e-5)
    assert stats["worst"][0]["probability"] == pytest.approx(np.exp(hand[stats["worst"][0]["index"]]).max(), rel=1e-5)


def test_a_temperature_applies_to_the_step_it_was_fitted_for_only(tmp_path):
    folder = runfolder.RunFolder(tmp_path)
    assert folder.temperature(500) == 1.0
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 1.7, "step": 500}))
    assert folder.temperature(500) == 1.7 and folder.temperature(400) == 1.0


def contents(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_calibrate_is_refused_on_a_run_without_validation_and_on_a_run_being_trained(trained, tmp_path):
    before = contents(trained)
    result = run_py(["schedule=calibrate", f"resume={trained}"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert "reader.val and reader.val_split are unset" in result.stdout + result.stderr
    assert contents(trained) == before

    runfolder.lock(trained)  # this process stands for a schedule training the run
    try:
        held = contents(trained)
        result = run_py(["schedule=calibrate", f"resume={trained}"], tmp_path)
        assert result.returncode != 0 and "is in use by process" in result.stdout + result.stderr
        assert contents(trained) == held
    finally:
        runfolder.release(trained)


@pytest.mark.slow
def test_calibrate_writes_the_temperature_of_a_run_with_a_validation_set(tmp_path, data_dir):
    run = train_here(tmp_path / "run", data_dir, ["schedule=train", "schedule.steps=2", "reader.val_split=0.25"])
    result = run_py(["schedule=calibrate", f"resume={run}"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((run / "calibration.json").read_text())
    assert record["set"] == "val" and record["count"] == 10 and record["step"] == 2  # 1 of 4 per class, 10 classes
    assert record["temperature"] > 0 and record["nll_after"] <= record["nll_before"]
    tested = run_py(["schedule=test", f"resume={run}", f"hydra.run.dir={tmp_path / 'job'}"], tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    evaluation = json.loads((tmp_path / "job" / "evaluations" / "step-000002.json").read_text())
    assert evaluation["temperature"] == record["temperature"]
    exported = run_py(["schedule=export", f"resume={run}", f"hydra.run.dir={tmp_path / 'export'}",
                       "schedule.formats=[saved_model,keras]"], tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    info = json.loads(next((run / "export").glob("step-*/export.json")).read_text())
    assert info["temperature"] == record["temperature"] and info["checks"]["keras"]["agreement"] == 1.0
