"""network.freeze: the layers up to a name (or a group's last layer) stay as they were, statistics included;
schedule=inspect shows the layers and the rule each gets."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import compose, one_device
from worklab import app
from worklab.config.network import LrRule
from worklab.errors import UserError
from worklab.interrupt import StopRequest
from worklab.model.rules import freeze_rules, lr_multipliers
from worklab.run.parts import Parts

LAYERS = [("images", []), ("conv1", ["conv1/kernel"]), ("bn1", ["bn1/gamma", "bn1/moving_mean"]),
          ("block_1_expand", ["block_1_expand/kernel"]), ("block_1_add", []),
          ("block_2_expand", ["block_2_expand/kernel"]), ("block_12_expand", ["block_12_expand/kernel"]),
          ("block3a_conv", ["block3a_conv/kernel"]), ("block3b_conv", ["block3b_conv/kernel"]),
          ("block30_conv", ["block30_conv/kernel"]), ("head", ["head/kernel"])]


def frozen(freeze: str):
    rules = freeze_rules(LAYERS, freeze)
    plan = lr_multipliers(rules, [p for _, paths in LAYERS for p in paths])
    return sorted(path for path, m in plan.items() if m.lr == 0)


def test_freeze_takes_every_layer_up_to_and_including_the_named_one():
    assert frozen("bn1") == ["bn1/gamma", "bn1/moving_mean", "conv1/kernel"]


def test_a_group_name_ends_at_its_last_layer_and_does_not_match_a_longer_number():
    assert frozen("block_1") == ["block_1_expand/kernel", "bn1/gamma", "bn1/moving_mean", "conv1/kernel"]
    assert "block_12_expand/kernel" not in frozen("block_2")
    assert {"block3a_conv/kernel", "block3b_conv/kernel"} <= set(frozen("block3"))  # EfficientNet's lettered blocks
    assert "block30_conv/kernel" not in frozen("block3")


def test_a_name_of_no_layer_is_refused_with_real_names():
    with pytest.raises(UserError, match=r"network.freeze=stage_9 names no layer.*conv1"):
        freeze_rules(LAYERS, "stage_9")
    with pytest.raises(UserError, match="network.freeze=images: no layer up to images has weights"):
        freeze_rules(LAYERS, "images")


def test_a_frozen_rule_freezes_batch_norm_too():
    from worklab.model.rules import frozen_batch_norm
    assert frozen_batch_norm(["bn1"], freeze_rules(LAYERS, "bn1")) == ["bn1"]
    assert frozen_batch_norm(["bn1"], [LrRule(pattern="^conv1/", mult=0)]) == []


def snapshot(model):
    return {v.path: np.array(v.numpy()) for v in model.variables}


@pytest.mark.parametrize("network", [
    ["network.freeze=stage1"],
    pytest.param(["network=applications", "network.arch=MobileNetV2", "network.arch_args={alpha: 0.35}",
                  "reader.image_size=32", "network.freeze=block_2"], marks=pytest.mark.slow),
])
def test_frozen_weights_and_statistics_stay_bit_identical_through_training(tmp_path, data_dir, network):
    parts = Parts(compose(network, tmp_path / "run", data_dir), StopRequest(), one_device())
    parts.restore()
    before = snapshot(parts.model)
    parts.trainer.train(3)
    after = snapshot(parts.model)
    frozen_paths = [p for p, m in parts.plan.items() if m.lr == 0]
    frozen_statistics = [p for p in before if p.endswith(("moving_mean", "moving_variance"))
                         and p.rsplit("/", 1)[0] + "/gamma" in frozen_paths]
    assert frozen_paths and frozen_statistics
    for path in [*frozen_paths, *frozen_statistics]:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    moved = [p for p in before if p not in frozen_paths and not np.array_equal(after[p], before[p])]
    assert "head/kernel" in moved and len(moved) > 4


def test_inspect_lists_layers_with_parameters_and_their_rule(tmp_path, data_dir, capsys):
    counts = app.run(compose(["schedule=inspect", "network.freeze=stage1",
                              "network.lr_mult=[{pattern: '^stage2/', mult: 0.1}]"], tmp_path / "run", data_dir))
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "frozen (network.freeze)" in lines["stem"] and "batch-norm statistics frozen" in lines["stem"]
    assert "frozen (network.freeze)" in lines["stage1"] and "batch norms frozen" in lines["stage1"]
    assert "lr x0.1 (network.lr_mult[0])" in lines["stage2"]
    assert "lr x1 (no rule)" in lines["head"]
    assert counts["layers"] == len(lines)
    assert not (tmp_path / "run" / "checkpoints").exists()
