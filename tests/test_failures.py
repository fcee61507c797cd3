"""Fault injection: out of memory, NaN/inf loss, a full or unwritable disk, unsafe inputs.

Failures are injected where they really happen (a model forward, a parameter, the save
function the Trainer calls); the engine's handling runs for real.
"""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback

import nbtrain
from nbtrain.engine.safety import smaller_batch
from nbtrain.events import read_events
from nbtrain.runs import has_finite_weights, list_checkpoints, newest_complete

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total capacity)"
PKG = Path(nbtrain.__file__).parent


def _cfg(fast_cfg: dict, **kw) -> dict:
    return {**fast_cfg, "epochs": 1, **kw}


def _notices(run_dir: Path, phase: str) -> list[dict]:
    return [
        ev.data
        for ev in read_events(run_dir)
        if ev.type == "notice" and ev.kind == "oom" and ev.data.get("phase") == phase
    ]


class OOMAbove(Trainer):
    """A GPU that fits at most ``train_max`` training / ``eval_max`` eval examples per batch,
    from optimizer step ``after`` on."""

    train_max = 4
    eval_max = 10**9
    after = 0

    def compute_loss(self, model, inputs, *args, **kwargs):
        n = inputs["input_ids"].shape[0]
        limit = self.train_max if model.training else self.eval_max
        if n > limit and self.state.global_step >= self.after:
            raise torch.OutOfMemoryError(OOM)
        return super().compute_loss(model, inputs, *args, **kwargs)


def test_smaller_batch_keeps_the_effective_batch():
    assert smaller_batch(16, 1) == (8, 2)
    assert smaller_batch(6, 2) == (3, 4)
    assert smaller_batch(5, 1) == (1, 5)  # no divisor in between: 5 x 1 -> 1 x 5
    assert smaller_batch(1, 8) is None


def test_oom_in_training_halves_batch_doubles_accumulation_and_continues(fast_cfg):
    class GPU(OOMAbove):
        after = 2  # fits for two steps, then the batch is too big

    cfg = _cfg(fast_cfg, name="oom", save_strategy="no", trainer_class=GPU)
    result = nbtrain.finetune(cfg, display="none")
    assert result.status == "finished"
    seq = [
        (n["per_device_train_batch_size"], n["gradient_accumulation_steps"])
        for n in _notices(result.output_dir, "train")
    ]
    assert seq == [(8, 2), (4, 4)]
    assert {b * a for b, a in seq} == {16}  # effective batch unchanged
    # It went on from a checkpoint of the last finished step, not from scratch.
    starts = [ev for ev in read_events(result.output_dir) if ev.type == "start"]
    assert len(starts) == 1
    end = [ev for ev in read_events(result.output_dir) if ev.type == "end"][-1]
    assert end.step == 6  # 96 rows / 16 per step: every step done exactly once
    steps = [ev.step for ev in read_events(result.output_dir) if ev.type == "log"]
    assert steps == sorted(set(steps))
    assert (result.output_dir / "checkpoint-2").is_dir()


def test_oom_at_batch_one_stops_with_advice(fast_cfg):
    class NoFit(OOMAbove):
        train_max = 0

    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(_cfg(fast_cfg, name="nofit", trainer_class=NoFit), display="none")
    e = info.value
    assert e.kind == "oom"
    msg = str(e)
    for hint in ("gradient_checkpointing", "LoRA", "max_length", "8-bit"):
        assert hint in msg
    assert "\n" not in msg
    seq = [
        (n["per_device_train_batch_size"], n["gradient_accumulation_steps"])
        for n in _notices(Path(e.run_dir), "train")
    ]
    assert seq == [(8, 2), (4, 4), (2, 8), (1, 16)]


def test_oom_in_evaluation_lowers_only_the_eval_batch(fast_cfg):
    class SmallEval(OOMAbove):
        train_max = 10**9
        eval_max = 8

    result = nbtrain.finetune(
        _cfg(fast_cfg, name="evaloom", trainer_class=SmallEval), display="none"
    )
    assert result.status == "finished" and "eval_accuracy" in result.metrics
    assert [n["eval_batch_size"] for n in _notices(result.output_dir, "eval")] == [16, 8]
    assert _notices(result.output_dir, "train") == []


