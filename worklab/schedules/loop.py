"""The pieces every schedule is made of: train to a step (logging and saving on cadence) and evaluate.

Every cadence comes from schedule.log_every / save_every and is decided by `due`,
which also fires on the last step of a stretch, so a stretch always ends logged and
saved. Log lines have one fixed format for train and one for test.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional

from worklab.errors import Interrupted, NonFiniteLoss
from worklab.progress import Progress

log = logging.getLogger("worklab")


def due(step: int, every: int, last: int) -> bool:
    """Is it time? True every `every` steps and on the last step."""
    return step % every == 0 or step == last


def train_until(parts, end: int, schedule_state: Optional[Dict] = None,
                curve: Optional[Callable[[int], float]] = None) -> Optional[Dict[str, float]]:
    """Train from the current step to `end`; None if already there.

    The rate is the current one, or with `curve` (worklab.schedules.curves) the curve's
    rate of each step, set before that step. Checkpoints carry `schedule_state`, the
    calling schedule's state (when it has one).

    Raises Interrupted after saving when SIGINT/SIGTERM arrives, and NonFiniteLoss when the
    loss stops being finite (the last good checkpoint is kept, nothing newer is saved).
    """
    s = parts.cfg.schedule
    trainer = parts.trainer
    step = int(parts.step.numpy())
    if step >= end:
        return None
    if curve:
        parts.lr.assign(curve(step))
        log.info("train steps %d-%d on the curve, learning rate %g to %g", step + 1, end, curve(step), curve(end - 1))
    else:
        log.info("train steps %d-%d at learning rate %g", step + 1, end, parts.lr.numpy())
    bar, first = Progress(end - step), step
    scalars = None

    def on_step(i: int, base: int) -> bool:
        bar.update(base - first + i)
        if curve:
            parts.lr.assign(curve(base + i))  # the rate of the next step
        return bool(parts.stop)

    while step < end and not parts.stop:
        chunk = min(s.log_every - step % s.log_every, s.save_every - step % s.save_every, end - step)
        scalars = trainer.train(chunk, on_step=lambda i, base=step: on_step(i, base))
        step = scalars["step"]
        if curve:
            scalars["lr"] = curve(step - 1)  # the rate the last step trained at
        _check_finite(parts, step)
        if due(step, s.log_every, end) or parts.stop:
            bar.break_line()
            log.info("train step %d/%d loss %.4f accuracy %.3f lr %.3g images/s %.1f", step, end,
                     scalars["loss"], scalars["accuracy"], scalars["lr"], scalars["images_per_second"])
            parts.writer.train_scalars(step, scalars)
        if due(step, s.save_every, end) or parts.stop:
            parts.session.save(schedule_state)
            if parts.summary:
                parts.summary.saved(step)
    if parts.stop:
        raise Interrupted(parts.stop.signal, step, max(parts.session.steps(), default=None))
    return scalars


def set_rate(parts, rate: float, why: str) -> None:
    """Set the base learning rate the next steps train at, and say where it comes from."""
    log.info("learning rate %g (%s)", rate, why)
    parts.lr.assign(rate)


def evaluate(parts, split: Optional[str] = None, step: Optional[int] = None) -> Dict:
    """Evaluate the current weights on `split`; save, log and return the statistics with step, split and lr.

    With network.ema the weight average is evaluated (Parts.evaluation_weights). The
    default split is the one decisions are made on (RunInputs.decision_split): val when the
    run has a validation set, else test. `step` labels weights restored from an earlier
    checkpoint (the best one) in place of the global step. A schedule that reads the run
    (test, watch) applies the temperature schedule=calibrate fitted for that step; one
    that writes it (training, calibrate itself) never does.
    """
    split = split or parts.inputs.decision_split
    step = int(parts.step.numpy()) if step is None else step
    tester = parts.validator if split == "val" else parts.tester
    bar = Progress(tester.batches, unit="batch")
    temperature = 1.0 if parts.folder.writable else parts.folder.temperature(step)
    with parts.evaluation_weights():
        result = {"step": step, "split": split, "lr": float(parts.lr.numpy()), "temperature": temperature,
                  **tester.evaluate(on_batch=bar.update, temperature=temperature)}
    bar.break_line()
    parts.writer.evaluation(result, parts.inputs.classes)
    if parts.summary:
        parts.summary.evaluated(result, decides=split == parts.inputs.decision_split)
    log.info("%s step %d loss %.4f accuracy %.3f top%d %.3f f1 %.3f (%d images)", split, step, result["loss"],
             result["accuracy"], result["top_k"], result["top_k_accuracy"], result["f1_macro"], result["count"])
    return result


def report_test(parts, step: int) -> Optional[Dict]:
    """With a validation set, the test set once, on the checkpoint the validation chose; None without one.

    Its result is written with split test and kept apart from every decision. A result
    already on disk (a run stopped after it) is returned as it is.
    """
    if not parts.inputs.has_validation:
        return None
    done = parts.writer.evaluated(step, "test")
    if done is not None:
        return done
    if step != int(parts.step.numpy()):  # else the weights just trained (and saved) are the ones to test
        parts.restore_for_inference(step)
    log.info("test set: step %d, chosen on the validation set, reported apart", step)
    return evaluate(parts, "test", step)


def _check_finite(parts, step: int) -> None:
    bad = int(parts.trainer.bad_step.numpy())
    if bad >= 0:
        saved = parts.session.steps()
        last = f"the last good checkpoint is step {saved[-1]}" if saved else "there is no earlier checkpoint"
        rate = "the stage's lr in schedule.stages" if hasattr(parts.cfg.schedule, "stages") else "optimizer.lr"
        raise NonFiniteLoss(f"The training loss or its gradient became NaN or infinite at step {bad}. Nothing after "
                            f"it was saved: {last}. Lower {rate} (or check the input images), then resume.", bad)
