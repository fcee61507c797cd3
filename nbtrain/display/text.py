"""Plain-text renderer for terminals, the CLI and CI logs: a view of the same RunState."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from nbtrain.display.state import RunState, rerun_advice
from nbtrain.events import Event
from nbtrain.format import fmt_time


class TextRenderer:
    """One progress line (redrawn in place on a terminal, throttled), plus a line per event."""

    def __init__(
        self, stream: TextIO | None = None, *, min_interval: float = 0.5, tty: bool | None = None
    ) -> None:
        # The real stream, not a background run's per-thread router: this view's lines are the
        # view, not output of the run to capture.
        stream = stream or sys.stderr
        self.stream = getattr(stream, "original", stream)
        self.tty = self.stream.isatty() if tty is None else tty
        self.min_interval = min_interval if self.tty else 10.0
        self.state = RunState()
        self._last = 0.0
        self._open_line = False
        self._run = ""
        self._named = False
        self._started = False

    def __call__(self, ev: Event) -> None:
        self.state.update(ev)
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
            self._run, self._started = ev.run, True
            self._named = bool((ev.config or {}).get("name"))
            resumed = f", resumed from {ev.resumed_from.split('/')[-1]}" if ev.resumed_from else ""
            self._line(
                f"Training {ev.run}: {ev.task}, {ev.train_samples} examples, {ev.total_steps} "
                f"steps, {ev.params_trainable / 1e6:.1f}M trainable params on {ev.device} "
                f"({ev.precision}){resumed}"
            )
        elif t == "step":
            now = time.time()
            if now - self._last >= self.min_interval or ev.step == ev.total_steps:
                self._last = now
                self._progress()
        elif t == "eval":
            metrics = "  ".join(
                f"{k}={v:.4f}"
                for k, v in ev.metrics.items()
                if not k.endswith(("runtime", "per_second"))
            )
            self._line(f"eval @ step {ev.step} (epoch {ev.epoch:.2f}): {metrics}")
            for sample in (ev.details or {}).get("samples") or []:
                self._line("  " + sample_line(sample))
        elif t == "checkpoint":
            self._line(f"saved {ev.path.split('/')[-1]}")
        elif t == "error":
            self._line(f"error: {ev.message} {ev.advice}".rstrip())
        elif t == "end":
            self._end(ev)

    def _progress(self) -> None:
        s = self.state
        step, total = s.step, s.total_steps
        rate = s.steps_per_second or 0.0
        width = 24
        filled = int(width * s.fraction)
        bar = "#" * filled + "-" * (width - filled)
        losses = s.train_loss
        loss = f"  loss {losses[-1][1]:.4f}" if losses else ""
        text = (
            f"[{bar}] {step}/{total}  epoch {s.epoch:.2f}  {fmt_time(s.elapsed)}"
            f"<{fmt_time(s.eta, unknown='--:--')}  {rate:.2f} it/s{loss}"
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
            if ev.resume_checkpoint:
                self._line(
                    f"Run {ev.status} at step {ev.step}; progress saved in "
                    f"{ev.resume_checkpoint}. {rerun_advice(self._run, self._named)}"
                )
            else:
                self._line(
                    f"Run {ev.status} at step {ev.step} before its first checkpoint; running "
                    "it again starts from the beginning."
                )
        elif self._started:
            # The error line above said what failed; before training started it is all there
            # is to say (nothing was trained, nothing to resume).
            saved = (
                f"; progress saved in {ev.resume_checkpoint}. "
                + rerun_advice(self._run, self._named, failed=True)
                if ev.resume_checkpoint
                else "."
            )
            self._line(f"Run failed at step {ev.step}{saved}")

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False


def sample_line(sample: dict[str, Any], width: int = 60) -> str:
    """One generated sample as a line: prompt -> output [chosen / rejected / reward]."""

    def cut(v: Any) -> str:
        text = " ".join(str(v).split())
        return text if len(text) <= width else text[: width - 1] + "…"

    line = f"{cut(sample.get('prompt', ''))!r} -> {cut(sample.get('output', ''))!r}"
    for key in ("reference", "chosen", "rejected"):
        if sample.get(key):
            line += f"  {key}: {cut(sample[key])!r}"
    if isinstance(sample.get("reward"), (int, float)):
        line += f"  reward {sample['reward']:.3f}"
    return line
