"""The bridge from ``TrainerCallback`` to nbtrain events; it honours stop requests."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback

from nbtrain.engine.resume import RngSnapshot
from nbtrain.engine.stop import StopController
from nbtrain.events import CheckpointSaved, Evaluated, EventBus, Logged, Notice, StepEnd
from nbtrain.runs import dir_size, write_marker

_LOG_KEYS_DROP = {"epoch", "total_flos", "step"}
#: Stop reasons as numbers the processes reduce with MAX: the strongest one wins.
_STOP_CODES = {"stopped": 1, "interrupted": 2, "terminated": 3}


class EventCallback(TrainerCallback):
    """Turns Trainer callbacks into events, marks complete checkpoints, honours stop requests."""

    def __init__(self, bus: EventBus, task: Any, stop: StopController) -> None:
        self.bus = bus
        self.task = task
        self.stop = stop
        self.last_eval_step: int | None = None
        self.nan_step: int | None = None
        self.train_start = time.time()
        self.train_samples_per_second: float | None = None
        self.rng = RngSnapshot()  # restored before an interrupt's checkpoint is written
        self.guards: Any = None  # safety.Guards, set once the Trainer exists
        self.stopping = False  # this process leaves the loop for a stop request (agreed by all)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.train_start = time.time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.rng.take(state.global_step)
        self.bus.emit(
            StepEnd(
                step=state.global_step, epoch=float(state.epoch or 0), total_steps=state.max_steps
            )
        )
        # Read the request once: a watcher thread may set it at any moment, and with several
        # processes only the agreed value may decide, else one rank leaves the loop while the
        # others wait in the next step's all-reduce (gloo: "collective mismatch").
        if getattr(args, "world_size", 1) > 1:
            stopping = self._agree_on_stop(args.device)
        else:
            stopping = self.stop.requested
        if self.guards is not None:
            self.guards.on_step_end(control, force=stopping)
        if stopping and (self.guards is None or self.guards.nan_step is None):
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True

    def _agree_on_stop(self, device: Any) -> bool:
        """Whether every process stops at this step: a request seen by one (its Ctrl-C, the stop
        file) is shared with all. A request that arrives after the all-reduce waits for the next
        step's, so all processes return the same answer."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.stop.requested
        requested, reason = self.stop.requested, self.stop.reason
        mine = _STOP_CODES.get(reason or "", 1) if requested else 0
        code = torch.tensor([mine], device=device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        agreed = int(code.item())
        if agreed and not self.stop.requested:
            self.stop.request(next(r for r, c in _STOP_CODES.items() if c == agreed))
        return bool(agreed)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        logs = dict(logs or {})
        if any(k.startswith("eval_") for k in logs):
            return  # evaluations arrive through on_evaluate
        if "train_runtime" in logs:
            # The Trainer's closing summary: it goes into the end event, not the curves.
            self.train_samples_per_second = logs.get("train_samples_per_second")
            return
        values = {
            k: float(v)
            for k, v in logs.items()
            if k not in _LOG_KEYS_DROP and isinstance(v, (int, float))
        }
        if not values:
            return
        loss = values.get("loss")
        if loss is not None and not math.isfinite(loss) and self.nan_step is None:
            self.nan_step = state.global_step
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False
        self.bus.emit(Logged(step=state.global_step, epoch=float(state.epoch or 0), values=values))

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        metrics = {
            (k[5:] if k.startswith("eval_") else k): float(v)
            for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and k != "epoch"
        }
        self.last_eval_step = state.global_step
        details = dict(getattr(self.task, "last_details", {}) or {})
        self.bus.emit(
            Evaluated(
                step=state.global_step,
                epoch=float(state.epoch or 0),
                metrics=metrics,
                details=details,
            )
        )

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and state.is_world_process_zero:
            write_marker(ckpt)
            self.bus.emit(
                CheckpointSaved(
                    step=state.global_step,
                    epoch=float(state.epoch or 0),
                    path=str(ckpt),
                    size_bytes=dir_size(ckpt),
                )
            )


class VisibleEarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping, plus a notice users see on the live view, the card and in
    ``RunResult.stopped_early`` when it ends the run before its last step."""

    def __init__(self, bus: EventBus, patience: int) -> None:
        super().__init__(early_stopping_patience=patience)
        self.bus = bus
        self.fired = False

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any, **kw: Any) -> None:
        super().on_evaluate(args, state, control, metrics, **kw)
        early = state.max_steps and state.global_step < state.max_steps
        if control.should_training_stop and early and not self.fired:
            self.fired = True
            metric = args.metric_for_best_model
            metric = metric if metric.startswith("eval_") else f"eval_{metric}"
            epoch = float(state.epoch or 0)
            n = self.early_stopping_patience
            self.bus.emit(
                Notice(
                    step=state.global_step,
                    kind="early_stop",
                    message=(
                        f"stopped early at epoch {round(epoch) if abs(epoch - round(epoch)) < 0.01 else round(epoch, 2)}: "
                        f"no improvement of {metric} in {n} evaluation{'s' if n != 1 else ''}"
                    ),
                    data={
                        "epoch": epoch,
                        "metric": metric,
                        "patience": n,
                        "best_metric": state.best_metric,
                    },
                )
            )
