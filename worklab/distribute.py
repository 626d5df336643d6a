"""The tf.distribute strategy a run trains and tests under (runtime.strategy), built once per process.

`default` is TensorFlow's default strategy: one device, one replica. `mirrored` is
MirroredStrategy over runtime.devices, or over every GPU of the machine when the list is
empty: one replica per device, each variable mirrored on all of them, the gradients
all-reduced every step. reader.batch_size stays the global batch, split evenly across
the replicas, so it must divide by their number.

Naming CPU devices (runtime.devices=[CPU:0,CPU:1]) splits the CPU into that many logical
devices, so a several-device run can be tried on a laptop and tested in CI. TensorFlow
fixes its devices at the first op, so `split_cpu` runs from runtime.configure, before it.
"""
from __future__ import annotations

import logging
import re
from typing import List

from worklab.config import RuntimeConfig
from worklab.errors import UserError

log = logging.getLogger(__name__)


def split_cpu(cfg: RuntimeConfig) -> None:
    """Split the CPU into logical devices when runtime.devices names CPU devices (CPU:0 .. CPU:k: k + 1 of them)."""
    import tensorflow as tf

    indices = [int(re.fullmatch(r"CPU:(\d+)", d).group(1)) for d in cfg.devices if d.startswith("CPU:")]
    if max(indices, default=0) > 0:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * (max(indices) + 1))


def build(cfg: RuntimeConfig, batch_size: int):
    """The strategy runtime.strategy names; refuses devices this machine does not have and an uneven batch split."""
    import tensorflow as tf

    if cfg.strategy == "default":
        return tf.distribute.get_strategy()
    present = _names(tf.config.list_logical_devices())
    devices = list(cfg.devices) or [d for d in present if d.startswith("GPU:")]
    missing = [d for d in devices if d not in present]
    if missing:
        raise UserError(f"runtime.devices: this machine has no {', '.join(missing)} (it has {', '.join(present)}).")
    if not devices:
        raise UserError("runtime.strategy=mirrored found no GPU on this machine: name the devices to use, e.g. "
                        "runtime.devices=[CPU:0,CPU:1] to split the CPU in two.")
    strategy = tf.distribute.MirroredStrategy(devices)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(f"reader.batch_size={batch_size} does not divide by the {replicas} replicas of "
                        f"runtime.strategy=mirrored ({', '.join(devices)}): it is the global batch, split evenly "
                        f"across them. Use a multiple of {replicas}.")
    if cfg.xla and replicas > 1:
        raise UserError(f"runtime.xla=true with runtime.strategy=mirrored over {replicas} devices: the batch norm "
                        "synchronised across them all-reduces inside the step, which XLA cannot compile per "
                        "replica here. Set runtime.xla=false.")
    log.info("strategy: mirrored over %s, %d replicas of %d images each (reader.batch_size=%d is the global batch)",
             ", ".join(devices), replicas, batch_size // replicas, batch_size)
    return strategy


def _names(devices) -> List[str]:
    """'CPU:0', 'GPU:1', ... of TensorFlow's logical devices."""
    return [f"{d.device_type}:{d.name.rsplit(':', 1)[1]}" for d in devices]