class PoisonAt(TrainerCallback):
    """Sets a weight to NaN at the end of step ``k`` (as a diverging update would)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == self.k:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_nan_stops_and_keeps_last_good_checkpoint(fast_cfg):
    cfg = _cfg(
        fast_cfg,
        name="nan",
        save_strategy="steps",
        save_steps=2,
        eval_strategy="no",
        callbacks=[PoisonAt(4)],
    )
    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(cfg, display="none")
    e = info.value
    assert e.kind == "nan"
    assert "learning_rate" in str(e) and "precision" in str(e) and "step 5" in str(e)
    # checkpoint-4 was written after the poison (NaN weights): never kept or resumed from.
    kept = [c.step for c in list_checkpoints(e.run_dir)]
    assert kept == [2]
    assert newest_complete(e.run_dir).step == 2
    assert has_finite_weights(Path(e.run_dir) / "checkpoint-2")


class NanLossAt(Trainer):
    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        if model.training and self.state.global_step == 3:
            return loss * float("inf")
        return loss


def test_nan_loss_hidden_from_logs_is_caught_and_never_saved(fast_cfg):
    # The Trainer's logging_nan_inf_filter logs a running mean instead of an inf loss.
    cfg = _cfg(
        fast_cfg,
        name="nanloss",
        save_strategy="steps",
        save_steps=2,
        eval_strategy="no",
        trainer_class=NanLossAt,
    )
    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(cfg, display="none")
    assert info.value.kind == "nan" and "step 4" in str(info.value)
    assert [c.step for c in list_checkpoints(info.value.run_dir)] == [2]


def _failing_save(monkeypatch, err: int, on: str = "checkpoint-4") -> None:
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if on in str(f):
            Path(f).write_bytes(b"\0" * 100)  # a partial file, as a full disk leaves it
            raise OSError(
                err,
                "No space left on device" if err == errno.ENOSPC else "Permission denied",
                str(f),
            )
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_saving(fast_cfg, monkeypatch):
    _failing_save(monkeypatch, errno.ENOSPC)
    cfg = _cfg(fast_cfg, name="full", save_strategy="steps", save_steps=2, eval_strategy="no")
    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(cfg, display="none")
    e = info.value
    assert e.kind == "disk"
    msg = str(e)
    assert str(Path(e.run_dir)) in msg and "MB free" in msg and "checkpoint-2" in msg
    run = Path(e.run_dir)
    assert not (run / "checkpoint-4").exists()  # the partial one is gone
    assert [c.step for c in list_checkpoints(run) if c.complete] == [2]  # earlier one intact
    monkeypatch.undo()
    resumed = nbtrain.finetune(cfg, display="none")  # space freed: re-run resumes
    assert resumed.status == "finished"
    starts = [ev for ev in read_events(run) if ev.type == "start"]
    assert starts[-1].resumed_from == str(run / "checkpoint-2")


def test_folder_becomes_unwritable_while_saving(fast_cfg, monkeypatch):
    _failing_save(monkeypatch, errno.EACCES, on="checkpoint-2")
    cfg = _cfg(fast_cfg, name="ro", save_strategy="steps", save_steps=2, eval_strategy="no")
    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(cfg, display="none")
    assert info.value.kind == "disk" and "Cannot write" in str(info.value)
    assert not (Path(info.value.run_dir) / "checkpoint-2").exists()


def test_unwritable_runs_dir_is_a_config_error(fast_cfg, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(nbtrain.ConfigError) as info:
        nbtrain.finetune({**fast_cfg, "runs_dir": str(blocker / "runs")}, display="none")
    assert "runs_dir" in str(info.value) and str(blocker / "runs") in str(info.value)


# -- reporters and pass-through arguments -----------------------------------------------------


def test_tensorboard_logs_inside_the_run_folder(fast_cfg):
    result = nbtrain.finetune(
        _cfg(fast_cfg, name="tb", max_steps=2, report_to="tensorboard"), display="none"
    )
    assert result.status == "finished"
    assert list((result.output_dir / "tensorboard").glob("events.out.tfevents.*"))


def _hide_tensorboard(monkeypatch):
    import sys

    for name in ("tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, name, None)  # find_spec and import now fail


def test_missing_reporter_is_a_config_error_before_anything_starts(fast_cfg, monkeypatch):
    _hide_tensorboard(monkeypatch)
    cfg = _cfg(fast_cfg, name="tb-missing", report_to=["tensorboard"])
    assert nbtrain.load_config(cfg).report_to == ["tensorboard"]  # the config itself still loads
    seen = []
    with pytest.raises(nbtrain.ConfigError, match=r"report_to: tensorboard needs.*pip install"):
        nbtrain.finetune(cfg, display="none", on_event=seen.append)
    assert not (Path(fast_cfg["runs_dir"]) / "tb-missing").exists()  # no run left at "new"
    assert [e.type for e in seen] == ["error", "end"]  # before any data was read


def test_pass_through_argument_of_the_wrong_type_is_a_config_error(fast_cfg):
    with pytest.raises(nbtrain.ConfigError, match=r"adam_beta1: 'not a number' is not valid"):
        nbtrain.finetune(_cfg(fast_cfg, name="beta", adam_beta1="not a number"), display="none")
    assert not Path(fast_cfg["runs_dir"]).exists()  # refused before anything started


# -- security defaults ------------------------------------------------------------------------


def test_pickled_weights_are_refused(fast_cfg, tiny_bert, tmp_path):
    from safetensors.torch import load_file

    from nbtrain.engine.model import _has_safetensors

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_bert.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save(load_file(tiny_bert / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(nbtrain.ConfigError, match="safetensors"):
        _has_safetensors(str(folder))
    with pytest.raises(nbtrain.ConfigError, match="pickled"):
        nbtrain.finetune({**fast_cfg, "model": str(folder), "name": "pickled"}, display="none")
    assert _has_safetensors(str(tiny_bert)) is True


def test_unsafe_yaml_tag_is_rejected():
    from nbtrain.config.load import parse_yaml

    with pytest.raises(nbtrain.ConfigError, match="safe_load"):
        parse_yaml("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(nbtrain.ConfigError, match="not"):
        nbtrain.load_config("model: x\ndata: !!python/object:builtins.dict {}\n")


def _calls(name: str):
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if called == name:
                    yield path, node


class _InterruptAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_resume_unpickles_only_with_weights_only(fast_cfg, monkeypatch):
    """Resuming reads optimizer, scheduler and RNG state (torch.load): never with full pickle."""
    cfg = _cfg(fast_cfg, name="wo", save_strategy="no", callbacks=[_InterruptAt(2)])
    with pytest.raises(nbtrain.RunInterrupted):
        nbtrain.finetune(cfg, display="none")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    result = nbtrain.finetune({**cfg, "callbacks": []}, display="none")
    assert result.status == "finished"
    assert calls, "resuming loaded no optimizer/RNG state: the checkpoint was not used"
    assert all(w is True for w in calls), calls


def test_trust_remote_code_is_off_unless_configured():
    assert nbtrain.Config(model="x").trust_remote_code is False
    for path, node in _calls("from_pretrained"):
        for k in node.keywords:
            if k.arg == "trust_remote_code":
                assert not (isinstance(k.value, ast.Constant) and k.value.value is True), (
                    f"{path}:{node.lineno} hard-codes trust_remote_code=True"
                )


def test_disk_full_while_saving_the_final_model(fast_cfg, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    real = PreTrainedTokenizerBase.save_pretrained

    def full(self, path, *args, **kwargs):
        if "final.tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full)
    cfg = _cfg(fast_cfg, name="full-final")
    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(cfg, display="none")
    run = Path(info.value.run_dir)
    assert info.value.kind == "disk" and "final model" in str(info.value)
    assert not (run / "final.tmp").exists() and not (run / "final").exists()
    assert any(c.complete for c in list_checkpoints(run))  # checkpoints intact
    monkeypatch.undo()
    done = nbtrain.finetune(cfg, display="none")  # space freed: the re-run writes final/
    assert done.status == "finished" and (run / "final").is_dir()


def test_nan_between_logging_steps_is_dated_exactly_and_never_saved(fast_cfg):
    # The check stays on the device between logging/saving steps (no sync per micro-step);
    # the first bad step is still named exactly, and the save at step 5 never happens.
    cfg = _cfg(
        fast_cfg,
        name="nan-lazy",
        save_strategy="steps",
        save_steps=5,
        logging_steps=5,
        eval_strategy="no",
        trainer_class=NanLossAt,
    )
    with pytest.raises(nbtrain.TrainingFailed) as info:
        nbtrain.finetune(cfg, display="none")
    assert info.value.kind == "nan" and "step 4" in str(info.value)
    assert list_checkpoints(info.value.run_dir) == []
    ends = [ev for ev in read_events(info.value.run_dir) if ev.type == "end"]
    assert ends[-1].status == "failed" and ends[-1].step == 5  # stopped at the first check
