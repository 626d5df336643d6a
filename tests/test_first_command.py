"""The first command's demo: a small ResNet by default, and runs from before it keep their own network."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import ROOT
from worklab.command import prepare
from worklab.errors import UserError
from worklab.hydra_edge import to_plain
from worklab.run import runfolder


def composed(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, "run_dir=."])


def demo_run_from_before(run):
    """A run folder as a plain `python run.py` left it before conf/demo/ existed: a ResNet-18 with checkpoints."""
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(composed(["demo=full"]), run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ckpt-200.index").write_bytes(b"")
    return run


def network_of(argv):
    network = to_plain(composed([a for a in argv[1:] if not a.startswith("-")])).network
    return network.depth, network.width


def test_the_demo_trains_a_smaller_resnet_than_a_users_data_gets():
    demo, users = to_plain(composed([])).network, to_plain(composed(["reader=json"])).network
    assert demo.depth * demo.width < users.depth * users.width
    assert network_of(["run.py", "demo=full"]) == (users.depth, users.width)


def test_a_demo_run_from_before_the_small_demo_resumes_on_its_own_resnet(tmp_path):
    run = demo_run_from_before(tmp_path / "run")
    try:
        prepared = prepare(["run.py", f"resume={run}"], ROOT / "conf")
    finally:
        runfolder.release(run)
    assert network_of(prepared.argv) == (18, 1.0)


def test_another_depth_for_a_demo_run_from_before_is_still_refused(tmp_path):
    run = demo_run_from_before(tmp_path / "run")
    with pytest.raises(UserError, match="network.depth: 18 in the run, 10 now"):
        prepare(["run.py", f"resume={run}", "network.depth=10"], ROOT / "conf")
