"""TensorFlow's process-wide settings, applied once before anything else touches TensorFlow.

oneDNN is chosen through an environment variable that TensorFlow reads at import, so
`configure` must run before the first `import tensorflow` of the process; the other
settings (threads, logical CPU devices, GPU memory growth, precision, determinism)
must run before the first op. app.run calls it first.
"""
from __future__ import annotations

import logging
import os

from worklab.config.runtime import RuntimeConfig

log = logging.getLogger(__name__)


def configure(cfg: RuntimeConfig, seed: int):
    """Apply the runtime settings and return the tensorflow module."""
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if cfg.onednn else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    from worklab import distribute

    distribute.split_cpu(cfg)
    for name in ("tensorflow", "absl"):  # TensorFlow's own INFO lines would crowd the run log
        logging.getLogger(name).setLevel(logging.WARNING)
    if cfg.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.intra_op_threads)
    if cfg.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(cfg.inter_op_threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, cfg.memory_growth)
    keras.mixed_precision.set_global_policy(cfg.precision)
    keras.utils.set_random_seed(seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    log.info("runtime: TensorFlow %s, %d GPU(s), oneDNN %s, XLA %s, precision %s, threads %s/%s",
             tf.__version__, len(gpus), "on" if cfg.onednn else "off", "on" if cfg.xla else "off",
             cfg.precision, cfg.intra_op_threads or "auto", cfg.inter_op_threads or "auto")
    return tf
