"""Shipped restore mappings against checkpoints written here in each scheme's own names and shapes."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, compose
from worklab.config.network import NetworkConfig
from worklab.errors import UserError
from worklab.hydra_edge import to_plain
from worklab.model.resnet import build_resnet
from worklab.model.restore import restore
from worklab.run.session import model_key


BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BN = ("beta", "gamma", "moving_mean", "moving_variance")


def imagenet_convolutions(depth: int, scale: float = 1.0) -> Iterator[Tuple[int, int, int, Tuple[int, ...]]]:
    """(stage, block, conv, kernel shape) of every block convolution of an ImageNet bottleneck ResNet.

    conv is 1-3 along the block and 0 for the first block's projection shortcut; stages
    and blocks count from 0. Written from the published layout, not from worklab's builder;
    `scale` multiplies every channel count (a thinner network for a quick run).
    """
    channels = round(64 * scale)
    for stage, blocks in enumerate(BLOCKS[depth]):
        width, out = round(64 * 2 ** stage * scale), round(256 * 2 ** stage * scale)
        for block in range(blocks):
            given = channels if block == 0 else out
            yield stage, block, 1, (1, 1, given, width)
            yield stage, block, 2, (3, 3, width, width)
            yield stage, block, 3, (1, 1, width, out)
            if block == 0:
                yield stage, block, 0, (1, 1, given, out)
        channels = out


def ry_scheme(depth: int, scale: float = 1.0) -> Dict[str, Tuple[int, ...]]:
    """ry/tensorflow-resnet's TF1 variable names and shapes for an ImageNet ResNet of `depth`."""
    stem = round(64 * scale)
    shapes = {"scale1/weights": (7, 7, 3, stem), **{f"scale1/{p}": (stem,) for p in BN}}
    for stage, block, conv, shape in imagenet_convolutions(depth, scale):
        prefix = f"scale{stage + 2}/block{block + 1}/" + ("shortcut" if conv == 0 else "abc"[conv - 1])
        shapes.update({f"{prefix}/weights": shape, **{f"{prefix}/{p}": (shape[-1],) for p in BN}})
    shapes.update({"fc/weights": (round(2048 * scale), 1000), "fc/biases": (1000,)})
    return shapes


def slim_scheme(depth: int) -> Dict[str, Tuple[int, ...]]:
    """TF-slim resnet_v1's variable names and shapes (its model zoo checkpoints)."""
    scope = f"resnet_v1_{depth}"
    shapes = {f"{scope}/conv1/weights": (7, 7, 3, 64), **{f"{scope}/conv1/BatchNorm/{p}": (64,) for p in BN}}
    for stage, block, conv, shape in imagenet_convolutions(depth):
        unit = "shortcut" if conv == 0 else f"conv{conv}"
        prefix = f"{scope}/block{stage + 1}/unit_{block + 1}/bottleneck_v1/{unit}"
        shapes.update({f"{prefix}/weights": shape, **{f"{prefix}/BatchNorm/{p}": (shape[-1],) for p in BN}})
    shapes.update({f"{scope}/logits/weights": (1, 1, 2048, 1000), f"{scope}/logits/biases": (1000,)})
    return shapes


def keras_scheme() -> Dict[str, Tuple[int, ...]]:
    """Keras Applications ResNet50's weight file: layer/layer/weight:0, convolutions with biases."""
    def layer(name, kernel):
        out = kernel[-1]
        return {f"{name}_conv/{name}_conv/kernel:0": kernel, f"{name}_conv/{name}_conv/bias:0": (out,),
                **{f"{name}_bn/{name}_bn/{p}:0": (out,) for p in BN}}

    shapes = layer("conv1", (7, 7, 3, 64))
    for stage, block, conv, shape in imagenet_convolutions(50):
        shapes.update(layer(f"conv{stage + 2}_block{block + 1}_{conv}", shape))
    shapes.update({"predictions/predictions/kernel:0": (2048, 1000), "predictions/predictions/bias:0": (1000,)})
    return shapes


