"""schedule=cosine and the fixed schedule's warmup: every step trains at the curve's rate, also after a resume."""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest

from conftest import compose, one_device
from worklab import runtime
from worklab.errors import Interrupted, UserError
from worklab.run import runfolder
from worklab.run.parts import Parts
from worklab.schedules import cosine, fixed
from worklab.schedules.curves import linear_warmup, warmup_cosine

COSINE = ["schedule=cosine", "schedule.steps=8", "schedule.warmup_steps=2", "schedule.min_lr=0.001",
          "schedule.eval_every=4", "schedule.log_every=1", "schedule.save_every=1", "optimizer.lr=0.1"]


def test_warmup_cosine_at_chosen_steps():
    rate = warmup_cosine(0.1, 0.001, 4, 20)
    expected = {0: 0.025, 1: 0.05, 3: 0.1, 4: 0.1, 12: 0.001 + 0.5 * 0.099, 20: 0.001,
                8: 0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi / 4))}
    for step, value in expected.items():
        assert rate(step) == pytest.approx(value, rel=1e-12), step
    assert warmup_cosine(0.1, 0.0, 0, 10)(0) == pytest.approx(0.1)  # no warmup: the peak at once
    assert [linear_warmup(0.2, 4)(s) for s in (0, 3, 4, 100)] == pytest.approx([0.05, 0.2, 0.2, 0.2])


class StopAt:
    """Acts like a Ctrl-C once the run reaches `step`."""

    signal = signal.SIGINT

    def __init__(self, step: int):
        self.step, self.parts = step, None

    def __bool__(self) -> bool:
        return self.parts is not None and int(self.parts.step.numpy()) >= self.step


def train(schedule, cfg, stop=None):
    """Run `schedule` in-process; return ({step: the rate it trained at}, final weights)."""
    stop = StopAt(10 ** 9) if stop is None else stop
    runtime.configure(cfg.runtime, cfg.seed)  # the seeded start app.run makes
    runfolder.lock(cfg.run_dir)  # a writing session, as app.run has
    parts = Parts(cfg, stop, one_device())
    stop.parts = parts
    rates = {}
    record = parts.writer.train_scalars
    parts.writer.train_scalars = lambda step, scalars: (rates.__setitem__(step, scalars["lr"]), record(step, scalars))
    try:
        schedule.run(parts)
    except Interrupted:
        pass
    finally:
        runfolder.release(cfg.run_dir)
    return rates, {v.path: v.numpy() for v in parts.model.variables}


def test_every_step_trains_at_the_curves_rate(tmp_path, data_dir, small_network):
    curve = warmup_cosine(0.1, 0.001, 2, 8)
    whole, _ = train(cosine, compose([*COSINE, *small_network], tmp_path / "whole", data_dir))
    assert whole == pytest.approx({s: curve(s - 1) for s in range(1, 9)}, rel=1e-6)
    assert sorted(p.name for p in (tmp_path / "whole" / "evaluations").iterdir()) == \
        ["step-000004.json", "step-000008.json"]


@pytest.mark.slow
def test_a_resumed_run_goes_on_on_the_curve(tmp_path, data_dir):
    whole, weights = train(cosine, compose(COSINE, tmp_path / "whole", data_dir))
    cfg = compose(COSINE, tmp_path / "split", data_dir)
    first, _ = train(cosine, cfg, StopAt(5))
    second, resumed = train(cosine, cfg)
    assert sorted(first) == [1, 2, 3, 4, 5] and sorted(second) == [6, 7, 8]
    assert {**first, **second} == pytest.approx(whole, rel=1e-6)
    for path, value in weights.items():
        np.testing.assert_allclose(resumed[path], value, rtol=1e-5, atol=1e-6, err_msg=path)


def test_fixed_warmup_ramps_the_first_stage_only(tmp_path, data_dir, small_network):
    cfg = compose(["schedule.stages=[{lr: 0.08, steps: 6}, {lr: 0.01, steps: 2}]", "schedule.warmup_steps=4",
                   "schedule.log_every=1", "schedule.save_every=2", *small_network], tmp_path / "run", data_dir)
    rates, _ = train(fixed, cfg)
    assert rates == pytest.approx({1: 0.02, 2: 0.04, 3: 0.06, 4: 0.08, 5: 0.08, 6: 0.08, 7: 0.01, 8: 0.01})


@pytest.mark.parametrize("overrides, message", [
    (["schedule.warmup_steps=8"], "schedule.warmup_steps=8 must be in [0, schedule.steps=8)"),
    (["schedule.min_lr=0.1"], "schedule.min_lr=0.1 must be below optimizer.lr=0.1"),
    (["schedule.min_lr=-1"], "schedule.min_lr=-1.0 must be a finite number >= 0"),
    (["schedule.eval_every=0"], "schedule.eval_every=0 must be at least 1"),
])
def test_bad_cosine_settings_are_refused_naming_the_key(tmp_path, data_dir, overrides, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        compose([*COSINE, *overrides], tmp_path / "run", data_dir)


def test_fixed_warmup_longer_than_the_first_stage_is_refused(tmp_path, data_dir):
    with pytest.raises(UserError, match=r"schedule.warmup_steps=9 must be in \[0, 4\]"):
        compose(["schedule.stages=[{lr: 0.1, steps: 4}]", "schedule.warmup_steps=9"], tmp_path / "run", data_dir)
