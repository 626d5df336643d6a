"""The runtime's schema: how TensorFlow runs (oneDNN, XLA, precision, threads, determinism, strategy, devices).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List

from worklab.config.checks import require

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclass
class RuntimeConfig:
    """How TensorFlow runs: set before the first TensorFlow import."""

    onednn: bool = True  # oneDNN CPU kernels (TensorFlow enables them only on newer CPUs by default)
    xla: bool = False  # compile the train and test steps with XLA
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16 (GPUs, with loss scaling)
    memory_growth: bool = True  # allocate GPU memory as needed, so processes can share a GPU
    intra_op_threads: int = 0  # 0: TensorFlow's choice (all cores)
    inter_op_threads: int = 0
    deterministic: bool = False  # deterministic kernels (slower); for exact reruns
    strategy: str = "default"  # default: one device | mirrored: this machine's devices | multi_worker: a cluster
    devices: List[str] = field(default_factory=list)  # mirrored's devices, e.g. [GPU:0, GPU:1]; [] all GPUs

    def __post_init__(self) -> None:
        require(self.precision in PRECISIONS,
                f"runtime.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}.")
        require(self.strategy in STRATEGIES,
                f"runtime.strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}.")
        require(not self.devices or self.strategy == "mirrored",
                f"runtime.devices={list(self.devices)} needs runtime.strategy=mirrored "
                f"(runtime.strategy={self.strategy} runs on one device).")
        for device in self.devices:
            require(bool(re.fullmatch(r"(CPU|GPU):\d+", str(device))),
                    f"runtime.devices: {device!r} is not a device name such as GPU:0 or CPU:1.")
        require(len(set(self.devices)) == len(self.devices),
                f"runtime.devices={list(self.devices)} names a device twice.")
        for key in ("intra_op_threads", "inter_op_threads"):
            require(getattr(self, key) >= 0, f"runtime.{key} must be 0 (automatic) or positive.")
