"""experiment=bit (BiT's HyperRule, settled from the data) and experiment=transfer."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import compose
from test_cosine import train
from worklab.config.schedules import CosineSchedule, FixedSchedule
from worklab.errors import UserError
from worklab.run import runfolder
from worklab.schedules import bit
from worklab.schedules.bit import hyperrule, median_area, stages


def test_the_hyperrule_thresholds():
    assert hyperrule(19_999, 95 * 96) == {"steps": 500, "warmup_steps": 100, "crop": 128, "resize": 160,
                                          "mixup": 0.0}
    assert hyperrule(20_000, 96 * 96) == {"steps": 10_000, "warmup_steps": 500, "crop": 384, "resize": 448,
                                          "mixup": 0.1}
    assert hyperrule(500_000, 10 ** 6)["steps"] == 20_000


def test_the_rate_drops_tenfold_at_30_60_and_90_percent():
    plan = stages(0.003, 500)
    assert [s.steps for s in plan] == [150, 150, 150, 50]
    assert [s.lr for s in plan] == pytest.approx([0.003, 0.0003, 0.00003, 0.000003], rel=1e-12)
    assert [s.steps for s in stages(0.1, 10_000)] == [3000, 3000, 3000, 1000]
    assert sum(s.steps for s in stages(0.1, 7)) == 7 and all(s.steps > 0 for s in stages(0.1, 2))


def test_median_area_reads_the_image_headers(tmp_path):
    paths = []
    for i, (w, h) in enumerate([(10, 10), (20, 30), (50, 2), (90, 90), (8, 8)]):
        Image.new("RGB", (w, h)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    assert median_area(paths) == 100  # areas 100, 600, 100, 8100, 64: sorted, the middle one


BIT = ["experiment=bit", "schedule.steps=8", "schedule.crop=16", "schedule.resize=20", "schedule.log_every=2",
       "schedule.save_every=4"]


def settled(cfg):
    """bit.settle as app.run calls it, in the process that holds the run folder."""
    runfolder.lock(cfg.run_dir)
    try:
        return bit.settle(cfg)
    finally:
        runfolder.release(cfg.run_dir)


@pytest.mark.slow
def test_bit_settles_from_the_data_records_it_and_trains_its_stages(tmp_path, data_dir):
    cfg = compose(BIT, tmp_path / "run", data_dir)
    assert cfg.optimizer.lr == 0.003 and cfg.network.weight_decay == 0.0
    rates, _ = train(bit, settled(cfg))
    record = json.loads((tmp_path / "run" / "bit.json").read_text())
    assert (record["train_images"], record["steps"], record["crop"], record["mixup"]) == (40, 500, 128, 0.0)
    # Stages of 2, 3, 2 and 1 steps; the warmup (100 by the rule) is cut to the first stage: 2 steps.
    assert rates == pytest.approx({2: 0.003, 4: 0.0003, 5: 0.0003, 6: 0.00003, 7: 0.00003, 8: 0.000003})

    changed = compose([o for o in BIT if not o.startswith("schedule.steps")], tmp_path / "run", data_dir)
    (tmp_path / "run" / "bit.json").write_text(json.dumps({**record, "steps": 12}))
    assert sum(s.steps for s in settled(changed).schedule.stages) == 12  # a resumed run keeps what was chosen


def test_settle_builds_the_fixed_schedule_and_the_crop(tmp_path, data_dir):
    cfg = settled(compose(BIT, tmp_path / "run", data_dir))
    assert isinstance(cfg.schedule, FixedSchedule)
    assert [s.steps for s in cfg.schedule.stages] == [2, 3, 2, 1]  # round(2.4), round(4.8), round(7.2)
    assert cfg.reader.image_size == 16
    assert cfg.reader.augment.crop == "random_resized" and cfg.reader.augment.crop_scale == pytest.approx([0.64] * 2)


def test_bit_on_fewer_images_than_a_batch_is_refused_naming_the_key(tmp_path, data_dir):
    cfg = compose([*BIT, "reader.batch_size=64"], tmp_path / "run", data_dir)
    with pytest.raises(UserError, match=r"the training set has 40 image\(s\), fewer than one batch "
                                        r"\(reader.batch_size=64\)"):
        settled(cfg)
    assert not (tmp_path / "run" / "bit.json").exists()


def test_transfer_is_cosine_adamw_smoothing_average_and_clipping_and_the_command_line_wins(tmp_path, data_dir):
    """What the recipe turns on, whatever its numbers: a warmup then cosine, decoupled decay instead of the L2 the
    default network has, smoothing, a weight average, clipping; and keys given with it override its values."""
    plain = compose([], tmp_path / "run", data_dir)
    cfg = compose(["experiment=transfer"], tmp_path / "run", data_dir)
    assert isinstance(cfg.schedule, CosineSchedule) and 0 < cfg.schedule.warmup_steps < cfg.schedule.steps
    assert cfg.optimizer.name == "adamw" and cfg.optimizer.weight_decay > 0
    assert plain.network.weight_decay > 0 and cfg.network.weight_decay == 0  # no coupled L2 beside it
    assert cfg.loss.label_smoothing > plain.loss.label_smoothing == 0
    assert plain.network.ema is None and 0 < cfg.network.ema < 1
    assert plain.optimizer.clip_norm is None and cfg.optimizer.clip_norm > 0
    mine = compose(["experiment=transfer", "optimizer.lr=0.0003", "schedule.steps=20", "schedule.warmup_steps=2",
                    "schedule.eval_every=10", "network.ema=0.5"], tmp_path / "run", data_dir)
    assert (mine.optimizer.lr, mine.schedule.steps, mine.schedule.warmup_steps, mine.network.ema) == \
        (0.0003, 20, 2, 0.5)
    assert (mine.optimizer.name, mine.loss.label_smoothing) == (cfg.optimizer.name, cfg.loss.label_smoothing)
