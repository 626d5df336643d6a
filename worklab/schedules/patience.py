"""schedule=patience: drop the learning rate when the tested loss stops improving (the seed's train_with_patience).

Every eval_every steps the run is tested (on its validation set when it has one, see
below). A better loss makes that step the best;
after `patience` tests without one, the weights (and optimizer state) go back to the
best checkpoint and the rate is multiplied by `factor`; at the plateau after
`max_decays` drops the run stops. A blow-up (a non-finite training loss, or a test
loss that is not finite or above max_loss) is a failed test that drops the rate at once.
The global step keeps counting through a revert, so steps, checkpoints and curves stay
unique. With a validation set (reader.val or reader.val_split) every test above is on
it, and the test set is evaluated once, on the best step, when the run ends: its result
is kept apart (best.json's `test`, split test in metrics.jsonl) and decides nothing.

The learning rate is part of the state: `optimizer.lr` at the start, multiplied by
`factor` at each drop. A resumed run goes on at the state's rate, unless optimizer.lr
now differs from the value the state last took it from: then the new value is the rate
from the resume step on (the way to go on at a lower rate after a blow-up).

The state travels in every checkpoint and is written to state.json after every test.
A test whose result is on disk is never run again: after a kill, the restored
checkpoint's state plus the saved result of its step give the same decision, so no
test is lost or counted twice.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from worklab.errors import NonFiniteLoss, RunFailed
from worklab.schedules.loop import evaluate, report_test, set_rate, train_until

log = logging.getLogger("worklab")


@dataclass
class PatienceState:
    """Where the patience schedule stands; `tested` is the last step whose test it has applied."""

    best_step: Optional[int] = None
    best_loss: Optional[float] = None
    waiting: int = 0
    decays: int = 0
    tested: int = 0
    done: bool = False
    lr: Optional[float] = None  # the rate training goes on at
    base_lr: Optional[float] = None  # optimizer.lr when the rate was last taken from it


def run(parts) -> Dict:
    """Train and test until the last plateau (or max_steps); return the best step's test results."""
    cfg = parts.cfg.schedule
    parts.inputs.check_inputs()
    parts.restore()
    state = PatienceState(**parts.session.load_state())
    set_rate(parts, *starting_rate(state, parts.cfg.optimizer.lr, float(parts.lr.numpy())))
    parts.session.protected = lambda: {state.best_step} - {None}
    while not state.done:
        step = int(parts.step.numpy())
        if step > state.tested and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            apply_test(parts, state, reuse_or_test(parts, step))
            continue
        try:
            train_until(parts, next_test(step, cfg), schedule_state=asdict(state))
        except NonFiniteLoss as blowup:
            recover(parts, state, blowup)
    best = parts.writer.evaluated(state.best_step, parts.inputs.decision_split)
    test = report_test(parts, state.best_step)
    if test is not None:
        best["test"] = {key: test[key] for key in ("loss", "accuracy", "top_k_accuracy", "count")}
    if parts.folder.writable:
        parts.folder.write("best.json", best)
    log.info("best: step %d, %s loss %.4f, accuracy %.3f", best["step"], parts.inputs.decision_split, best["loss"],
             best["accuracy"])
    return best


def starting_rate(state: PatienceState, configured: float, restored: float) -> Tuple[float, str]:
    """The rate to go on at, and why: the state's, or optimizer.lr when that was changed for this resume."""
    if state.base_lr is None:  # a fresh start, or a checkpoint saved before the state kept its rate
        state.base_lr, state.lr = configured, restored
    if configured != state.base_lr:
        why = f"optimizer.lr changed from {state.base_lr:g} for this resume"
        state.base_lr = state.lr = configured
        return configured, why
    return state.lr, "optimizer.lr" if state.decays == 0 else f"optimizer.lr after {state.decays} drop(s)"


def next_test(step: int, cfg) -> int:
    target = (step // cfg.eval_every + 1) * cfg.eval_every
    return min(target, cfg.max_steps) if cfg.max_steps else target


def reuse_or_test(parts, step: int) -> Dict:
    """The result of `step` on the decision split: the one saved before an interruption, or a new test."""
    saved = parts.writer.evaluated(step, parts.inputs.decision_split)
    if saved is not None:
        log.info("%s of step %d already done before the restart: loss %.4f", parts.inputs.decision_split, step,
                 saved["loss"])
        return saved
    return evaluate(parts)


def apply_test(parts, state: PatienceState, result: Dict) -> None:
    """Update the state with one test result and act on it; write state.json."""
    cfg = parts.cfg.schedule
    step, loss, split = result["step"], result["loss"], result.get("split", "test")
    blown = not math.isfinite(loss) or (cfg.max_loss is not None and loss > cfg.max_loss)
    if not blown and (state.best_loss is None or loss < state.best_loss):
        message = (f"{split} loss {loss:.4f} improved on {state.best_loss:.4f}" if state.best_loss is not None
                   else f"{split} loss {loss:.4f}: first best")
        state.best_step, state.best_loss, state.waiting = step, loss, 0
    else:
        state.waiting = cfg.patience if blown else state.waiting + 1
        message = (f"{split} loss {loss:.4f} blew up (schedule.max_loss={cfg.max_loss})" if blown else
                   f"{split} loss {loss:.4f} did not improve on {state.best_loss:.4f} ({state.waiting}/{cfg.patience})")
    state.tested = step
    log.info("%s", message)
    parts.writer.decision(step, message, {"waiting": state.waiting, "decays": state.decays,
                                          "best_loss": state.best_loss or loss})
    if state.waiting >= cfg.patience:
        decay_or_stop(parts, state, step)
    if cfg.max_steps and step >= cfg.max_steps and not state.done:
        state.done = True
        log.info("reached schedule.max_steps=%d", cfg.max_steps)
    if parts.folder.writable:  # the other workers of a cluster keep the same state without writing it
        parts.folder.write("state.json", {"schedule": "patience", "step": step, **asdict(state)})


def decay_or_stop(parts, state: PatienceState, step: int) -> None:
    """At a plateau: stop after max_decays drops, else go back to the best weights at a lower rate."""
    cfg = parts.cfg.schedule
    if state.best_step is None:
        raise RunFailed(f"The first test (step {step}) already blew up: there is no good checkpoint to go "
                        "back to. Lower optimizer.lr or raise schedule.max_loss.")
    if state.decays >= cfg.max_decays:
        state.done = True
        message = f"no improvement after {state.decays} learning-rate drop(s): stopping"
    else:
        old = state.lr
        parts.session.restore_weights(state.best_step)
        state.lr = old * cfg.factor
        parts.lr.assign(state.lr)
        state.decays += 1
        state.waiting = 0
        message = f"reverting to step {state.best_step}, learning rate {old:.3g} -> {old * cfg.factor:.3g}"
    log.info("%s", message)
    parts.writer.decision(step, message, {"waiting": state.waiting, "decays": state.decays,
                                          "best_loss": state.best_loss})


def recover(parts, state: PatienceState, blowup: NonFiniteLoss) -> None:
    """A non-finite training loss: a failed test at that step, so back to the best at a lower rate."""
    if state.best_step is None:
        raise blowup
    log.warning("training loss became NaN or infinite at step %d: counted as a failed test", blowup.step)
    parts.trainer.bad_step.assign(-1)
    state.waiting = parts.cfg.schedule.patience
    decay_or_stop(parts, state, int(parts.step.numpy()))
    if state.done:
        raise RunFailed(f"{blowup} It happened again after {state.decays} learning-rate drop(s) "
                        f"(schedule.max_decays={parts.cfg.schedule.max_decays}).")
