"""What a schedule builds, and in what order: the inputs alone, the model alone, or everything for training."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import compose, one_device, train_here
from worklab.config.schedules import TestSchedule
from worklab.interrupt import StopRequest
from worklab.run.inputs import RunInputs
from worklab.run.parts import Parts
from worklab.run.run_config import load_run_config
from worklab.run.runfolder import RunFolder


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, data_dir, small_network):
    """A run with checkpoints at steps 2 and 4 and a best.json that names step 2, as patience leaves one."""
    run = train_here(tmp_path_factory.mktemp("order") / "run", data_dir,
                     ["schedule=train", "schedule.steps=4", "schedule.save_every=2", *small_network])
    (run / "best.json").write_text(json.dumps({"step": 2, "loss": 1.0}))
    return run


def reading(run):
    return Parts(load_run_config(run, TestSchedule()), StopRequest(), one_device())


def test_inference_weights_build_the_model_and_a_reading_session_alone(two_checkpoints):
    parts = reading(two_checkpoints)
    assert parts.restore_for_inference() == 2
    assert {"model", "session"} <= set(vars(parts))
    assert not {"optimizers", "trainer", "tester", "validator"} & set(vars(parts))
    assert not {"train_images", "_listed_train", "_train_entries"} & set(vars(parts.inputs))


def test_the_one_door_takes_the_best_step_for_export_and_the_latest_for_a_test(two_checkpoints):
    assert reading(two_checkpoints).restore_for_inference() == 2
    assert reading(two_checkpoints).restore_for_inference(default="latest") == 4
    assert reading(two_checkpoints).restore_for_inference(4) == 4


def test_a_best_step_whose_checkpoint_is_gone_is_refused_naming_the_steps_there_are(two_checkpoints, tmp_path):
    from worklab.errors import UserError

    (tmp_path / "best.json").write_text(json.dumps({"step": 3, "loss": 1.0}))
    parts = reading(two_checkpoints)
    parts.folder = RunFolder(tmp_path)  # best.json from elsewhere, the checkpoints of the run
    with pytest.raises(UserError, match=r"names step 3, whose checkpoint is gone \(checkpoints: \[2, 4\]\)"):
        parts.restore_for_inference()


def test_the_inputs_are_read_without_tensorflow(tmp_path, data_dir):
    """bit's HyperRule settles the run's settings from them before TensorFlow builds anything."""
    inputs = RunInputs(compose([], tmp_path / "run", data_dir), RunFolder(tmp_path / "run"))
    assert len(inputs.train_images) == 40 and len(inputs.classes) == 10
    probe = "import sys, worklab.run.inputs; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
