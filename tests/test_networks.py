"""worklab.model.networks: every kind gets the same variable paths in every build, which its checkpoints are
keyed by."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keras

from conftest import ROOT, compose
from worklab.model import networks

EFFICIENTNET = ["network=applications", "network.arch=EfficientNetB0", "reader.image_size=32"]

PATHS = """
import json, sys
sys.path[:0] = [sys.argv[1] + "/tests", sys.argv[1]]
from pathlib import Path
from conftest import compose
from worklab.model import networks
cfg = compose(json.loads(sys.argv[2]), Path("run"), Path("data"))
print(json.dumps([v.path for v in networks.build(cfg, 3).variables]))
"""


def test_a_network_has_the_same_variable_paths_in_a_fresh_process_and_after_other_builds(tmp_path):
    cfg = compose(EFFICIENTNET, tmp_path / "run", tmp_path)
    keras.layers.Normalization()  # takes the name a first build in a fresh process would get
    keras.Sequential([keras.Input((4,)), keras.layers.Normalization(), keras.layers.Dense(2)])
    here = [v.path for v in networks.build(cfg, 3).variables]
    again = [v.path for v in networks.build(cfg, 3).variables]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    fresh = subprocess.run([sys.executable, "-c", PATHS, str(ROOT), json.dumps(EFFICIENTNET)], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert here == again == json.loads(fresh.stdout.splitlines()[-1])
    assert "normalization/mean" in here  # the automatic name, counted from zero
