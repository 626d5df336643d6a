"""runtime.xla and runtime.precision reach the model and the compiled steps, not only the log line."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from conftest import compose, one_device
from worklab import compat


@pytest.fixture
def bfloat16_and_xla(tmp_path, data_dir):
    """Parts built after runtime.configure, as app.run builds them; the global precision is put back after."""
    from worklab import runtime
    from worklab.interrupt import StopRequest

    cfg = compose(["schedule=train", "schedule.steps=2", "runtime.xla=true", "runtime.precision=mixed_bfloat16"],
                  tmp_path / "run", data_dir)
    runtime.configure(cfg.runtime, cfg.seed)
    try:
        from worklab.run.parts import Parts

        yield Parts(cfg, StopRequest(), one_device())
    finally:
        keras.mixed_precision.set_global_policy("float32")  # process-wide: other tests build float32 models


@pytest.mark.slow
def test_mixed_bfloat16_computes_in_bfloat16_with_float32_weights_and_logits(bfloat16_and_xla):
    model = bfloat16_and_xla.model
    conv = next(layer for layer in compat.flatten_layers(model) if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    images, _ = next(iter(bfloat16_and_xla.reader.test(bfloat16_and_xla.inputs.test_images)))
    assert model(images, training=False).dtype.name == "float32"  # the head's logits, for a stable loss


@pytest.mark.slow
def test_xla_compiles_the_train_and_test_steps(bfloat16_and_xla):
    parts = bfloat16_and_xla
    parts.restore()
    scalars = parts.trainer.train(2)
    assert scalars["step"] == 2 and math.isfinite(scalars["loss"])
    images, labels = next(iter(parts.reader.test(parts.inputs.test_images)))
    # TensorFlow returns compiler IR only for a function marked jit_compile=True; it raises otherwise.
    train_hlo = parts.trainer._replica_step.experimental_get_compiler_ir(images, labels)(stage="hlo")
    test_hlo = parts.tester._predict.experimental_get_compiler_ir(images, labels)(stage="hlo")
    assert "bf16" in train_hlo and "bf16" in test_hlo  # the compiled computation runs in bfloat16
    stats = parts.tester.evaluate()
    assert stats["count"] == len(parts.inputs.test_images) and np.isfinite(stats["loss"])
