"""bench/recipes.py's own parts: --recipes parsing, the run length per schedule, accuracies and their means.

The script's runs themselves are benchmarks, not tests: none is launched here.
"""
import importlib.util
import math

import pytest

from conftest import ROOT
from worklab.config.schedules import BitSchedule, FixedSchedule, PatienceSchedule, Stage, TestSchedule, TrainSchedule

spec = importlib.util.spec_from_file_location("bench_recipes", ROOT / "bench" / "recipes.py")
recipes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipes)


def test_overrides_split_at_top_level_commas_only():
    text = "schedule=cosine, 'schedule.stages=[{lr: 0.1, steps: 4}, {lr: 0.01, steps: 2}]',network.lr_mult=[1,2]"
    assert recipes.split_overrides(text) == [
        "schedule=cosine", "'schedule.stages=[{lr: 0.1, steps: 4}, {lr: 0.01, steps: 2}]'", "network.lr_mult=[1,2]"]
    assert recipes.split_overrides("") == []
    with pytest.raises(ValueError, match="unbalanced"):
        recipes.split_overrides("network.lr_mult=[1,2")


def test_recipes_parse_to_names_and_override_lists():
    parsed = recipes.parse_recipes(["default=", "cosine=schedule=cosine,optimizer.lr=0.05", "bit=experiment=bit"])
    assert parsed == {"default": [], "cosine": ["schedule=cosine", "optimizer.lr=0.05"], "bit": ["experiment=bit"]}


@pytest.mark.parametrize("items, message", [
    (["cosine"], "NAME=OVERRIDE"), (["=schedule=cosine"], "NAME=OVERRIDE"), (["a/b=seed=1"], "without '/'"),
    (["a=", "a=seed=1"], "twice"),
])
def test_bad_recipes_are_refused_with_the_reason(items, message):
    with pytest.raises(ValueError, match=message):
        recipes.parse_recipes(items)


def test_command_line_recipes_replace_the_table_and_bad_ones_exit(capsys):
    args = recipes.arguments(["--recipes", "cosine=schedule=cosine", "--steps", "50", "--seeds", "4"])
    assert args.recipes == {"cosine": ["schedule=cosine"]} and args.steps == 50 and args.seeds == [4]
    assert recipes.arguments([]).recipes == recipes.RECIPES
    with pytest.raises(SystemExit) as stop:
        recipes.arguments(["--recipes", "cosine"])
    assert stop.value.code == 2 and "NAME=OVERRIDE" in capsys.readouterr().err


@pytest.mark.parametrize("stages, total, expected", [
    ([400, 100], 500, [400, 100]), ([400, 100], 300, [240, 60]), ([1, 1000], 10, [1, 9]), ([2, 1, 1], 3, [1, 1, 1]),
])
def test_stages_are_scaled_to_the_total_keeping_proportions(stages, total, expected):
    assert recipes.scaled_stages(stages, total) == expected


def test_more_stages_than_steps_is_refused():
    with pytest.raises(ValueError, match="cannot hold 3 stages"):
        recipes.scaled_stages([1, 1, 1], 2)


def test_every_training_schedule_gets_exactly_the_steps_asked_for():
    fixed = FixedSchedule(stages=[Stage(0.2, 400), Stage(0.02, 100)], warmup_steps=300)
    plain = recipes.compose(recipes.length_overrides(fixed, 200)).schedule
    assert [(s.lr, s.steps) for s in plain.stages] == [(0.2, 160), (0.02, 40)]
    assert plain.warmup_steps == 120
    cosine = recipes.compose(["schedule=cosine", "schedule.steps=1000", "schedule.warmup_steps=100"]).schedule
    plain = recipes.compose(["schedule=cosine", *recipes.length_overrides(cosine, 200)]).schedule
    assert (plain.steps, plain.warmup_steps) == (200, 20)
    assert recipes.length_overrides(TrainSchedule(), 200) == ["schedule.steps=200"]
    assert recipes.length_overrides(BitSchedule(), 200) == ["schedule.steps=200"]  # the rule's steps overridden
    assert recipes.length_overrides(PatienceSchedule(), 200) == ["schedule.max_steps=200"]
    with pytest.raises(ValueError, match="TestSchedule"):
        recipes.length_overrides(TestSchedule(), 200)


def test_a_recipe_worklab_refuses_is_skipped_with_why(tmp_path):
    overrides, why = recipes.plan(["reader.demo.variant=hard"], ["experiment=no_such_preset"], 100, tmp_path)
    assert overrides is None and "no_such_preset" in why
    overrides, why = recipes.plan(["reader.demo.variant=hard"], ["optimizer.lr=-1"], 100, tmp_path)
    assert overrides is None and "optimizer.lr=-1" in why
    assert list(tmp_path.iterdir()) == []  # nothing drawn for a refused recipe


def test_accuracies_are_the_validation_choice_and_its_test():
    summary = {"best": {"split": "val", "accuracy": 0.8, "loss": 0.5, "step": 40},
               "test": {"split": "test", "accuracy": 0.75, "loss": 0.6, "step": 40}}
    assert recipes.accuracies(summary) == (0.8, 0.75)
    with pytest.raises(ValueError, match="'test'"):
        recipes.accuracies({"best": {"split": "test", "accuracy": 0.8}})


def test_mean_and_sample_deviation_over_seeds():
    mean, std = recipes.mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    assert recipes.mean_pm_std([0.5, 0.7, 0.9]) == "0.700 ± 0.200"
    assert recipes.mean_pm_std([0.5]) == "0.500" and math.isnan(recipes.mean_std([0.5])[1])
    assert recipes.mean_pm_std([]) == "-"


@pytest.fixture
def drawn(monkeypatch):
    """The demo sets plan() would draw (their arguments), without drawing the full-size sets here."""
    import worklab.data.demo

    sets = []
    monkeypatch.setattr(worklab.data.demo, "ensure_demo", lambda *args: sets.append(args))
    return sets


def test_pretrain_trains_the_default_recipe_once_and_every_run_starts_from_it(tmp_path, monkeypatch, drawn):
    calls = []

    def run_once(overrides, seed, run_dir):
        calls.append((overrides, seed, run_dir))
        return {"status": "finished", "best": {"split": "val", "accuracy": 0.9},
                "test": {"accuracy": 0.8}}, 1.0, ""

    monkeypatch.setattr(recipes, "run_once", run_once)
    start = recipes.pretrain("shapes", 30, tmp_path / "out", tmp_path / "data")
    assert start == [f"restore.path={tmp_path / 'out' / 'pretrain-shapes' / 'checkpoints'}"]
    [(overrides, seed, run_dir)] = calls
    assert seed == 0 and run_dir == tmp_path / "out" / "pretrain-shapes"
    assert "reader.demo.variant=shapes" in overrides and not any(o.startswith("experiment=") for o in overrides)
    assert [(d[0], d[-1]) for d in drawn] == [(tmp_path / "data", "shapes")]  # drawn before the run, not in it
    assert recipes.arguments(["--pretrain", "shapes"]).pretrain == "shapes"


def test_a_failed_pretraining_stops_the_grid_with_its_error(tmp_path, monkeypatch, drawn):
    monkeypatch.setattr(recipes, "run_once", lambda overrides, seed, run_dir: (None, 3.0, "boom"))
    with pytest.raises(SystemExit, match="--pretrain hard: the run failed after 3 s\nboom"):
        recipes.pretrain("hard", 30, tmp_path, tmp_path)
    assert [d[-1] for d in drawn] == ["hard"]
