"""How the network learns: the optimizer, the loss it minimises, and the weights a fresh run restores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from worklab.config.checks import inert, rate, regex, require
from worklab.config.preprocessing_policy import PREPROCESSING

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


@dataclass
class OptimizerConfig:
    """The optimizer; `lr` is the base rate that schedules change and lr_mult rules scale."""

    name: str = "momentum"  # sgd | momentum | adam | adamw (Adam with decoupled weight decay)
    lr: float = 0.1
    momentum: float = 0.9  # momentum
    nesterov: bool = False  # momentum
    beta_1: float = 0.9  # adam, adamw
    beta_2: float = 0.999  # adam, adamw
    epsilon: float = 1e-7  # adam, adamw
    clip_norm: Optional[float] = None  # clip the gradients of all variables together to this global norm
    weight_decay: float = 0.0  # decoupled: each step w -= lr * lr_mult * weight_decay * decay_mult * w
    decay_include: str = "kernel$"  # the variables that decay (re.search), coupled or decoupled
    decay_exclude: Optional[str] = None  # and of those, the ones that do not

    def __post_init__(self) -> None:
        require(self.name in OPTIMIZERS,
                f"optimizer.name={self.name!r} is not one of {', '.join(OPTIMIZERS)}.")
        rate("optimizer.lr", self.lr)
        require(self.clip_norm is None or (math.isfinite(self.clip_norm) and self.clip_norm > 0),
                f"optimizer.clip_norm={self.clip_norm} must be a finite number greater than 0 (or null: no clipping).")
        require(math.isfinite(self.weight_decay) and 0 <= self.weight_decay < 1,
                f"optimizer.weight_decay={self.weight_decay} must be in [0, 1): the fraction of a weight taken "
                "off per step at learning rate 1.")
        for key in ("decay_include", "decay_exclude"):
            regex(f"optimizer.{key}", getattr(self, key))
        if self.name != "momentum":
            inert("optimizer", f"optimizer={self.name}", self, OptimizerConfig, ["momentum", "nesterov"])
        if self.name not in ("adam", "adamw"):
            inert("optimizer", f"optimizer={self.name}", self, OptimizerConfig, ["beta_1", "beta_2", "epsilon"])


@dataclass
class LossConfig:
    """What training minimises; the losses the train and test lines report stay the plain cross-entropy."""

    label_smoothing: float = 0.0  # the target puts this much of its mass evenly on all classes
    class_weight: Any = None  # null, balanced (inverse class frequency of the training list), or one per class

    def __post_init__(self) -> None:
        require(0 <= self.label_smoothing < 1, f"loss.label_smoothing={self.label_smoothing} must be in [0, 1).")
        weights = self.class_weight
        if weights is None or weights == "balanced":
            return
        require(isinstance(weights, (list, tuple)) and len(weights) > 0
                and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights),
                f"loss.class_weight={weights} must be null, balanced, or a list of numbers, one per class.")
        require(all(math.isfinite(w) and w >= 0 for w in weights) and any(w > 0 for w in weights),
                f"loss.class_weight={weights}: the weights must be finite, >= 0, and not all 0.")


@dataclass
class RestoreRule:
    """Variables whose name matches `pattern` (re.search) look for re.sub(pattern, to, name) in the checkpoint."""

    pattern: str = MISSING
    to: str = MISSING


@dataclass
class RestoreConfig:
    """Where a run's first weights come from when it has no checkpoint of its own."""

    path: Optional[str] = None  # a TF1 or TF2 checkpoint (prefix or folder) or a Keras .h5 weights file
    rules: List[RestoreRule] = field(default_factory=list)  # ordered; the first match wins; else own name
    skip: List[str] = field(default_factory=list)  # patterns of variables to initialise fresh (a new head)
    strict: bool = True  # a missing key or a shape or dtype mismatch stops the run; false: fresh, and said
    anyway: bool = False  # restore even over this run's own checkpoint (the seed's RESTORE_ANYWAY)
    key_prefix: str = ""  # put before every key, for checkpoints saved under a scope (resnet_v1_50/)
    requires: Dict[str, Any] = field(default_factory=dict)  # network settings a shipped mapping is written for
    preprocessing: Optional[str] = None  # the input scaling the checkpoint was trained with (see PREPROCESSING)

    def __post_init__(self) -> None:
        require(self.preprocessing is None or self.preprocessing in PREPROCESSING,
                f"restore.preprocessing={self.preprocessing!r} is not one of {', '.join(PREPROCESSING)}.")
