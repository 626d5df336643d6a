"""The ResNet builder: depth, width and layout from config, readable hierarchical variable names.

Variables are named by where they sit, e.g. `stem/conv/kernel`,
`stage2/block1/conv1/kernel`, `stage2/block1/shortcut/bn/moving_mean`, `head/kernel`:
learning-rate rules and restore mappings match these names, so they are part of the
contract and stay stable across depths, widths and layouts. Stages 1-4 hold basic
blocks (depth 10-34) or bottleneck blocks (50-152). Two layouts place the stride:
- `resnet`, the original ResNet (and ry/tensorflow-resnet, Keras Applications): on the
  first convolution of the first block of stages 2-4, whose shortcut is a strided 1x1
  convolution;
- `slim`, TF-slim's resnet_v1: on the 3x3 convolution of the last block of stages 1-3,
  whose shortcut is a strided subsample.
Convolutions have no bias unless network.conv_bias (Keras Applications has them); batch
norm follows each, its momentum set by batchnorm.prepare.
"""
from __future__ import annotations

from typing import Optional

import keras

from worklab.config.network import NetworkConfig

LAYOUTS = {  # depth -> (bottleneck?, blocks per stage)
    10: (False, (1, 1, 1, 1)),
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
BASE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = {"resnet": (1, 2, 2, 2), "slim": (2, 2, 2, 1)}
BN_EPSILON = 1e-5


def _conv(filters: int, size: int, stride: int, bias: bool, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=bias,
                               kernel_initializer="he_normal", name=name)


def _bn(name: str, gamma: str = "ones") -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, gamma_initializer=gamma, name=name)


class ConvBN(keras.layers.Layer):
    """A convolution then batch norm, named `<name>/conv` and `<name>/bn` (the stem and shortcuts)."""

    def __init__(self, filters: int, size: int, stride: int, bias: bool, name: str):
        super().__init__(name=name)
        self.conv = _conv(filters, size, stride, bias, "conv")
        self.bn = _bn("bn")

    def call(self, x, training=None):
        return self.bn(self.conv(x), training=training)


class Block(keras.layers.Layer):
    """One residual block: conv1/bn1, conv2/bn2 (, conv3/bn3 for a bottleneck) and a shortcut.

    `strided` is the index of the convolution that carries the stride; the shortcut is a
    1x1 convolution (`project`), a strided subsample, or the identity.
    """

    def __init__(self, filters: int, stride: int, strided: int, bottleneck: bool, project: bool, bias: bool,
                 name: str):
        super().__init__(name=name)
        sizes = (1, 3, 1) if bottleneck else (3, 3)
        outs = (filters, filters, 4 * filters) if bottleneck else (filters, filters)
        self.convs = [_conv(f, k, stride if i == strided else 1, bias, f"conv{i + 1}")
                      for i, (f, k) in enumerate(zip(outs, sizes))]
        # The last batch norm starts at zero, so each block starts as the identity: deep
        # networks then train at the usual learning rates from the first step.
        self.bns = [_bn(f"bn{i + 1}", "zeros" if i == len(outs) - 1 else "ones") for i in range(len(outs))]
        if project:
            self.shortcut = ConvBN(outs[-1], 1, stride, bias, "shortcut")
        elif stride > 1:
            self.shortcut = keras.layers.MaxPooling2D(1, strides=stride, name="subsample")
        else:
            self.shortcut = None

    def call(self, x, training=None):
        y = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            y = bn(conv(y), training=training)
            if i < len(self.convs) - 1:
                y = keras.ops.relu(y)
        skip = self.shortcut(x, training=training) if self.shortcut else x
        return keras.ops.relu(y + skip)


class Stage(keras.layers.Layer):
    """A stage of blocks, block1..blockN; the first changes the channels, one block the resolution."""

    def __init__(self, filters: int, blocks: int, stride: int, cfg: NetworkConfig, in_channels: int, name: str):
        super().__init__(name=name)
        bottleneck = LAYOUTS[cfg.depth][0]
        out = 4 * filters if bottleneck else filters
        slim = cfg.layout == "slim"
        strided_block = blocks - 1 if slim else 0
        strided_conv = 1 if slim and bottleneck else 0
        self.blocks = []
        for i in range(blocks):
            block_stride = stride if i == strided_block else 1
            project = i == 0 and (in_channels != out or block_stride != 1)
            self.blocks.append(Block(filters, block_stride, strided_conv, bottleneck, project, cfg.conv_bias,
                                     f"block{i + 1}"))

    def call(self, x, training=None):
        for block in self.blocks:
            x = block(x, training=training)
        return x


def build_resnet(cfg: NetworkConfig, num_classes: int, image_size: int,
                 preprocess: Optional[keras.layers.Layer] = None) -> keras.Model:
    """A ResNet for `image_size` square RGB inputs returning float32 logits over `num_classes`.

    `preprocess` is its first layer (worklab.model.preprocessing: 0-255 pixels in); without
    one, the network takes its inputs as they come.
    """
    bottleneck, blocks = LAYOUTS[cfg.depth]
    channels = [max(1, round(c * cfg.width)) for c in BASE_CHANNELS]
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.ops.relu(ConvBN(channels[0], 7, 2, cfg.conv_bias, "stem")(preprocess(inputs) if preprocess else inputs))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    in_channels = channels[0]
    for i, (filters, count, stride) in enumerate(zip(channels, blocks, STAGE_STRIDES[cfg.layout])):
        x = Stage(filters, count, stride, cfg, in_channels, f"stage{i + 1}")(x)
        in_channels = 4 * filters if bottleneck else filters
    x = keras.layers.GlobalAveragePooling2D(name="pool5")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(x)
    return keras.Model(inputs, logits, name=f"resnet{cfg.depth}")
