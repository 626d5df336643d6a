"""worklab's entry point: compose the config with Hydra, hand a plain config to worklab.app.

    python run.py                      # train and test on the built-in demo set
    python run.py --help               # the config groups and how to override them

Exit codes: 0 finished, 1 the run failed, 2 bad input refused (the run folder is left
as it was), 130 / 143 stopped by Ctrl-C / SIGTERM (resume to continue).
"""
import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from worklab import command, hydra_edge, native_log
from worklab.config.schedules import SCHEDULES
from worklab.errors import EXIT_BAD_INPUT, EXIT_FAILED, Interrupted, RunFailed, UserError
from worklab.run.summary import Summary, read_summary

log = logging.getLogger("worklab")
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
prepared = command.Prepared(sys.argv)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float | None:
    """Run one job and return its best loss (validation when it has one, else test), what a sweeper minimises."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        plain = hydra_edge.to_plain(cfg)
        from worklab import app  # imports TensorFlow: --help and --cfg never get here

        app.run(plain)
        best = (read_summary(plain.run_dir) or {}).get("best")
        return best["loss"] if best else None
    except UserError as error:
        log.error("%s", error)
        prepared.put_back()
        record_failure(error)
        if multirun:
            raise UserError(str(error)) from None  # this job fails; Hydra goes on with the others
        sys.exit(EXIT_BAD_INPUT)
    except RunFailed as error:
        log.error("the run failed: %s", error)
        if multirun:
            raise
        sys.exit(EXIT_FAILED)
    except Interrupted as stop:
        ignore_stop_signals()
        log.warning("%s", stop.describe() if stop.note else
                    f"{stop.describe()}; continue with: python run.py resume={cfg.run_dir}")
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:  # a second Ctrl-C stops at once, without saving
        ignore_stop_signals()
        log.warning("stopped at once by a second Ctrl-C; continue from the last checkpoint with: "
                    "python run.py resume=%s", cfg.run_dir)
        sys.exit(130)


def ignore_stop_signals() -> None:
    """The stop is handled: a further Ctrl-C while TensorFlow shuts down must not change the exit code."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def record_failure(error: UserError) -> None:
    """Mark a new run folder failed when its input was refused (a failed sweep job shows in review).

    Only for the schedules that keep a summary: a schedule that reads a run has no run of its own to mark.
    """
    run_dir, name = HydraConfig.get().runtime.output_dir, HydraConfig.get().runtime.choices.get("schedule")
    summarised = any(kind.name == name and kind.summarised for kind in SCHEDULES)
    if summarised and read_summary(run_dir) is None and Path(run_dir).is_dir():
        Summary(run_dir, name, list(HydraConfig.get().overrides.task)).mark("failed", str(error))


if __name__ == "__main__":
    try:
        prepared = command.prepare(sys.argv, CONFIG_DIR)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    sys.argv = prepared.argv
    native_log.filter_stderr()
    main()