def random_values(shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.normal(size=shape).astype("float32") for name, shape in shapes.items()}


def write_h5(shapes: Dict[str, Tuple[int, ...]], path: Path) -> Dict[str, np.ndarray]:
    import h5py

    values = random_values(shapes)
    with h5py.File(path, "w") as h5:
        for name, value in values.items():
            h5[name] = value
    return values


def trainable_values(shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    """Values a network can be run with: kernels scaled by their fan-in, positive variances, gamma near 1."""
    rng = np.random.default_rng(0)
    values = {}
    for name, shape in shapes.items():
        value = rng.normal(size=shape) * (np.prod(shape[:-1]) ** -0.5 if len(shape) > 1 else 0.1)
        if name.endswith(("moving_variance", "gamma")):
            value = 1 + np.abs(value)
        values[name] = value.astype("float32")
    return values


def write_tf1(shapes: Dict[str, Tuple[int, ...]], prefix: Path, values=None) -> Dict[str, np.ndarray]:
    values = random_values(shapes) if values is None else values
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, str(prefix))
    return values


def composed(overrides):
    """The plain config composed from conf/ (so a mapping's `requires` is checked as in a run)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_plain(compose("config", overrides=[*overrides, "run_dir=/unused"]))


SCHEMES = {  # mapping -> (network overrides, writes the checkpoint and returns its values)
    "ry_resnet50": (["network.depth=50"], lambda d: write_tf1(ry_scheme(50), d / "ResNet-L50.ckpt")),
    "ry_resnet101": (["network.depth=101"], lambda d: write_tf1(ry_scheme(101), d / "ResNet-L101.ckpt")),
    "ry_resnet152": (["network.depth=152"], lambda d: write_tf1(ry_scheme(152), d / "ResNet-L152.ckpt")),
    "slim_resnet_v1_50": (["network.depth=50", "network.layout=slim"],
                          lambda d: write_tf1(slim_scheme(50), d / "resnet_v1_50.ckpt")),
    "slim_resnet_v1_101": (["network.depth=101", "network.layout=slim"],
                           lambda d: write_tf1(slim_scheme(101), d / "resnet_v1_101.ckpt")),
    "keras_resnet50": (["network.depth=50", "network.conv_bias=true"],
                       lambda d: write_h5(keras_scheme(), d / "resnet50_weights.h5")),
}
CHECKPOINT_FILE = {"ry_resnet50": "ResNet-L50.ckpt", "ry_resnet101": "ResNet-L101.ckpt",
                   "ry_resnet152": "ResNet-L152.ckpt", "slim_resnet_v1_50": "resnet_v1_50.ckpt",
                   "slim_resnet_v1_101": "resnet_v1_101.ckpt", "keras_resnet50": "resnet50_weights.h5"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCHEMES))
def test_shipped_mapping_restores_every_variable_of_its_scheme(tmp_path, name):
    import json

    network, write = SCHEMES[name]
    values = write(tmp_path)
    cfg = composed([f"restore={name}", f"restore.path={tmp_path / CHECKPOINT_FILE[name]}", *network])
    model = build_resnet(cfg.network, 1000, 64)
    variables = {v.path: v for v in model.variables}
    restore(variables, cfg.restore, tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert {row["status"] for row in report["variables"]} == {"restored"}
    assert report["unused_keys"] == []  # every tensor of the checkpoint found its variable
    for row in report["variables"]:
        np.testing.assert_array_equal(variables[row["variable"]].numpy().ravel(), values[row["key"]].ravel())


def test_a_mapping_for_other_network_settings_is_named_before_anything_starts():
    with pytest.raises(UserError, match=r"written for network.conv_bias=True, but network.conv_bias=False"):
        composed(["restore=keras_resnet50", "restore.path=x.h5", "network.depth=50"])


@pytest.mark.slow
def test_a_mapping_for_another_depth_fails_with_the_strict_message(tmp_path):
    write_tf1(ry_scheme(50), tmp_path / "ResNet.ckpt")
    model = build_resnet(NetworkConfig(depth=101), 1000, 64)
    cfg = composed(["restore=ry_resnet50", f"restore.path={tmp_path / 'ResNet.ckpt'}", "network.depth=50"]).restore
    with pytest.raises(UserError, match=r"\d+ variable\(s\) cannot be restored.*stage3/block7/conv1/kernel -> "
                                        r"scale4/block7/a/weights \(missing\)"):
        restore({v.path: v for v in model.variables}, cfg, tmp_path / "report.json")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ry_resnet50", "slim_resnet_v1_50"])
def test_shipped_mapping_starts_a_head_for_other_classes_fresh_without_restore_skip(tmp_path, name):
    """ImageNet's 1000-class head against our 10 classes: the head starts fresh, the rest restores."""
    import json

    network, write = SCHEMES[name]
    values = write(tmp_path)
    cfg = composed([f"restore={name}", f"restore.path={tmp_path / CHECKPOINT_FILE[name]}", *network])
    model = build_resnet(cfg.network, 10, 64)
    variables = {v.path: v for v in model.variables}
    fresh = variables["head/kernel"].numpy().copy()
    restore(variables, cfg.restore, tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["variable"]: row for row in report["variables"]}
    for head in ("head/kernel", "head/bias"):
        assert rows[head]["status"] == "skipped", head
        assert rows[head]["reason"] == "class count: checkpoint 1000, ours 10", head
    assert sorted(report["unused_keys"]) == sorted(rows[head]["key"] for head in ("head/kernel", "head/bias"))
    np.testing.assert_array_equal(variables["head/kernel"].numpy(), fresh)
    assert {row["status"] for v, row in rows.items() if not v.startswith("head/")} == {"restored"}
    for row in report["variables"]:
        if row["status"] == "restored":
            np.testing.assert_array_equal(variables[row["variable"]].numpy().ravel(), values[row["key"]].ravel())


