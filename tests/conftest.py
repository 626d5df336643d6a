"""Shared fixtures: the real config composed through Hydra and shrunk to a few CPU steps on tiny data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from worklab.config.schedules import SCHEDULES

ROOT = Path(__file__).resolve().parents[1]

# A demo set of 10 classes x 4 training images at 16 px and a ResNet-10 of width 1/8:
# a full run.py job takes seconds on 2 CPU cores.
TINY = [
    "reader.image_size=16", "reader.batch_size=8",
    "reader.demo.image_size=16", "reader.demo.train_per_class=4", "reader.demo.test_per_class=3",
    "network.depth=10", "network.width=0.125",
    "schedule.log_every=2", "schedule.save_every=4",
]
READING = tuple(f"schedule={kind.name}" for kind in SCHEDULES if not kind.trains)  # no training cadence


def tiny(overrides: List[str]) -> List[str]:
    """TINY, less the keys the chosen parts do not read: the training cadence for a schedule that does not
    train, the ResNet's size for a network that is not worklab's ResNet."""
    reads = any(o in READING for o in overrides)
    keras = any(o in ("network=keras", "network=applications", "network=saved_model") for o in overrides)
    return [o for o in TINY if not (reads and o.startswith(("schedule.log_every", "schedule.save_every")))
            and not (keras and o.startswith(("network.depth", "network.width")))]
STAGES = "schedule.stages=[{lr: 0.05, steps: 4}, {lr: 0.005, steps: 2}]"  # for the default fixed schedule


def one_device():
    """The strategy of runtime.strategy=default: one device, one replica (what Parts and Tester are given)."""
    import tensorflow as tf

    return tf.distribute.get_strategy()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder for the whole session, so the tiny demo set is drawn once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir) -> Path:
    """A run folder of two default steps, shared by the session's cases that refuse to touch it."""
    return train_here(tmp_path_factory.mktemp("trained") / "run", data_dir, ["schedule=train", "schedule.steps=2"])


@pytest.fixture(scope="session")
def small_network(tmp_path_factory) -> List[str]:
    """network=keras on a model file of two convolutions with a batch norm between them, to which worklab adds its
    head: for cases about the run rather than the network. Its 10 variables (the ResNet-10's: 62) trace, step
    and save in a fraction of the ResNet's time. It takes any image size, as the ResNet does (bit settles its own)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    path = tmp_path_factory.mktemp("small") / "small.keras"
    keras.Model(inputs, keras.layers.Dense(3, name="old_head")(x), name="small").save(path)
    return ["network=keras", f"network.path={path}"]


def train_here(run: Path, data_dir: Path, overrides: List[str]) -> Path:
    """Train `run` in this process and save the .hydra/ files run.py would, so `resume=RUN` reads it as a run.

    Cheaper than run_py by a TensorFlow start. The config is saved with run_dir resolved, and the lock is let go
    as at the end of run.py's process, so that other processes may train the run.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from worklab import app
    from worklab.hydra_edge import to_plain
    from worklab.run import runfolder

    given = [*tiny(overrides), f"data_dir={data_dir}", *overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        raw = hydra_compose("config", overrides=[*given, f"run_dir={run}"])
    try:
        app.run(to_plain(raw))
    finally:
        runfolder.release(run)
    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(raw, run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(given), run / ".hydra" / "overrides.yaml")
    return run


def compose(overrides: List[str], run_dir: Path, data: Path):
    """The real config from conf/, with overrides, as the plain objects worklab takes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from worklab.hydra_edge import to_plain

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*tiny(overrides), f"data_dir={data}", f"run_dir={run_dir}",
                                                 *overrides])
    return to_plain(cfg)


def run_py(args: List[str], cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` from `cwd` and capture its output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True, **kwargs)
