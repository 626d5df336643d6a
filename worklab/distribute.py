"""The tf.distribute strategy a run trains and tests under (runtime.strategy), built once per process.

`default` is TensorFlow's default strategy: one device, one replica. `mirrored` is
MirroredStrategy over runtime.devices, or over every GPU of the machine when the list is
empty: one replica per device, each variable mirrored on all of them, the gradients
all-reduced every step. reader.batch_size stays the global batch, split evenly across
the replicas, so it must divide by their number.

`multi_worker` is MultiWorkerMirroredStrategy over a cluster of processes that all run the
same command (worklab.cluster reads TF_CONFIG, or SLURM's variables through
tf.distribute's SlurmClusterResolver): one replica per GPU of each process, or one per
process on CPUs. Each task of a SLURM step uses the GPUs SLURM binds to it.

Naming CPU devices (runtime.devices=[CPU:0,CPU:1]) splits the CPU into that many logical
devices, so a several-device run can be tried on a laptop and tested in CI. TensorFlow
fixes its devices at the first op, so `split_cpu` runs from runtime.configure, before it.
"""
from __future__ import annotations

import logging
import re
import signal
from typing import List

from worklab import cluster
from worklab.config.runtime import RuntimeConfig
from worklab.errors import UserError

log = logging.getLogger(__name__)


def split_cpu(cfg: RuntimeConfig) -> None:
    """Split the CPU into logical devices when runtime.devices names CPU devices (CPU:0 .. CPU:k: k + 1 of them)."""
    import tensorflow as tf

    indices = [int(re.fullmatch(r"CPU:(\d+)", d).group(1)) for d in cfg.devices if d.startswith("CPU:")]
    if max(indices, default=0) > 0:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * (max(indices) + 1))


def build(cfg: RuntimeConfig, batch_size: int, trains: bool = True):
    """The strategy runtime.strategy names; refuses devices this machine does not have and an uneven batch split.

    A schedule that only reads a run (`trains` False) runs a multi_worker config in this one process.
    """
    import tensorflow as tf

    if cfg.strategy == "default" or (cfg.strategy == "multi_worker" and not trains):
        return tf.distribute.get_strategy()
    if cfg.strategy == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_resolver())
        return _checked(strategy, cfg, batch_size, cluster.task().describe())
    present = _names(tf.config.list_logical_devices())
    devices = list(cfg.devices) or [d for d in present if d.startswith("GPU:")]
    missing = [d for d in devices if d not in present]
    if missing:
        raise UserError(f"runtime.devices: this machine has no {', '.join(missing)} (it has {', '.join(present)}).")
    if not devices:
        raise UserError("runtime.strategy=mirrored found no GPU on this machine: name the devices to use, e.g. "
                        "runtime.devices=[CPU:0,CPU:1] to split the CPU in two.")
    return _checked(tf.distribute.MirroredStrategy(devices), cfg, batch_size, ", ".join(devices))


def _resolver():
    """TF_CONFIG's cluster, or the SLURM job step's.

    Each SLURM task keeps the GPUs SLURM gave it (auto_set_gpu=False). The resolver still
    shares a node's GPUs out among its tasks on paper, and fails when that gives a task none
    (a CPU node, or one GPU bound to each task), so it is told one GPU per task.
    """
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    task = cluster.task()
    if task.source == "TF_CONFIG":
        return resolvers.TFConfigClusterResolver()
    return resolvers.SlurmClusterResolver(gpus_per_task=1, gpus_per_node=task.count, auto_set_gpu=False)


def _checked(strategy, cfg: RuntimeConfig, batch_size: int, where: str):
    """`strategy` once the global batch divides by its replicas and XLA is off when several replicas train."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(f"reader.batch_size={batch_size} does not divide by the {replicas} replicas of "
                        f"runtime.strategy={cfg.strategy} ({where}): it is the global batch, split evenly "
                        f"across them. Use a multiple of {replicas}.")
    if cfg.xla and replicas > 1:
        raise UserError(f"runtime.xla=true with runtime.strategy={cfg.strategy} over {replicas} replicas: the "
                        "batch norm synchronised across them all-reduces inside the step, which XLA cannot "
                        "compile per replica here. Set runtime.xla=false.")
    log.info("strategy: %s over %s, %d replicas of %d images each (reader.batch_size=%d is the global batch)",
             cfg.strategy, where, replicas, batch_size // replicas, batch_size)
    return strategy


def _names(devices) -> List[str]:
    """'CPU:0', 'GPU:1', ... of TensorFlow's logical devices."""
    return [f"{d.device_type}:{d.name.rsplit(':', 1)[1]}" for d in devices]


def agreed(stop, strategy):
    """`stop` itself, or across the workers of a cluster an AgreedStop over it."""
    import tensorflow as tf

    return AgreedStop(stop, strategy) if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) else stop


class AgreedStop:
    """A cluster's stop request: once any worker gets Ctrl-C or SIGTERM, every worker sees it at the same check.

    Each check all-reduces the workers' own signals (how many got SIGINT, how many SIGTERM),
    so all of them leave the training loop after the same step, take part in the same last
    save (tf.distribute needs every worker in it) and exit with the same code: SIGTERM's
    when any worker got it, else SIGINT's. The checks are the training loop's, which every
    worker makes in the same order.

    tf.distribute's PreemptionCheckpointHandler shares a signal the same way but saves
    through its own CheckpointManager, which would bypass the Session: its index that never
    lists a partial checkpoint, its pruning that keeps a patience run's best step, and the
    schedule's state in each checkpoint.
    """

    def __init__(self, local, strategy):
        import tensorflow as tf

        self.local = local
        self.signal = None

        @tf.function
        def total(counts):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(counts,)), axis=None)
        self._total = total

    def __bool__(self) -> bool:
        if self.signal is None:
            own = self.local.signal
            interrupts, terms = self._total([int(own == signal.SIGINT), int(own == signal.SIGTERM)]).numpy()
            if interrupts or terms:
                self.signal = signal.SIGTERM if terms else signal.SIGINT
                if own is None:
                    log.warning("another worker of the cluster got %s: saving a checkpoint and stopping",
                                signal.Signals(self.signal).name)
        return self.signal is not None