def test_a_run_starts_from_a_shipped_mapping_with_its_input_scaling(tmp_path, data_dir, caplog):
    """restore=ry_resnet50 through app.run, at 1/8 of the width: a checkpoint in ry's TF1 names with ImageNet's
    1000-class head restores every variable of the 10-class run but the head, which starts fresh, and the network
    takes ry's inputs (BGR less ry's means). The backbone is frozen, so the run's own checkpoint holds the
    checkpoint's values bit for bit."""
    import json
    import logging

    from worklab import app

    shapes = ry_scheme(50, 0.125)
    values = write_tf1(shapes, tmp_path / "ResNet-L50.ckpt", trainable_values(shapes))
    run = tmp_path / "run"
    caplog.set_level(logging.INFO)
    app.run(compose(["schedule=train", "schedule.steps=1", "restore=ry_resnet50",
                     f"restore.path={tmp_path / 'ResNet-L50.ckpt'}", "network.depth=50",
                     "network.lr_mult=[{pattern: '^(stem|stage)', mult: 0}]"], run, data_dir))
    assert "input preprocessing: ry" in caplog.text
    rows = {row["variable"]: row for row in json.loads((run / "restore_report.json").read_text())["variables"]}
    assert {row["status"] for name, row in rows.items() if not name.startswith("head/")} == {"restored"}
    assert {rows[head]["reason"] for head in ("head/kernel", "head/bias")} == {"class count: checkpoint 1000, ours 10"}
    saved = tf.train.load_checkpoint(str(run / "checkpoints"))
    restored = [row for name, row in rows.items() if not name.startswith("head/")]
    assert len(restored) == len(values) - 2  # every tensor of the checkpoint but the head's two
    for row in restored:
        np.testing.assert_array_equal(saved.get_tensor(model_key(row["variable"])), values[row["key"]],
                                      err_msg=row["variable"])
