"""The network's schema: its kind and the keys each kind reads, lr_mult rules, batch norm, the weight average.

A Keras Application's name and constructor arguments are checked against the catalogue
(worklab.config.architectures); network.preprocessing against the modes
(worklab.config.preprocessing_policy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from worklab.config import architectures
from worklab.config.checks import inert, positive, require
from worklab.config.preprocessing_policy import PREPROCESSING

DEPTHS = (10, 18, 34, 50, 101, 152)
NETWORK_LAYOUTS = ("resnet", "slim")
NETWORK_KINDS = ("resnet", "keras", "applications", "saved_model")


@dataclass
class LrRule:
    """One learning-rate rule: variables whose name matches `pattern` (re.search) get these multipliers."""

    pattern: str = MISSING
    mult: float = 1.0  # learning-rate multiplier; 0 freezes the variable
    decay_mult: float = 1.0  # weight-decay multiplier
    bn: Optional[str] = None  # train | frozen (inference mode, statistics kept); default frozen when mult is 0


@dataclass
class ArchArgs:
    """The constructor arguments some Keras Applications take beyond the common ones; null keeps Keras' default."""

    alpha: Optional[float] = None  # MobileNet, MobileNetV2, MobileNetV3: the width multiplier
    depth_multiplier: Optional[int] = None  # MobileNet
    dropout: Optional[float] = None  # MobileNet: before its (unused) top
    minimalistic: Optional[bool] = None  # MobileNetV3
    dropout_rate: Optional[float] = None  # MobileNetV3: before its (unused) top
    include_preprocessing: Optional[bool] = None  # ConvNeXt, EfficientNetV2, MobileNetV3: scaling inside

    def given(self) -> Dict[str, Any]:
        """The arguments set, for the constructor."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class NetworkConfig:
    """The network to train: a ResNet built here, a Keras model file, a Keras Application or a SavedModel.

    Every kind gets a fresh `head` for our classes and takes the reader's 0-255 RGB
    images: its input preprocessing is the network's first layer (worklab.model.preprocessing).
    """

    kind: str = "resnet"  # resnet | keras | applications | saved_model
    path: Optional[str] = None  # keras: the .keras or .h5 model file; saved_model: the SavedModel folder
    cut: Optional[str] = None  # keras: the layer that feeds the new head; default the one before the old head
    arch: Optional[str] = None  # applications: a keras.applications name, e.g. EfficientNetV2B0
    arch_args: ArchArgs = field(default_factory=lambda: ArchArgs())  # applications: {alpha: 0.35}
    weights: Optional[str] = None  # applications: a weight file, imagenet (Keras' download and cache), or none
    endpoint: Optional[str] = None  # saved_model: the function to call; default serve, else serving_default
    training_endpoint: Optional[str] = None  # saved_model: the function to call in training, when it has one
    preprocessing: Optional[str] = None  # the input scaling (see PREPROCESSING); default: the network's own
    freeze: Optional[str] = None  # freeze every layer up to and including this one (or the last of this group)
    depth: int = 18  # 10, 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks)
    width: float = 1.0  # channel multiplier
    weight_decay: float = 1e-4  # L2 on kernels, scaled per variable by decay_mult
    lr_mult: List[LrRule] = field(default_factory=list)  # ordered; the first match wins
    layout: str = "resnet"  # resnet: stride in a stage's first block; slim: TF-slim's, in its last block
    conv_bias: bool = False  # convolutions with a bias (Keras Applications' ResNet50 has them)
    bn_momentum: float = 0.9  # batch-norm moving-average momentum
    bn_warmup_steps: int = 0  # steps at bn_warmup_momentum first, so fresh statistics settle fast
    bn_warmup_momentum: float = 0.5
    ema: Optional[float] = None  # keep an exponential moving average of the weights with this decay, e.g. 0.9998

    def __post_init__(self) -> None:
        require(self.kind in NETWORK_KINDS,
                f"network.kind={self.kind!r} is not one of {', '.join(NETWORK_KINDS)}.")
        require(self.depth in DEPTHS,
                f"network.depth={self.depth} is not one of {', '.join(map(str, DEPTHS))}.")
        positive("network.width", self.width)
        require(self.kind not in ("keras", "saved_model") or bool(self.path),
                f"network={self.kind} needs network.path="
                f"{'MODEL_FILE' if self.kind == 'keras' else 'SAVED_MODEL_FOLDER'}.")
        require(self.layout in NETWORK_LAYOUTS,
                f"network.layout={self.layout!r} is not one of {', '.join(NETWORK_LAYOUTS)}.")
        require(self.preprocessing is None or self.preprocessing in PREPROCESSING,
                f"network.preprocessing={self.preprocessing!r} is not one of {', '.join(PREPROCESSING)}.")
        require(self.weight_decay >= 0, f"network.weight_decay={self.weight_decay} must be >= 0.")
        for i, rule in enumerate(self.lr_mult):
            require(rule.mult >= 0 and rule.decay_mult >= 0,
                    f"network.lr_mult[{i}] (pattern {rule.pattern!r}): mult and decay_mult must be >= 0.")
            require(rule.bn in (None, "train", "frozen"),
                    f"network.lr_mult[{i}].bn={rule.bn!r} is not one of train, frozen.")
        for key in ("bn_momentum", "bn_warmup_momentum"):
            require(0 <= getattr(self, key) < 1, f"network.{key}={getattr(self, key)} must be in [0, 1).")
        require(self.bn_warmup_steps >= 0, f"network.bn_warmup_steps={self.bn_warmup_steps} must be >= 0.")
        require(self.ema is None or 0 < self.ema < 1,
                f"network.ema={self.ema} must be in (0, 1), e.g. 0.9998 (or null: no weight average).")
        if self.kind == "applications":
            require(bool(self.arch), "network=applications needs network.arch=NAME, e.g. EfficientNetV2B0; "
                                     f"the names: {', '.join(architectures.NAMES)}.")
            architectures.check(self.arch, self.arch_args.given())
            require(self.arch_args.include_preprocessing is not False or self.preprocessing is not None,
                    f"network.arch_args.include_preprocessing=false leaves {self.arch} without its input "
                    "scaling: set network.preprocessing too (e.g. tf for [-1, 1]).")
        inert("network", f"network={self.kind}", self, NetworkConfig, INERT_NETWORK_KEYS[self.kind])


# Keys each kind of network does not read: set, they are refused rather than ignored.
_RESNET_KEYS = ["depth", "width", "layout", "conv_bias"]
_APPLICATION_KEYS = ["arch", "arch_args", "weights"]
_SAVED_MODEL_KEYS = ["endpoint", "training_endpoint"]
INERT_NETWORK_KEYS = {
    "resnet": ["path", "cut", *_APPLICATION_KEYS, *_SAVED_MODEL_KEYS],
    "keras": [*_RESNET_KEYS, *_APPLICATION_KEYS, *_SAVED_MODEL_KEYS],
    "applications": ["path", "cut", *_RESNET_KEYS, *_SAVED_MODEL_KEYS],
    "saved_model": ["cut", *_RESNET_KEYS, *_APPLICATION_KEYS],
}
