"""The ResNet builder: depth and width from config, readable hierarchical variable names.

Variables are named by where they sit, e.g. `stem/conv/kernel`,
`stage2/block1/conv1/kernel`, `stage2/block1/shortcut/bn/moving_mean`, `head/kernel`:
learning-rate rules and restore mappings match these names, so they are part of the
contract and stay stable across depths and widths. Stages 1-4 hold the classic
ResNet blocks (basic for depth 10-34, bottleneck for 50-152, stride on the first
convolution of a stage's first block as in the original ResNet-50); convolutions have
no bias, batch norm follows each.
"""
from __future__ import annotations

import keras

from worklab.config import NetworkConfig

LAYOUTS = {  # depth -> (bottleneck?, blocks per stage)
    10: (False, (1, 1, 1, 1)),
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
BASE_CHANNELS = (64, 128, 256, 512)
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _conv(filters: int, size: int, stride: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=False,
                               kernel_initializer="he_normal", name=name)


def _bn(name: str, gamma: str = "ones") -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, gamma_initializer=gamma,
                                           name=name)


class ConvBN(keras.layers.Layer):
    """A convolution then batch norm, named `<name>/conv` and `<name>/bn` (the stem and shortcuts)."""

    def __init__(self, filters: int, size: int, stride: int, name: str):
        super().__init__(name=name)
        self.conv = _conv(filters, size, stride, "conv")
        self.bn = _bn("bn")

    def call(self, x, training=None):
        return self.bn(self.conv(x), training=training)


class Block(keras.layers.Layer):
    """One residual block: conv1/bn1, conv2/bn2 (, conv3/bn3 for a bottleneck) and a shortcut."""

    def __init__(self, filters: int, stride: int, bottleneck: bool, project: bool, name: str):
        super().__init__(name=name)
        if bottleneck:
            shapes = ((filters, 1, stride), (filters, 3, 1), (4 * filters, 1, 1))
        else:
            shapes = ((filters, 3, stride), (filters, 3, 1))
        self.convs = [_conv(f, k, s, f"conv{i + 1}") for i, (f, k, s) in enumerate(shapes)]
        # The last batch norm starts at zero, so each block starts as the identity: deep
        # networks then train at the usual learning rates from the first step.
        self.bns = [_bn(f"bn{i + 1}", "zeros" if i == len(shapes) - 1 else "ones") for i in range(len(shapes))]
        self.shortcut = ConvBN(shapes[-1][0], 1, stride, "shortcut") if project else None

    def call(self, x, training=None):
        y = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            y = bn(conv(y), training=training)
            if i < len(self.convs) - 1:
                y = keras.ops.relu(y)
        skip = self.shortcut(x, training=training) if self.shortcut else x
        return keras.ops.relu(y + skip)


class Stage(keras.layers.Layer):
    """A stage of blocks, block1..blockN; the first may change resolution and channels."""

    def __init__(self, filters: int, blocks: int, stride: int, bottleneck: bool, project: bool, name: str):
        super().__init__(name=name)
        self.blocks = [Block(filters, stride if i == 0 else 1, bottleneck, project and i == 0, f"block{i + 1}")
                       for i in range(blocks)]

    def call(self, x, training=None):
        for block in self.blocks:
            x = block(x, training=training)
        return x


def build_resnet(cfg: NetworkConfig, num_classes: int, image_size: int) -> keras.Model:
    """A ResNet for `image_size` square RGB inputs returning float32 logits over `num_classes`."""
    bottleneck, blocks = LAYOUTS[cfg.depth]
    channels = [max(1, round(c * cfg.width)) for c in BASE_CHANNELS]
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.ops.relu(ConvBN(channels[0], 7, 2, "stem")(inputs))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    in_channels = channels[0]
    for i, (filters, count) in enumerate(zip(channels, blocks)):
        stride = 1 if i == 0 else 2
        out_channels = 4 * filters if bottleneck else filters
        project = stride != 1 or in_channels != out_channels
        x = Stage(filters, count, stride, bottleneck, project, f"stage{i + 1}")(x)
        in_channels = out_channels
    x = keras.layers.GlobalAveragePooling2D(name="pool5")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(x)
    return keras.Model(inputs, logits, name=f"resnet{cfg.depth}")

