"""The watcher's heartbeat and its stopping: alive however long a test takes, gone after exit, a timeout."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY, compose, run_py
from worklab.run import watchers


@pytest.fixture
def short_timeout(monkeypatch):
    """A heartbeat timeout of 0.4 s, so being busy "longer than the timeout" takes a second, not minutes."""
    monkeypatch.setattr(watchers, "HEARTBEAT_TIMEOUT", 0.4)
    return 0.4


def trained_run(run: Path, data_dir: Path, steps: int) -> Path:
    """A finished training run with a checkpoint every 2 steps and the .hydra/config.yaml run.py would save."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from worklab import app

    overrides = ["schedule=train", f"schedule.steps={steps}", "schedule.save_every=2"]
    app.run(compose(overrides, run, data_dir))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        raw = hydra_compose("config", overrides=[*TINY, f"data_dir={data_dir}", f"run_dir={run}", *overrides])
    (run / ".hydra").mkdir()
    OmegaConf.save(raw, run / ".hydra" / "config.yaml")
    return run


def test_kept_alive_beats_through_a_long_block_and_removes_the_heartbeat(tmp_path, short_timeout):
    with watchers.kept_alive(tmp_path):
        seen = []
        for _ in range(6):  # 1.2 s: three timeouts without a beat from the caller
            time.sleep(0.2)
            seen.append(watchers.watcher_alive(tmp_path))
        beat = json.loads((watchers.folder(tmp_path) / "alive.json").read_text())
        assert time.time() - beat["time"] < short_timeout
    assert seen == [True] * 6
    assert not (watchers.folder(tmp_path) / "alive.json").exists() and not watchers.watcher_alive(tmp_path)
    assert "watch-heartbeat" not in [thread.name for thread in threading.enumerate()]


def test_kept_alive_removes_the_heartbeat_when_the_block_fails(tmp_path, short_timeout):
    with pytest.raises(KeyError):
        with watchers.kept_alive(tmp_path):
            raise KeyError("boom")
    assert not (watchers.folder(tmp_path) / "alive.json").exists()


def test_a_watcher_busy_testing_longer_than_the_timeout_stays_alive(tmp_path, data_dir, trained, short_timeout,
                                                                    monkeypatch):
    from worklab import app
    from worklab.schedules import watch

    run = Path(shutil.copytree(trained, tmp_path / "run"))  # 2 steps, a checkpoint at 2
    alive_while_testing = []
    test_checkpoint = watch.test_checkpoint

    def slow_test(target, watched, step):
        for _ in range(3):  # 0.9 s per checkpoint, more than twice the timeout
            time.sleep(0.3)
            alive_while_testing.append(watchers.watcher_alive(watched))
        return test_checkpoint(target, watched, step)

    monkeypatch.setattr(watch, "test_checkpoint", slow_test)
    result = app.run(compose(["schedule=watch", f"schedule.run={run}", "schedule.poll=0.05"], tmp_path / "w",
                             data_dir))
    assert result["step"] == 2 and watchers.tested_steps(run) == {2}
    assert alive_while_testing == [True] * 3
    assert not (run / "watch" / "alive.json").exists() and not watchers.watcher_alive(run)


@pytest.mark.slow
def test_a_watcher_on_a_run_that_never_finishes_stops_after_the_timeout(tmp_path, data_dir):
    run = trained_run(tmp_path / "run", data_dir, 4)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # as a killed trainer leaves it
    watchers.record_tested(run, 2)  # an earlier watcher tested step 2
    start = time.monotonic()
    result = run_py(["schedule=watch", f"schedule.run={run}", "schedule.poll=0.1", "schedule.timeout=1.5",
                     f"hydra.run.dir={tmp_path / 'w'}"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - start > 1.5
    assert "no new checkpoint for 1.5s: stopping" in result.stdout
    assert json.loads((run / "watch" / "ledger.json").read_text()) == {"tested": [2, 4]}
    assert sorted(p.name for p in (run / "watch" / "evaluations").iterdir()) == ["step-000004.json"]
    assert not (run / "watch" / "alive.json").exists()
