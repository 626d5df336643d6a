"""worklab's entry point: compose the config with Hydra, hand a plain config to worklab.app.

    python run.py                      # train and test on the built-in demo set
    python run.py --help               # the config groups and how to override them
"""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from worklab import config
from worklab.errors import Interrupted, UserError
from worklab.summary import Summary, read_summary

log = logging.getLogger("worklab")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float | None:
    """Run one job and return its best test loss, the value a sweeper minimises."""
    try:
        plain = config.to_plain(cfg)
        from worklab import app  # imports TensorFlow: --help and --cfg never get here

        app.run(plain)
        best = (read_summary(plain.run_dir) or {}).get("best")
        return best["loss"] if best else None
    except UserError as error:
        log.error("%s", error)
        record_failure(cfg, error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise UserError(str(error)) from None  # this job fails; Hydra goes on with the others
        sys.exit(2)
    except Interrupted as stop:
        log.warning("stopped at step %d with a checkpoint saved; continue with: python run.py resume=%s",
                    stop.step, cfg.run_dir)
        sys.exit(128 + stop.signum)


def record_failure(cfg, error: UserError) -> None:
    """Mark a new run folder failed when its config was rejected (a failed sweep job shows in review)."""
    run_dir = HydraConfig.get().runtime.output_dir
    if read_summary(run_dir) is None:
        Summary(run_dir, HydraConfig.get().runtime.choices.get("schedule", "?"),
                list(HydraConfig.get().overrides.task)).mark("failed", str(error))


if __name__ == "__main__":
    try:
        sys.argv = config.resume_argv(sys.argv)
    except UserError as error:
        sys.exit(f"error: {error}")
    main()
