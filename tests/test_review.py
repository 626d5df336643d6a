"""Tests for worklab.review over fake run folders made of hand-written summary.json files."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from worklab.review import main

ROOT = Path(__file__).resolve().parents[1]
HYPER = "outputs/2026-11-26/10-11-12"


def summary(status: str, overrides: List[str], step: int, best, wall_time: float, **extra) -> Dict:
    best = dict(zip(("loss", "accuracy", "step"), best)) if best else None
    return {"status": status, "schedule": "fixed", "overrides": overrides, "step": step, "best": best,
            "wall_time": wall_time, "updated": 1795667868.048, **extra}


# run folder (relative to tmp_path) -> summary; every readable run shares reader=json.
RUNS = {
    "multirun/2026-11-26/08-00-00/2": summary("finished", ["reader=json", "network.width=2"], 400,
                                              (0.41, 0.88, 400), 65.2),
    "multirun/2026-11-26/08-00-00/10": summary("failed", ["reader=json", "network.width=10"], 120, None, 30.0,
                                               error="ResourceExhaustedError: out of memory"),
    "multirun/sweep/optimizer.lr=0.05": summary("finished", ["reader=json", "optimizer.lr=0.05"], 500,
                                                (0.45, 0.89, 500), 59.6),
    HYPER: summary("running", ["reader=json", "schedule=hyper"], 900, (0.35, 0.91, 300), 3725.0),
    f"{HYPER}/optimizer.lr=0.1": summary("finished", ["reader=json", "schedule=hyper", "optimizer.lr=0.1"], 600,
                                         (0.5, 0.8, 500), 2000.0),
    f"{HYPER}/optimizer.lr=0.01": summary("interrupted", ["reader=json", "schedule=hyper", "optimizer.lr=0.01"],
                                          300, (0.35, 0.91, 300), 1700.0),
}
BROKEN = {  # run folder -> summary.json text that is not a JSON object
    "outputs/2026-11-26/11-00-00": '{"status": "finished", "ste',
    "outputs/2026-11-26/12-00-00": "",
    "outputs/2026-11-26/13-00-00": "[1, 2]",
}
A, B, C, D, E, F = RUNS  # in the order the dict lists them
G, H, I = BROKEN


@pytest.fixture
def runs(tmp_path) -> Path:
    """The runs above, plus folders that are not runs or must not be searched."""
    for name, data in RUNS.items():
        write(tmp_path / name / "summary.json", json.dumps(data))
    for name, text in BROKEN.items():
        write(tmp_path / name / "summary.json", text)
    write(tmp_path / "data" / "train.json", "{}")
    for skipped in ("checkpoints", "tensorboard", "evaluations", "watch", ".hydra"):
        write(tmp_path / HYPER / skipped / "summary.json", json.dumps(RUNS[HYPER]))
    return tmp_path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def review(capsys, *argv) -> List[Dict[str, str]]:
    """Run the review with --markdown and return its rows as dicts keyed by header."""
    assert main([*map(str, argv), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, *body = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    assert set(body[0]) <= {"---", "---:"}
    return [dict(zip(header, cells)) for cells in body[1:]]


def test_finds_every_run_and_only_runs(runs, capsys):
    rows = review(capsys, runs / "multirun", runs / "outputs", runs / "data")
    assert [row["run"] for row in rows] == [A, B, C, D, F, E, G, H, I]


def test_row_values_and_common_overrides_dropped(runs, capsys):
    rows = {row["run"]: row for row in review(capsys, runs, "--wide")}
    assert rows[A] == {"run": A, "schedule": "fixed", "status": "finished", "steps": "400",
                       "chosen on": "test", "best loss": "0.4100", "accuracy": "0.880", "at step": "400",
                       "test loss": "0.4100", "test accuracy": "0.880", "ECE": "-", "wall time": "1m05s", "": "",
                       "overrides": "network.width=2"}
    assert rows[E]["overrides"] == "schedule=hyper optimizer.lr=0.1"
    assert [rows[name]["wall time"] for name in (B, C, D)] == ["30s", "1m00s", "1h02m05s"]
    assert [rows[B][key] for key in ("best loss", "accuracy", "at step")] == ["-", "-", "-"]


def test_lowest_loss_is_marked_on_every_row_that_has_it(runs, capsys):
    rows = review(capsys, runs)
    assert [row["run"] for row in rows if row[""] == "<- best"] == [D, F]  # the search repeats its best sub-run


@pytest.mark.parametrize("name", list(BROKEN))
def test_unreadable_summary_is_a_row(runs, capsys, name):
    (row,) = review(capsys, runs / name)
    assert row == {"run": Path(name).name, "schedule": "-", "status": "unreadable", "steps": "-", "chosen on": "-",
                   "best loss": "-", "accuracy": "-", "test loss": "-", "test accuracy": "-", "ECE": "-",
                   "wall time": "-", "": ""}


def test_summary_with_wrong_types_shows_dashes(tmp_path, capsys):
    write(tmp_path / "run" / "summary.json", json.dumps({"status": 3, "step": "many", "best": [0.1], "overrides": 7}))
    (row,) = review(capsys, tmp_path)
    assert list(row.values()) == ["run"] + ["-"] * 10 + [""]


def test_single_run_shows_all_overrides_named_by_its_folder(runs, capsys):
    (row,) = review(capsys, runs / E, "--wide")
    assert row["run"] == "optimizer.lr=0.1"
    assert row["overrides"] == "reader=json schedule=hyper optimizer.lr=0.1"
    assert row[""] == "<- best"


def test_hyper_search_given_alone_is_named_with_its_sub_runs(runs, capsys):
    rows = review(capsys, runs / D, "--wide")
    assert [row["run"] for row in rows] == ["10-11-12", "10-11-12/optimizer.lr=0.01", "10-11-12/optimizer.lr=0.1"]
    assert [row["overrides"] for row in rows] == ["-", "optimizer.lr=0.01", "optimizer.lr=0.1"]


@pytest.mark.parametrize("key, order", [
    ("run", [A, B, C, D, F, E, G, H, I]),
    ("status", [B, A, C, E, F, D, G, H, I]),  # failed, finished, interrupted, running, unreadable
    ("steps", [B, F, A, C, E, D, G, H, I]),
    ("loss", [D, F, A, C, E, B, G, H, I]),
    ("test_loss", [D, F, A, C, E, B, G, H, I]),
    ("accuracy", [D, F, C, A, E, B, G, H, I]),  # descending
    ("wall_time", [B, C, A, F, E, D, G, H, I]),
])
def test_sort(runs, capsys, key, order):
    assert [row["run"] for row in review(capsys, runs, "--sort", key)] == order


def test_csv_has_full_overrides_and_raw_numbers(runs, capsys, tmp_path):
    path = tmp_path / "runs.csv"
    assert main([str(runs), "--sort", "loss", "--csv", str(path)]) == 0
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "schedule", "overrides", "status", "steps", "chosen_on", "loss", "accuracy",
                             "best_step", "test_loss", "test_accuracy", "ece", "wall_time"]
    assert [row["run"] for row in rows] == [D, F, A, C, E, B, G, H, I]
    assert rows[0] == {"run": D, "schedule": "fixed", "overrides": "reader=json schedule=hyper", "status": "running",
                       "steps": "900", "chosen_on": "test", "loss": "0.35", "accuracy": "0.91", "best_step": "300",
                       "test_loss": "0.35", "test_accuracy": "0.91", "ece": "", "wall_time": "3725.0"}
    assert rows[-1] == {"run": I, "schedule": "", "overrides": "", "status": "unreadable", "steps": "",
                        "chosen_on": "", "loss": "", "accuracy": "", "best_step": "", "test_loss": "",
                        "test_accuracy": "", "ece": "", "wall_time": ""}
    assert "<- best" in capsys.readouterr().out  # the table is printed as well


def test_a_validated_run_shows_its_validation_best_and_the_test_reported_apart(tmp_path, capsys):
    validated = summary("finished", ["reader.val_split=0.1"], 600, (0.30, 0.92, 500), 10.0,
                        test={"loss": 0.45, "accuracy": 0.86, "step": 500, "split": "test"})
    validated["best"]["split"] = "val"
    write(tmp_path / "run" / "summary.json", json.dumps(validated))
    (row,) = review(capsys, tmp_path, "--wide")
    assert [row[key] for key in ("chosen on", "best loss", "at step", "test loss", "test accuracy")] == \
        ["val", "0.3000", "500", "0.4500", "0.860"]


def test_csv_that_cannot_be_written_exits_2(runs, capsys, tmp_path):
    assert main([str(runs), "--csv", str(tmp_path / "no" / "such" / "runs.csv")]) == 2
    assert "runs.csv" in capsys.readouterr().err


def test_markdown_format(runs, capsys):
    assert main([str(runs / "multirun"), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| run | schedule | status | steps | chosen on | best loss | accuracy | test loss "
                        "| test accuracy | ECE | wall time |  |")
    assert lines[1] == "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    assert lines[2] == ("| 2026-11-26/08-00-00/2 | fixed | finished | 400 | test | 0.4100 | 0.880 "
                        "| 0.4100 | 0.880 | - | 1m05s | <- best |")
    assert len(lines) == 5


def test_markdown_escapes_pipes_and_overrides_are_shell_quoted(tmp_path, capsys):
    override = "network.lr_mult=[{match: 'conv|dense', mult: 2}]"
    write(tmp_path / "run" / "summary.json", json.dumps(summary("finished", [override], 4, None, 1.0)))
    (row,) = review(capsys, tmp_path, "--wide")
    assert row["overrides"] == "'network.lr_mult=[{match: '\"'\"'conv\\|dense'\"'\"', mult: 2}]'"


def test_text_table_is_aligned(runs, capsys):
    assert main([str(runs / "multirun")]) == 0
    header, rule, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["run", "schedule", "status", "steps", "chosen", "on", "best", "loss", "accuracy",
                              "test", "loss", "test", "accuracy", "ECE", "wall", "time"]
    assert set(rule) == {"-", " "}
    status = header.index("status")
    assert [line[status:].split()[0] for line in lines] == ["finished", "failed", "finished"]
    assert lines[0].endswith("<- best")
    assert len({len(line) for line in lines[1:]} | {len(header)}) == 1  # unmarked lines are padded alike


def test_missing_path_exits_2_naming_it(runs, capsys):
    assert main([str(runs), str(runs / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert "nowhere" in captured.err and captured.out == ""


def test_no_runs_exits_1(runs, capsys):
    assert main([str(runs / "data")]) == 1
    captured = capsys.readouterr()
    assert "no runs" in captured.err and captured.out == ""


def test_entry_point_runs_without_tensorflow(runs):
    # -X importtime lists every imported module on stderr: TensorFlow must not be among them.
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "worklab.review", str(runs / "multirun")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2026-11-26/08-00-00/10" in done.stdout
    assert "tensorflow" not in done.stderr


def test_the_default_table_fits_a_terminal_and_wide_adds_the_overrides(tmp_path, capsys):
    long = [f"network.lr_mult=[{{match: 'stage{i}', mult: 0.{i}}}]" for i in range(1, 9)]
    write(tmp_path / "run" / "summary.json", json.dumps(summary("finished", long, 400, (0.41, 0.88, 400), 65.2)))
    assert main([str(tmp_path)]) == 0
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 120
    assert main([str(tmp_path), "--wide"]) == 0
    assert "stage8" in capsys.readouterr().out


def test_the_ece_of_the_test_comes_from_its_evaluation_file(tmp_path, capsys):
    validated = summary("finished", [], 600, (0.30, 0.92, 500), 10.0,
                        test={"loss": 0.45, "accuracy": 0.86, "step": 500, "split": "test"})
    write(tmp_path / "run" / "summary.json", json.dumps(validated))
    write(tmp_path / "run" / "evaluations" / "step-000500.json", json.dumps({"step": 500, "ece": 0.0734}))
    (row,) = review(capsys, tmp_path)
    assert row["ECE"] == "0.073"


def test_a_finished_run_whose_newest_checkpoint_was_lost_is_not_shown_finished(tmp_path, capsys):
    write(tmp_path / "run" / "summary.json", json.dumps(summary("finished", [], 400, (0.41, 0.88, 400), 65.2)))
    for step in (200, 400):
        write(tmp_path / "run" / "checkpoints" / f"ckpt-{step}.index", "")
        write(tmp_path / "run" / "checkpoints" / f"ckpt-{step}.data-00000-of-00001", "")
    assert review(capsys, tmp_path)[0]["status"] == "finished"
    (tmp_path / "run" / "checkpoints" / "ckpt-400.data-00000-of-00001").unlink()  # the newest one is lost
    assert review(capsys, tmp_path)[0]["status"] == "ckpt lost"


def job(folder: Path, schedule: str, files: Dict[str, object]) -> None:
    """A reading job's folder: its saved overrides and the result files given."""
    write(folder / ".hydra" / "overrides.yaml", f"- {schedule}\n- resume=outputs/run\n")
    for name, data in files.items():
        write(folder / name, json.dumps(data))


def test_reading_jobs_are_shown_as_what_they_are(tmp_path, capsys):
    evaluation = {"step": 400, "loss": 0.52, "accuracy": 0.81, "ece": 0.041}
    job(tmp_path / "a-test", "schedule=test", {"evaluations/step-000400.json": evaluation})
    job(tmp_path / "b-predict", "schedule=predict", {"predictions.jsonl": {}, "evaluation.json": evaluation})
    job(tmp_path / "c-predict", "schedule=predict", {})  # failed before its predictions were written
    job(tmp_path / "d-export", "schedule=export", {})
    rows = review(capsys, tmp_path)
    assert [(r["run"], r["schedule"], r["status"], r["test loss"], r["ECE"]) for r in rows] == [
        ("a-test", "test", "done", "0.5200", "0.041"), ("b-predict", "predict", "done", "0.5200", "0.041"),
        ("c-predict", "predict", "no result", "-", "-"), ("d-export", "export", "-", "-", "-")]
    (row,) = review(capsys, tmp_path / "a-test")
    assert row["run"] == "a-test"  # one job given alone is named by its folder
