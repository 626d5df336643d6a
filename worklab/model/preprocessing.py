"""The network's first layer: from the reader's 0-255 RGB images to what the network was trained on.

The reader hands every network the same images (RGB, float32, 0-255, resized to
reader.image_size); this layer scales them the way the network's weights expect. It is
part of the model, so training, testing, export and predict run the same function, and
an exported model takes plain pixels. It has no variables: checkpoints do not change.

Each mode is `(x[channels] / divisor - mean) / std`, written in the order of Keras'
`imagenet_utils.preprocess_input`, so that `torch`, `tf` and `caffe` give the same
floats as Keras' own function:

| mode     | channels | divisor | mean                         | std                 |
|----------|----------|---------|------------------------------|---------------------|
| mean_std | RGB      | 255     | reader.mean                  | reader.std          |
| torch    | RGB      | 255     | 0.485, 0.456, 0.406          | 0.229, 0.224, 0.225 |
| caffe    | BGR      | 1       | 103.939, 116.779, 123.68     | 1                   |
| tf       | RGB      | 127.5   | 1                            | 1                   |
| unit     | RGB      | 255     | 0                            | 1                   |
| raw      | RGB      | 1       | 0                            | 1                   |
| ry       | BGR      | 1       | 103.0626, 115.9029, 123.1516 | 1                   |
| vgg      | RGB      | 1       | 123.68, 116.78, 103.94       | 1                   |

Used by: mean_std worklab's ResNets and Keras model files; torch DenseNet; caffe Keras'
ResNet50/101/152 and VGG; tf ResNetV2, MobileNet(V2), Inception, Xception, NASNet; unit
TF Hub image models; raw EfficientNet(V2), ConvNeXt and MobileNetV3, which scale their
own input; ry ry/tensorflow-resnet (converted from Caffe); vgg TF-slim's resnet_v1.
"""
from __future__ import annotations

from typing import Dict, Sequence

import keras

from worklab.config.preprocessing_policy import input_preprocessing
from worklab.config.root import Config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODES: Dict[str, dict] = {
    "torch": dict(bgr=False, divisor=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "caffe": dict(bgr=True, divisor=1.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0)),
    "tf": dict(bgr=False, divisor=127.5, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0)),
    "unit": dict(bgr=False, divisor=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    "raw": dict(bgr=False, divisor=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    "ry": dict(bgr=True, divisor=1.0, mean=(103.062623801, 115.902882574, 123.151630838), std=(1.0, 1.0, 1.0)),
    "vgg": dict(bgr=False, divisor=1.0, mean=(123.68, 116.78, 103.94), std=(1.0, 1.0, 1.0)),
}


def settings(mode: str, mean: Sequence[float], std: Sequence[float]) -> dict:
    """The numbers of `mode`; mean_std takes reader.mean and reader.std."""
    if mode == "mean_std":
        return dict(bgr=False, divisor=255.0, mean=tuple(mean), std=tuple(std))
    return MODES[mode]


class Preprocess(keras.layers.Layer):
    """(x[channels] / divisor - mean) / std on 0-255 RGB images, in float32 whatever the policy."""

    def __init__(self, mode: str, bgr: bool, divisor: float, mean: Sequence[float], std: Sequence[float],
                 name: str = "preprocess", **kwargs):
        kwargs["dtype"] = "float32"  # 0-255 in bfloat16 would lose the low bits before scaling
        super().__init__(name=name, **kwargs)
        self.mode, self.bgr, self.divisor = mode, bool(bgr), float(divisor)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, images, training=None):
        x = keras.ops.cast(images, "float32")
        if self.mode == "raw":
            return x
        if self.bgr:
            x = keras.ops.flip(x, axis=-1)
        return (x / self.divisor - keras.ops.array(self.mean, "float32")) / keras.ops.array(self.std, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self.spec()}

    def spec(self) -> dict:
        """The mode and its numbers, as export.json records them."""
        return {"mode": self.mode, "bgr": self.bgr, "divisor": self.divisor, "mean": self.mean, "std": self.std}

    def describe(self) -> str:
        """One line for the log and export.json."""
        if self.mode == "raw":
            return "raw: 0-255 as they are (the network scales them itself)"
        channels = "BGR" if self.bgr else "RGB"
        return (f"{self.mode}: {channels}, (x / {self.divisor:g} - [{', '.join(f'{m:g}' for m in self.mean)}]) "
                f"/ [{', '.join(f'{s:g}' for s in self.std)}]")


def for_config(cfg: Config) -> Preprocess:
    """The first layer of the network `cfg` describes."""
    mode = input_preprocessing(cfg)
    return Preprocess(mode, **settings(mode, cfg.reader.mean, cfg.reader.std))
