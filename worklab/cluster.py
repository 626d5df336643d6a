"""Which process of a multi-worker cluster this one is, read from the environment before TensorFlow starts.

runtime.strategy=multi_worker runs the same command in every process of a cluster. The
cluster comes from TF_CONFIG, tf.distribute's own description:

    {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}

or, when TF_CONFIG is not set, from the variables SLURM gives each task of a job step
(SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE),
which tf.distribute's SlurmClusterResolver turns into the same description.

The chief (task `chief` when the cluster names one, else worker 0) holds the run
folder's lock and writes its results; the other workers join it. Everything here is
plain Python, so a bad TF_CONFIG is refused before Hydra writes into the run folder.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import List

from worklab.errors import UserError

KINDS = ("chief", "worker")  # the task types of a MultiWorkerMirroredStrategy cluster
SLURM_NEEDS = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST")


@dataclass(frozen=True)
class Task:
    """This process's place in the cluster: `kind` and `index` among `count` processes, from `source`."""

    source: str  # TF_CONFIG | SLURM
    kind: str
    index: int
    count: int
    chief: bool

    def describe(self) -> str:
        chief = "the chief, " if self.chief else ""
        return f"{chief}{self.kind} {self.index} of {self.count} processes ({self.source})"


def task() -> Task:
    """This process's task, from TF_CONFIG or else SLURM; a clear error naming the variable when neither works."""
    if "TF_CONFIG" in os.environ:
        return _from_tf_config(os.environ["TF_CONFIG"])
    if _in_slurm_step():
        return _from_slurm()
    raise UserError("runtime.strategy=multi_worker needs its cluster: set TF_CONFIG in every process, e.g. "
                    "TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:2222\", \"host2:2222\"]}, \"task\": "
                    "{\"type\": \"worker\", \"index\": 0}}', or start it as the tasks of a SLURM job step "
                    f"(srun, which sets {', '.join(SLURM_NEEDS)}); or continue the run in this one process with "
                    "runtime.strategy=default.")


def _from_tf_config(text: str) -> Task:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not any(isinstance(cluster.get(kind), list) and cluster[kind]
                                                for kind in KINDS):
        raise UserError(f"TF_CONFIG has no cluster: it needs \"cluster\": {{\"worker\": [\"host:port\", ...]}} "
                        f"(and optionally a \"chief\"); got {text[:200]!r}")
    other = sorted(set(cluster) - set(KINDS))
    if other:
        raise UserError(f"TF_CONFIG's cluster names {', '.join(other)}: runtime.strategy=multi_worker runs "
                        "chief and worker tasks only (no parameter servers or evaluators).")
    own = value.get("task")
    if not isinstance(own, dict) or "type" not in own or "index" not in own:
        raise UserError(f"TF_CONFIG lacks this process's task: add \"task\": {{\"type\": \"worker\", \"index\": N}} "
                        f"(N differs in each process); got {text[:200]!r}")
    kind, index = own["type"], own["index"]
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG's task {{\"type\": {kind!r}, \"index\": {index!r}}} is not in its cluster "
                        f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())}).")
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return Task("TF_CONFIG", kind, index, sum(len(v) for v in cluster.values()), chief)


def _from_slurm() -> Task:
    try:
        index, count = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_STEP_NUM_TASKS"])
    except ValueError:
        raise UserError(f"SLURM_PROCID={os.environ['SLURM_PROCID']!r} and SLURM_STEP_NUM_TASKS="
                        f"{os.environ['SLURM_STEP_NUM_TASKS']!r} must be whole numbers.") from None
    return Task("SLURM", "worker", index, count, index == 0)


def is_chief(strategy_name: str) -> bool:
    """Does this process write the run folder? Every process but a cluster's other workers does.

    A multi_worker config without a cluster around it (a run trained on a cluster, tested
    on a laptop with resume=) runs as one process, its own chief; a schedule that trains
    is refused without one before it gets here (worklab.config.root.Config).
    """
    return strategy_name != "multi_worker" or not _started() or task().chief


def _started() -> bool:
    """Was this process started as a task of a cluster (TF_CONFIG, or a SLURM step)?"""
    return "TF_CONFIG" in os.environ or _in_slurm_step()


def _in_slurm_step() -> bool:
    return all(name in os.environ for name in SLURM_NEEDS)


def loopback(count: int) -> List[str]:
    """TF_CONFIG values for a cluster of `count` workers on free ports of this machine, one per worker: to try
    runtime.strategy=multi_worker (and test and measure it) without a second machine."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(count)]
