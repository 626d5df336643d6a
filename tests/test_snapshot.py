"""A refused command puts its run folder back: `runfolder.Snapshot` on small folders made here."""
from __future__ import annotations

import os

import pytest

from worklab.run.runfolder import Snapshot


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path):
    """A run folder with a config, a log, a checkpoint folder and the folders other processes own."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run / "run.log").write_text("line 1\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    for owned in ("watch", "workers"):
        (run / owned).mkdir()
        (run / owned / "kept.log").write_text("theirs\n")
    return run


def test_a_put_back_undoes_changes_additions_growth_and_removals(run):
    before = files(run)
    snapshot = Snapshot.take(run)
    (run / ".hydra" / "config.yaml").write_text("seed: 2\n")
    with open(run / "run.log", "a") as log:
        log.write("line 2\n")
    (run / "checkpoints" / "checkpoint").unlink()
    (run / "summaries" / "train").mkdir(parents=True)
    (run / "summaries" / "train" / "events").write_bytes(b"new")
    snapshot.put_back()
    assert files(run) == before
    assert not (run / "summaries").exists()


def test_a_put_back_leaves_what_other_processes_own_even_while_they_remove_it(run, monkeypatch):
    """A cluster's other worker removes its log and workers/ while the chief puts the folder back.

    The folder vanishing between being listed and being opened is what os.scandir then
    meets; the snapshot and the put-back must not open these folders at all.
    """
    snapshot = Snapshot.take(run)
    (run / "workers" / "worker-1.log").write_text("added by worker 1\n")
    (run / "extra.txt").write_text("added by this command\n")
    listing = os.scandir

    def vanished(path="."):
        if os.path.basename(os.fspath(path)) in ("watch", "workers"):
            raise FileNotFoundError(2, "No such file or directory", os.fspath(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", vanished)
    Snapshot.take(run)
    snapshot.put_back()
    monkeypatch.undo()
    assert not (run / "extra.txt").exists()
    assert (run / "workers" / "worker-1.log").read_text() == "added by worker 1\n"
    assert (run / "watch" / "kept.log").read_text() == "theirs\n"


def test_a_refused_worker_removes_its_log_and_leaves_a_folder_another_worker_writes_in(tmp_path):
    from worklab.command import Prepared

    folder = tmp_path / "run" / "workers"
    folder.mkdir(parents=True)
    for index in (1, 2):
        (folder / f"worker-{index}.log").write_text(f"worker {index}\n")
    Prepared([], added=[folder, folder / "worker-1.log"]).put_back()
    assert [p.name for p in folder.iterdir()] == ["worker-2.log"]
    Prepared([], added=[folder, folder / "worker-2.log"]).put_back()
    assert not folder.exists()
    Prepared([], added=[folder, folder / "worker-3.log"]).put_back()  # another worker removed both already
