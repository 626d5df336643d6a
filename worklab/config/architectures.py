"""What worklab knows of each Keras Applications architecture, without importing Keras.

The config is checked before TensorFlow is imported, so the names, each family's input
preprocessing and each architecture's smallest input size live here as plain data:
`tests/test_applications.py` holds this table to what `keras.applications` has and does.

Preprocessing (see worklab.model.preprocessing for the numbers):
- `caffe`: RGB -> BGR, then the ImageNet mean per channel subtracted (ResNet, VGG);
- `tf`: scaled to [-1, 1] (ResNetV2, MobileNet, MobileNetV2, Inception, Xception, NASNet);
- `torch`: to [0, 1], then the ImageNet mean and std per channel (DenseNet);
- `raw`: 0-255 as they are, the model scales them itself (EfficientNet, EfficientNetV2,
  ConvNeXt, MobileNetV3: Keras builds their preprocessing into the model).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, List

from worklab.errors import UserError


@dataclass(frozen=True)
class Architecture:
    """One keras.applications constructor: its module, preprocessing, smallest input and extra arguments."""

    module: str  # keras.applications.<module>, which also holds its preprocess_input
    preprocessing: str
    min_size: int = 32
    args: tuple = ()  # constructor arguments beyond the common ones (include_top, weights, input_shape, ...)


_MOBILENET_V3_ARGS = ("alpha", "minimalistic", "dropout_rate", "include_preprocessing")


def _family(module: str, preprocessing: str, names: List[str], min_size: int = 32, args: tuple = ()):
    return {name: Architecture(module, preprocessing, min_size, args) for name in names}


ARCHITECTURES: Dict[str, Architecture] = {
    **_family("convnext", "raw", ["ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge",
                                  "ConvNeXtXLarge"], args=("include_preprocessing",)),
    **_family("densenet", "torch", ["DenseNet121", "DenseNet169", "DenseNet201"]),
    **_family("efficientnet", "raw", [f"EfficientNetB{i}" for i in range(8)]),
    **_family("efficientnet_v2", "raw", ["EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2",
                                         "EfficientNetV2B3", "EfficientNetV2S", "EfficientNetV2M",
                                         "EfficientNetV2L"], args=("include_preprocessing",)),
    **_family("inception_resnet_v2", "tf", ["InceptionResNetV2"], min_size=75),
    **_family("inception_v3", "tf", ["InceptionV3"], min_size=75),
    **_family("mobilenet", "tf", ["MobileNet"], args=("alpha", "depth_multiplier", "dropout")),
    **_family("mobilenet_v2", "tf", ["MobileNetV2"], args=("alpha",)),
    **_family("mobilenet_v3", "raw", ["MobileNetV3Small", "MobileNetV3Large"], args=_MOBILENET_V3_ARGS),
    **_family("nasnet", "tf", ["NASNetMobile", "NASNetLarge"]),
    **_family("resnet", "caffe", ["ResNet50", "ResNet101", "ResNet152"]),
    **_family("resnet_v2", "tf", ["ResNet50V2", "ResNet101V2", "ResNet152V2"]),
    **_family("vgg16", "caffe", ["VGG16"]),
    **_family("vgg19", "caffe", ["VGG19"]),
    **_family("xception", "tf", ["Xception"], min_size=71),
}
NAMES = sorted(ARCHITECTURES)


def get(name: str) -> Architecture:
    """The architecture called `name`; an unknown name is refused with the close ones."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    close = difflib.get_close_matches(name, NAMES, n=4, cutoff=0.5) or \
        [n for n in NAMES if n.lower().startswith(name.lower()[:4])][:4]
    hint = f"Did you mean {', '.join(close)}?" if close else f"The names: {', '.join(NAMES)}."
    raise UserError(f"network.arch={name} is not a Keras Applications architecture. {hint}")


def check(name: str, args: Dict[str, Any]) -> None:
    """Refuse an unknown name, and constructor arguments the architecture does not take."""
    arch = get(name)
    unknown = [key for key in args if key not in arch.args]
    if unknown:
        takes = f"it takes {', '.join(arch.args)}" if arch.args else "it takes none"
        raise UserError(f"network.arch_args: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                        f"an argument of {name} ({takes}; include_top, weights, input_shape, pooling and "
                        "classes are set by worklab).")
