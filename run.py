"""worklab's entry point: compose the config with Hydra, hand a plain config to worklab.app.

    python run.py                      # train and test on the built-in demo set
    python run.py --help               # the config groups and how to override them
"""
import logging
import sys

import hydra

from worklab import config
from worklab.errors import Interrupted, UserError

log = logging.getLogger("worklab")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float | None:
    """Run one job and return its test loss, the value a sweeper minimises."""
    try:
        plain = config.to_plain(cfg)
        from worklab import app  # imports TensorFlow: --help and --cfg never get here

        return app.run(plain)
    except UserError as error:
        log.error("%s", error)
        sys.exit(2)
    except Interrupted as stop:
        log.warning("stopped at step %d with a checkpoint saved; continue with: python run.py resume=%s",
                    stop.step, cfg.run_dir)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    try:
        sys.argv = config.resume_argv(sys.argv)
    except UserError as error:
        sys.exit(f"error: {error}")
    main()
