"""Surviving the usual failures: out of memory, NaN/inf loss, a full or unwritable disk.

Each guard turns a failure into either a recovery the events record (``Notice``) or an
``ErrorEvent`` with one paragraph of advice; ``nbtrain.finetune`` raises it as
``TrainingFailed(kind=...)``. Guards wrap methods of one Trainer instance, so a user's Trainer
subclass keeps its own behaviour underneath.
"""

from __future__ import annotations

import errno
import gc
import shutil
from pathlib import Path
from typing import Any

from nbtrain.events import ErrorEvent, EventBus, Notice

OOM_ADVICE = (
    "Ways to fit: gradient_checkpointing: true (much less activation memory), LoRA "
    "(lora: {r: 16}), a shorter data.max_length, an 8-bit optimizer (optim: adamw_8bit), "
    "precision: bf16/fp16 on a GPU, or a smaller model."
)
NAN_ADVICE = (
    "Lower learning_rate (e.g. 10x), keep max_grad_norm at 1.0, and prefer precision: bf16 "
    "or fp32 over fp16 (fp16 overflows easily). Then re-run with restart=True (--restart) or a "
    "new name. The last checkpoint with finite weights is kept."
)
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


def torch_long() -> Any:
    import torch

    return torch.long


def is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


def smaller_batch(batch: int, accumulation: int) -> tuple[int, int] | None:
    """The next (batch, accumulation) with the same product: the largest divisor of ``batch``
    at most half of it (halving for powers of two). None when ``batch`` is already 1."""
    if batch <= 1:
        return None
    new = next(d for d in range(batch // 2, 0, -1) if batch % d == 0)
    return new, accumulation * (batch // new)


def free_memory(trainer: Any) -> None:
    """Drop gradients and cached blocks after an OOM, so the retry starts from a clean slate."""
    model = getattr(trainer, "model", None)
    if model is not None:
        model.zero_grad(set_to_none=True)
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Guards:
    """Per-run guards installed on a Trainer: NaN detection per micro-step, eval OOM retry."""

    def __init__(self, trainer: Any, bus: EventBus) -> None:
        self.trainer = trainer
        self.bus = bus
        self.nan_step: int | None = None
        self._first_bad: Any = None  # device tensor: first step with a non-finite loss, or -1
        self.oom_history: list[tuple[int, int]] = []
        self.eval_failed = False  # out of memory evaluating one example at a time
        self._wrap_training_step()
        self._wrap_evaluate()

    # -- NaN / inf --------------------------------------------------------------------------
    def _wrap_training_step(self) -> None:
        trainer, original = self.trainer, self.trainer.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            # The Trainer's logging_nan_inf_filter hides a NaN loss from the logs (it logs the
            # running mean instead), so every micro-step is checked. The check stays on the
            # device (no GPU sync in the hot path): the first bad step is kept in a tensor and
            # read in on_step_end only when the Trainer is about to log, evaluate or save.
            if self.nan_step is None:
                bad = loss.detach().isfinite().all().logical_not()
                if self._first_bad is None:
                    self._first_bad = bad.new_full((), -1, dtype=torch_long())
                step = self._first_bad.new_full((), trainer.state.global_step + 1)
                unset = self._first_bad < 0
                self._first_bad = self._first_bad.where(~(bad & unset), step)
            return loss

        trainer.training_step = training_step

    def on_step_end(self, control: Any, *, force: bool = False) -> None:
        """Called from the event callback: a NaN step is never saved or evaluated."""
        due = force or (
            control.should_save
            or control.should_evaluate
            or control.should_log
            or control.should_training_stop
        )
        if self.nan_step is None and due and self._first_bad is not None:
            first = int(self._first_bad)  # the one sync, where the Trainer syncs anyway
            if first >= 0:
                self.nan_step = first
        if self.nan_step is not None:
            control.should_save = False
            control.should_evaluate = False
            control.should_training_stop = True

    # -- out of memory in evaluation: lower the eval batch only -------------------------------
    def _wrap_evaluate(self) -> None:
        trainer, original = self.trainer, self.trainer.evaluate

        def evaluate(*args: Any, **kwargs: Any) -> Any:
            while True:
                try:
                    return original(*args, **kwargs)
                except Exception as e:
                    if not is_oom(e):
                        raise
                    old = trainer.args.per_device_eval_batch_size
                    if old <= 1:
                        self.eval_failed = True
                        raise
                    new = max(1, old // 2)
                    free_memory(trainer)
                    trainer.args.per_device_eval_batch_size = new
                    trainer._eval_dataloaders = {}  # cached loaders hold the old batch size
                    self.bus.emit(
                        Notice(
                            step=trainer.state.global_step,
                            kind="oom",
                            message=f"Out of memory while evaluating: eval batch {old} -> {new} "
                            "(training is unchanged).",
                            data={"phase": "eval", "eval_batch_size": new},
                        )
                    )

        trainer.evaluate = evaluate

    # -- out of memory in training: smaller batch, more accumulation --------------------------
    def shrink_train_batch(self) -> tuple[int, int] | None:
        """Halve the per-device batch and double accumulation; None at batch 1."""
        args = self.trainer.args
        old = (args.per_device_train_batch_size, args.gradient_accumulation_steps)
        nxt = smaller_batch(*old)
        if nxt is None:
            return None
        args.per_device_train_batch_size, args.gradient_accumulation_steps = nxt
        self.trainer._train_batch_size = args.train_batch_size
        self.oom_history.append(nxt)
        self.bus.emit(
            Notice(
                step=self.trainer.state.global_step,
                kind="oom",
                message=f"Out of memory at batch {old[0]}: continuing with batch {nxt[0]} x "
                f"{nxt[1]} accumulation steps (effective batch {nxt[0] * nxt[1]} unchanged).",
                data={
                    "phase": "train",
                    "per_device_train_batch_size": nxt[0],
                    "gradient_accumulation_steps": nxt[1],
                    "effective_batch": nxt[0] * nxt[1],
                },
            )
        )
        return nxt


def oom_error(step: int, batch: int) -> ErrorEvent:
    return ErrorEvent(
        step=step,
        kind="oom",
        message=f"Out of memory even at batch size {batch} (step {step}).",
        advice=OOM_ADVICE,
    )


def nan_error(step: int, kept: str | None) -> ErrorEvent:
    where = f" ({Path(kept).name} is the last good checkpoint)" if kept else ""
    return ErrorEvent(
        step=step,
        kind="nan",
        message=f"The training loss became NaN/inf at step {step}{where}.",
        advice=NAN_ADVICE,
    )


def disk_error(
    e: OSError, folder: Path, step: int, kept: str | None, *, what: str = "a checkpoint"
) -> ErrorEvent:
    thing = what
    free = _free_bytes(folder)
    free_txt = f"{free / 2**20:,.0f} MB free there" if free is not None else "free space unknown"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"The disk is full while saving {thing} to {str(folder)!r} ({free_txt})."
        fix = (
            "Free space (delete old runs or checkpoints), lower save_total_limit, or set "
            "runs_dir to a bigger disk."
        )
    else:
        what = f"Cannot write {thing} to {str(folder)!r}: {e.strerror or e} ({free_txt})."
        fix = "Make the folder writable or set runs_dir to a writable folder."
    resume = (
        f" Earlier checkpoints are intact; re-run to resume from {Path(kept).name}."
        if kept
        else " No earlier checkpoint exists; re-running starts over."
    )
    return ErrorEvent(step=step, kind="disk", message=what, advice=fix + resume)


def _free_bytes(folder: Path) -> int | None:
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def train_surviving(
    trainer: Any, guards: Guards, event_cb: Any, run_dir: Path, resume: str | None
) -> tuple[Any, ErrorEvent | None]:
    """``trainer.train`` that survives CUDA OOM (smaller batch, more accumulation, going on from
    a checkpoint of the last finished step) and turns a full or unwritable disk into an error
    event, removing the half-written checkpoint. Returns (train output, failure)."""
    from nbtrain.runs import MARKER, is_complete, newest_complete, remove_tree

    def newest() -> str | None:
        c = newest_complete(run_dir)
        return str(c.path) if c else None

    while True:
        if resume:  # eval_before_training is the base model's score: step 0 only, not on resume
            trainer.args.eval_on_start = False
        try:
            return trainer.train(resume_from_checkpoint=resume), None
        except Exception as e:
            step = trainer.state.global_step
            if is_disk_error(e):
                ckpt = run_dir / f"checkpoint-{step}"
                if not (ckpt / MARKER).exists():
                    remove_tree(ckpt)
                return None, disk_error(e, run_dir, step, newest())
            if not is_oom(e):
                raise
            free_memory(trainer)
            batch = trainer.args.per_device_train_batch_size
            if guards.eval_failed or guards.shrink_train_batch() is None:
                return None, oom_error(step, 1 if guards.eval_failed else batch)
            if step > 0:
                ckpt = run_dir / f"checkpoint-{step}"
                if not is_complete(ckpt):
                    event_cb.rng.restore(step)  # as the last finished step left it
                    try:
                        trainer._save_checkpoint(trainer.model, trial=None)
                    except Exception:
                        remove_tree(ckpt)
                        raise
                    event_cb.on_save(trainer.args, trainer.state, trainer.control)
                resume = str(ckpt)
