"""Shipped restore mappings against checkpoints written here in each scheme's own names and shapes."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from worklab.config import NetworkConfig, RestoreConfig, to_plain
from worklab.errors import UserError
from worklab.network import build_resnet
from worklab.restore import restore

pytestmark = pytest.mark.slow

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BN = ("beta", "gamma", "moving_mean", "moving_variance")


def ry_scheme(depth: int) -> Dict[str, Tuple[int, ...]]:
    """ry/tensorflow-resnet's TF1 variable names and shapes for an ImageNet ResNet of `depth`."""
    shapes = {"scale1/weights": (7, 7, 3, 64), **{f"scale1/{p}": (64,) for p in BN}}
    channels = 64
    for stage, blocks in enumerate(BLOCKS[depth]):
        width, out = 64 * 2 ** stage, 256 * 2 ** stage
        for block in range(blocks):
            prefix = f"scale{stage + 2}/block{block + 1}"
            given = channels if block == 0 else out
            for unit, shape in (("a", (1, 1, given, width)), ("b", (3, 3, width, width)), ("c", (1, 1, width, out))):
                shapes[f"{prefix}/{unit}/weights"] = shape
                shapes.update({f"{prefix}/{unit}/{p}": (shape[-1],) for p in BN})
            if block == 0:
                shapes[f"{prefix}/shortcut/weights"] = (1, 1, given, out)
                shapes.update({f"{prefix}/shortcut/{p}": (out,) for p in BN})
        channels = out
    shapes.update({"fc/weights": (2048, 1000), "fc/biases": (1000,)})
    return shapes


def write_tf1(shapes: Dict[str, Tuple[int, ...]], prefix: Path) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    values = {name: rng.normal(size=shape).astype("float32") for name, shape in shapes.items()}
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, str(prefix))
    return values


def mapping(name: str, path: Path) -> RestoreConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"restore={name}", f"restore.path={path}", "run_dir=/unused",
                                           f"network.depth={name[-3:].lstrip('t')}"])
    return to_plain(cfg).restore


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_ry_mapping_restores_every_variable_of_its_scheme(tmp_path, depth):
    values = write_tf1(ry_scheme(depth), tmp_path / "ResNet.ckpt")
    model = build_resnet(NetworkConfig(depth=depth), 1000, 64)
    variables = {v.path: v for v in model.variables}
    restore(variables, mapping(f"ry_resnet{depth}", tmp_path / "ResNet.ckpt"), tmp_path / "report.json")
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert {row["status"] for row in report["variables"]} == {"restored"}
    assert report["unused_keys"] == []
    for row in report["variables"]:
        np.testing.assert_array_equal(variables[row["variable"]].numpy(), values[row["key"]])


def test_a_mapping_for_another_depth_fails_with_the_strict_message(tmp_path):
    write_tf1(ry_scheme(50), tmp_path / "ResNet.ckpt")
    model = build_resnet(NetworkConfig(depth=101), 1000, 64)
    cfg = mapping("ry_resnet50", tmp_path / "ResNet.ckpt")
    with pytest.raises(UserError, match=r"\d+ variable\(s\) cannot be restored.*stage3/block7/conv1/kernel -> "
                                        r"scale4/block7/a/weights \(missing\)"):
        restore({v.path: v for v in model.variables}, cfg, tmp_path / "report.json")
