"""schedule=hyper with warm_start: each value starts from the previous value's best weights where they fit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import compose


# Depth 10 then 18: depth 18 has the same stem, first blocks and head, plus a second block per stage.
WARM = ["schedule=hyper", "schedule.param=network.depth", "schedule.values=[10,18]", "schedule.warm_start=true",
        "schedule.hyper_patience=2", "schedule.eval_every=2", "schedule.save_every=2", "schedule.log_every=2",
        "schedule.patience=5", "schedule.max_decays=0", "schedule.max_steps=6"]


@pytest.mark.slow
def test_the_second_value_starts_from_the_first_values_best_weights_where_name_and_shape_match(
        tmp_path, data_dir, monkeypatch):
    from worklab import app
    from worklab.model.restore import open_checkpoint
    from worklab.run.session import Session

    warm_starts = []  # (checkpoint, every model variable right after the warm start)
    restore = Session.restore

    def recording(self):
        how = restore(self)
        if how == "warm start":
            warm_starts.append((self.warm_start, {name: v.numpy().copy() for name, v in self._model.items()}))
        return how

    monkeypatch.setattr(Session, "restore", recording)
    run = tmp_path / "run"
    app.run(compose(WARM, run, data_dir))

    assert len(warm_starts) == 1  # the first value starts fresh, the second warm
    path, started = warm_starts[0]
    best_step = json.loads((run / "network.depth=10" / "best.json").read_text())["step"]
    assert Path(path).parent == run / "network.depth=10" / "checkpoints" and Path(path).name.endswith(f"-{best_step}")
    best = open_checkpoint(str(path))
    matching = [name for name in started if name in best.shapes and best.shapes[name] == started[name].shape]
    for name in matching:
        np.testing.assert_array_equal(started[name], best.get(name), err_msg=name)
    assert {"stem/conv/kernel", "stage1/block1/conv1/kernel", "stage4/block1/bn2/moving_mean", "head/kernel"} \
        <= set(matching)
    new = sorted(set(started) - set(matching))
    assert new and all(name.split("/")[1] == "block2" for name in new)  # only depth 18's extra blocks are fresh
