"""Plain-text renderer for terminals, the CLI and CI logs."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from nbtrain.events import Event
from nbtrain.format import fmt_time


class TextRenderer:
    """One progress line (redrawn in place on a terminal, throttled), plus a line per event."""

    def __init__(
        self, stream: TextIO | None = None, *, min_interval: float = 0.5, tty: bool | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.min_interval = min_interval if self.tty else 10.0
        self._last = 0.0
        self._start = time.time()
        self._start_step = 0
        self._total = 0
        self._loss: float | None = None
        self._open_line = False

    def __call__(self, ev: Event) -> None:
        t = ev.type
        if t == "stage" and ev.status in ("start", "done"):
            verb = {
                "load_data": "Reading data",
                "tokenize": "Tokenizing",
                "load_model": "Loading model",
            }.get(ev.name, ev.name)
            if ev.status == "done":
                self._line(f"{verb}: done" + (f" ({ev.detail})" if ev.detail else ""))
        elif t == "notice":
            self._line(f"{'Early stopping' if ev.kind == 'early_stop' else 'note'}: {ev.message}")
        elif t == "start":
            self._total = ev.total_steps
            self._start = time.time()
            self._start_step = ev.step
            resumed = f", resumed from {ev.resumed_from.split('/')[-1]}" if ev.resumed_from else ""
            self._line(
                f"Training {ev.run}: {ev.task}, {ev.train_samples} examples, {ev.total_steps} "
                f"steps, {ev.params_trainable / 1e6:.1f}M trainable params on {ev.device} "
                f"({ev.precision}){resumed}"
            )
        elif t == "log":
            self._loss = ev.values.get("loss", self._loss)
        elif t == "step":
            now = time.time()
            if now - self._last >= self.min_interval or ev.step == ev.total_steps:
                self._last = now
                self._progress(ev.step, ev.total_steps or self._total, ev.epoch)
        elif t == "eval":
            metrics = "  ".join(
                f"{k}={v:.4f}"
                for k, v in ev.metrics.items()
                if not k.endswith(("runtime", "per_second"))
            )
            self._line(f"eval @ step {ev.step} (epoch {ev.epoch:.2f}): {metrics}")
        elif t == "checkpoint":
            self._line(f"saved {ev.path.split('/')[-1]}")
        elif t == "error":
            self._line(f"error: {ev.message} {ev.advice}".rstrip())
        elif t == "end":
            self._end(ev)

    def _progress(self, step: int, total: int, epoch: float) -> None:
        elapsed = time.time() - self._start
        done = step - self._start_step
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (total - step) / rate if rate else 0.0
        width = 24
        filled = int(width * step / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        loss = f"  loss {self._loss:.4f}" if self._loss is not None else ""
        text = (
            f"[{bar}] {step}/{total}  epoch {epoch:.2f}  {fmt_time(elapsed)}<{fmt_time(eta)}"
            f"  {rate:.2f} it/s{loss}"
        )
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._open_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _end(self, ev: Any) -> None:
        if ev.status == "finished":
            metrics = "  ".join(
                f"{k}={v:.4f}"
                for k, v in ev.metrics.items()
                if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))
            )
            self._line(f"Finished in {fmt_time(ev.duration_s)}. {metrics}".rstrip())
            if ev.final_dir:
                self._line(f"Model saved to {ev.final_dir}")
        elif ev.status in ("interrupted", "stopped"):
            where = ev.resume_checkpoint or "no checkpoint"
            self._line(
                f"Run {ev.status} at step {ev.step}; progress saved in {where}. Run the "
                "same command again to resume."
            )
        else:
            self._line(f"Run failed at step {ev.step}.")

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
