"""The run store: complete vs torn checkpoints, best/newest, protected deletion, disk use."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from transformers import TrainerCallback

import nbtrain
from nbtrain.engine.stop import StopController
from nbtrain.events import read_events
from nbtrain.runs import (
    MARKER,
    best_checkpoint,
    delete_checkpoint,
    dir_size,
    is_complete,
    list_checkpoints,
    list_runs,
    newest_complete,
    run_status,
)


class StopAt(TrainerCallback):
    """Asks the run to stop (as the Stop button does) while step ``k`` runs."""

    def __init__(self, stop: StopController, k: int) -> None:
        self.stop, self.k = stop, k

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step + 1 == self.k:
            self.stop.request()


def _cfg(tiny_bert, sentiment_csv, runs: Path, name: str, **kw) -> dict:
    return {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "batch_size": 16,
        "lr": 1e-3,
        "max_steps": 8,
        "save_strategy": "steps",
        "save_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_total_limit": None,
        "runs_dir": str(runs),
        "name": name,
        **kw,
    }


@pytest.fixture(scope="module")
def stopped_run(tiny_bert, sentiment_csv, tmp_path_factory) -> tuple[Path, dict]:
    """A run stopped at step 6 of 8, with checkpoints (and evaluations) at 2, 4 and 6."""
    runs = tmp_path_factory.mktemp("store")
    cfg = _cfg(tiny_bert, sentiment_csv, runs, "stopped")
    stop = StopController()
    result = nbtrain.finetune({**cfg, "callbacks": [StopAt(stop, 6)]}, display="none", stop=stop)
    assert result.status == "stopped"
    return runs / "stopped", cfg


@pytest.fixture
def run_copy(stopped_run, tmp_path) -> tuple[Path, dict]:
    src, cfg = stopped_run
    dst = tmp_path / "runs" / "stopped"
    shutil.copytree(src, dst)
    return dst, {**cfg, "runs_dir": str(dst.parent)}


def test_lists_checkpoints_with_step_epoch_metrics_and_flags(stopped_run):
    run, _ = stopped_run
    ckpts = list_checkpoints(run)
    assert [c.step for c in ckpts] == [2, 4, 6]
    assert all(c.complete and c.size_bytes > 0 and c.epoch is not None for c in ckpts)
    assert all("accuracy" in c.metrics for c in ckpts)  # evals at steps 2, 4, 6
    assert [c.is_newest for c in ckpts] == [False, False, True]
    best = best_checkpoint(run)
    assert best is not None and best.is_best
    assert newest_complete(run).step == 6


@pytest.mark.parametrize(
    "tear",
    ["missing_optimizer", "truncated_weights", "no_marker", "truncated_state"],
)
def test_torn_checkpoint_is_never_chosen_and_is_cleaned_up(run_copy, tear):
    run, cfg = run_copy
    torn = run / "checkpoint-6"
    if tear == "missing_optimizer":
        (torn / "optimizer.pt").unlink()
    elif tear == "truncated_weights":
        with open(torn / "model.safetensors", "r+b") as fh:
            fh.truncate(1000)
    elif tear == "no_marker":
        (torn / MARKER).unlink()  # cut off between the Trainer's save and nbtrain's marker
    else:
        (torn / "trainer_state.json").write_text('{"global_step": 6, "log_hi')
    assert not is_complete(torn)
    assert newest_complete(run).step == 4
    if tear != "no_marker":
        return
    # A save cut off early: only part of the weights file (training never saves at step 7).
    half = run / "checkpoint-7"
    half.mkdir()
    (half / "model.safetensors").write_bytes((torn / "model.safetensors").read_bytes()[:999])
    assert newest_complete(run).step == 4
    # Re-running resumes from checkpoint-4; the torn folders are removed first.
    result = nbtrain.finetune(cfg, display="none")
    assert result.status == "finished"
    assert not half.exists()
    starts = [ev for ev in read_events(run) if ev.type == "start"]
    assert starts[-1].resumed_from == str(run / "checkpoint-4")


def test_checkpoint_from_plain_trainer_is_judged_by_its_files(stopped_run, tmp_path):
    # Outside an nbtrain run there is no marker: the files must be there and whole.
    src = stopped_run[0] / "checkpoint-4"
    ck = tmp_path / "elsewhere" / "checkpoint-4"
    shutil.copytree(src, ck)
    (ck / MARKER).unlink()
    assert is_complete(ck)
    with open(ck / "model.safetensors", "r+b") as fh:
        fh.truncate(os.path.getsize(ck / "model.safetensors") - 10)
    assert not is_complete(ck)


def test_delete_protects_best_and_newest_and_truncates_first(run_copy, tmp_path):
    run, _ = run_copy
    ckpts = list_checkpoints(run)
    protected = [c for c in ckpts if c.is_best or c.is_newest]
    for c in protected:
        with pytest.raises(PermissionError, match="kept"):
            delete_checkpoint(c)
    victim = next(c for c in ckpts if not (c.is_best or c.is_newest))
    # A hard link outside sees the file's bytes: it must be emptied before the delete, so a
    # Google Drive mount sends an empty file to its trash.
    outside = tmp_path / "link.safetensors"
    os.link(victim.path / "model.safetensors", outside)
    assert outside.stat().st_size > 0
    delete_checkpoint(victim)
    assert not victim.path.exists()
    assert outside.stat().st_size == 0
    delete_checkpoint(protected[-1], force=True)
    assert not protected[-1].path.exists()


def test_run_status_list_runs_and_disk_use(stopped_run):
    run, _ = stopped_run
    info = run_status(run)
    assert info.status == "stopped" and info.steps == 6 and info.total_steps == 8
    assert "accuracy" in info.metrics
    assert info.size_bytes == dir_size(run) > sum(c.size_bytes for c in list_checkpoints(run))
    assert [r.name for r in list_runs(run.parent)] == ["stopped"]


class RecordCheckpoints(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_save(self, args, state, control, **kw):
        self.seen.append(sorted(c.step for c in list_checkpoints(args.output_dir)))


def test_save_total_limit_never_deletes_the_best(tiny_bert, sentiment_csv, runs_dir):
    scores = iter([0.9, 0.5, 0.3, 0.1])  # the first evaluation is the best

    def metrics(_pred):
        return {"score": next(scores)}

    record = RecordCheckpoints()
    cfg = _cfg(
        tiny_bert,
        sentiment_csv,
        runs_dir,
        "limit",
        save_total_limit=1,
        compute_metrics=metrics,
        metric_for_best_model="score",
        greater_is_better=True,
        callbacks=[record],
    )
    result = nbtrain.finetune(cfg, display="none")
    # After every save: the best (2) and the one just written are there, nothing else.
    assert record.seen == [[2], [2, 4], [2, 6], [2, 8]]
    assert best_checkpoint(result.output_dir).step == 2
    # Finished with load_best_model_at_end: final/ holds the best weights; the Trainer drops
    # the last checkpoint, the best stays.
    assert [c.step for c in list_checkpoints(result.output_dir)] == [2]
    assert (result.output_dir / "final" / "model.safetensors").exists()
