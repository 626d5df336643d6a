"""The ResNet builder: the classic layouts, stable readable names, width as a channel multiplier."""
from __future__ import annotations

import numpy as np
import pytest

from worklab.config.network import NetworkConfig
from worklab.model.resnet import build_resnet


def trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("depth, params", [(18, 11_689_512), (50, 25_557_032)])
def test_imagenet_layouts_have_the_classic_parameter_counts(depth, params):
    """The published counts of ResNet-18 and ResNet-50 with 1000 classes (convolutions without bias)."""
    assert trainable_count(build_resnet(NetworkConfig(depth=depth), 1000, 64)) == params


def test_names_are_hierarchical_and_stable():
    names = [v.path for v in build_resnet(NetworkConfig(depth=50, width=0.25), 7, 32).variables]
    assert names[:2] == ["stem/conv/kernel", "stem/bn/gamma"]
    for name in ("stage1/block1/conv3/kernel", "stage1/block1/shortcut/conv/kernel",
                 "stage3/block6/bn2/moving_variance", "stage4/block3/conv1/kernel", "head/kernel", "head/bias"):
        assert name in names, name
    assert "stage3/block7/conv1/kernel" not in names  # ResNet-50 has 6 blocks in stage 3
    assert len(names) == len(set(names))


def test_width_scales_channels_and_logits_are_float32():
    narrow = build_resnet(NetworkConfig(depth=10, width=0.5), 3, 32)
    wide = build_resnet(NetworkConfig(depth=10, width=2), 3, 32)
    kernel = {m: {v.path: v.shape for v in m.variables} for m in (narrow, wide)}
    assert kernel[narrow]["stem/conv/kernel"] == (7, 7, 3, 32)
    assert kernel[wide]["stage4/block1/conv2/kernel"] == (3, 3, 1024, 1024)
    logits = wide(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(logits.shape) == (2, 3) and logits.dtype.name == "float32"


def test_slim_layout_strides_at_the_end_of_stages_and_keras_convolutions_have_bias():
    classic = build_resnet(NetworkConfig(depth=50, width=0.125), 5, 64)
    slim = build_resnet(NetworkConfig(depth=50, width=0.125, layout="slim"), 5, 64)
    sizes = {m: [m.get_layer(f"stage{i}").output.shape[1] for i in range(1, 5)] for m in (classic, slim)}
    assert sizes[classic] == [16, 8, 4, 2] and sizes[slim] == [8, 4, 2, 2]
    names = lambda m: {v.path: tuple(v.shape) for v in m.variables}
    assert names(classic) == names(slim)  # the same variables: a stride moves no weights
    biased = build_resnet(NetworkConfig(depth=50, width=0.125, conv_bias=True), 5, 64)
    assert {"stem/conv/bias", "stage1/block1/conv3/bias", "stage1/block1/shortcut/conv/bias"} <= set(names(biased))
