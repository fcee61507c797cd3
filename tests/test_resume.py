"""Exact resume: interrupted at step k then resumed gives the same weights as a straight run.

Tiny BERT, 96 rows, batch 8 with gradient_accumulation_steps=2: 6 optimizer steps per epoch,
12 in all, length-grouped batches and dropout on (the engine's defaults). Every parameter is
compared with ``torch.equal``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback

import nbtrain
from nbtrain.events import read_events
from nbtrain.runs import is_complete, newest_complete


def _cfg(tiny_bert: Path, sentiment_csv: dict[str, Path], runs: Path, name: str) -> dict:
    return {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 2,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "lr": 1e-3,
        "runs_dir": str(runs),
        "name": name,
        "save_total_limit": None,
        "load_best_model_at_end": False,  # compare the weights training ends with
    }


@pytest.fixture(scope="module")
def straight(tiny_bert, sentiment_csv, tmp_path_factory) -> dict[str, torch.Tensor]:
    runs = tmp_path_factory.mktemp("straight")
    result = nbtrain.finetune(_cfg(tiny_bert, sentiment_csv, runs, "straight"), display="none")
    assert result.status == "finished"
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


class InterruptAt(TrainerCallback):
    """Raises KeyboardInterrupt (what Ctrl-C raises) at the end of optimizer step ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.k:
            raise KeyboardInterrupt


def _interrupt_then_resume(cfg: dict, extra: dict) -> tuple[nbtrain.RunResult, Path]:
    with pytest.raises(nbtrain.RunInterrupted) as info:
        nbtrain.finetune({**cfg, **extra}, display="none")
    ckpt = Path(info.value.checkpoint)
    assert is_complete(ckpt)
    result = nbtrain.finetune(cfg, display="none")  # same name + config: resumes
    assert result.status == "finished"
    return result, ckpt


def _resumed_from(run_dir: Path) -> list[str | None]:
    return [ev.resumed_from for ev in read_events(run_dir) if ev.type == "start"]


@pytest.mark.parametrize(
    "k", [pytest.param(3, marks=pytest.mark.slow), 8], ids=["mid-epoch-1", "mid-epoch-2"]
)
def test_interrupt_then_resume_equals_straight_run(k, straight, tiny_bert, sentiment_csv, runs_dir):
    # k=3: the resumed run crosses the epoch boundary; k=8: it starts inside epoch 2, whose
    # order must not depend on the RNG state at resume time.
    cfg = _cfg(tiny_bert, sentiment_csv, runs_dir, f"cut{k}")
    result, ckpt = _interrupt_then_resume(cfg, {"callbacks": [InterruptAt(k)]})
    assert ckpt.name == f"checkpoint-{k}"
    assert _resumed_from(result.output_dir)[-1] == str(ckpt)
    _assert_same(straight, result.model.state_dict())


class TerminateBefore(TrainerCallback):
    """Sends SIGTERM to this process while step ``k`` runs (as a preempted VM would)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step + 1 == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_at_epoch_boundary_saves_and_resumes_exactly(
    straight, tiny_bert, sentiment_csv, runs_dir
):
    cfg = _cfg(tiny_bert, sentiment_csv, runs_dir, "term")
    previous = signal.getsignal(signal.SIGTERM)
    result, ckpt = _interrupt_then_resume(cfg, {"callbacks": [TerminateBefore(6)]})
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored after the run
    assert ckpt.name == "checkpoint-6"  # the last step of epoch 1
    ends = [ev for ev in read_events(result.output_dir) if ev.type == "end"]
    assert ends[0].status == "interrupted" and ends[0].resume_checkpoint == str(ckpt)
    _assert_same(straight, result.model.state_dict())


class InterruptInForward(Trainer):
    """Ctrl-C landing inside a forward pass, after dropout has drawn from the RNG."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        if model.training and self.state.global_step == 4:
            raise KeyboardInterrupt
        return loss


def test_interrupt_mid_forward_resumes_exactly(straight, tiny_bert, sentiment_csv, runs_dir):
    cfg = _cfg(tiny_bert, sentiment_csv, runs_dir, "midfwd")
    result, ckpt = _interrupt_then_resume(cfg, {"trainer_class": InterruptInForward})
    assert ckpt.name == "checkpoint-4"  # the last finished step, with its RNG state
    _assert_same(straight, result.model.state_dict())


def test_rerun_of_finished_run_does_not_retrain(tiny_bert, sentiment_csv, runs_dir):
    cfg = _cfg(tiny_bert, sentiment_csv, runs_dir, "again")
    cfg.update(epochs=1, batch_size=32, gradient_accumulation_steps=1)
    first = nbtrain.finetune(cfg, display="none")
    again = nbtrain.finetune(cfg, display="none")
    assert first.status == again.status == "finished"
    assert len(_resumed_from(first.output_dir)) == 1  # no second training start
    assert newest_complete(first.output_dir) is not None


@pytest.mark.slow  # three runs of their own; CI runs it
def test_lora_interrupt_then_resume_equals_straight_run(tiny_bert, sentiment_csv, tmp_path):
    def cfg(name: str) -> dict:
        return {**_cfg(tiny_bert, sentiment_csv, tmp_path / name, name), "lora": {"r": 4}}

    straight = nbtrain.finetune(cfg("straight"), display="none").model.state_dict()
    result, ckpt = _interrupt_then_resume(cfg("cut"), {"callbacks": [InterruptAt(8)]})
    assert (ckpt / "adapter_model.safetensors").is_file()
    assert any("lora_" in k for k in straight)
    _assert_same(straight, result.model.state_dict())
