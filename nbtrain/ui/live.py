"""A live view that draws into an ipywidgets ``Output`` from the training thread.

The form and the browser train in a background thread (so their Stop button is handled while
training runs). Output captured with ``with out:`` from another thread lands in whatever cell
the kernel is busy with, so this view replaces ``out.outputs`` directly: one HTML bundle,
redrawn in place, throttled by time.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any

from nbtrain.events import Event
from nbtrain.format import fmt_time

_CSS = (
    "<style>.nbt-live{font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;"
    "max-width:720px}.nbt-live table{border-collapse:collapse;margin:4px 0}"
    ".nbt-live td,.nbt-live th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}"
    ".nbt-live th{font-weight:600}.nbt-bar{background:#e6e6e6;height:12px;border-radius:6px;"
    "overflow:hidden;width:100%;max-width:480px}.nbt-bar>div{background:#2b7bd6;height:100%}"
    ".nbt-card{border:1px solid #bbb;border-radius:6px;padding:8px 12px;margin-top:6px;"
    "background:#fafafa}.nbt-bad{color:#b00020}</style>"
)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


class PanelView:
    """An event subscriber that shows progress, metrics and, at the end, the run card."""

    def __init__(self, out: Any, *, min_interval: float = 0.3) -> None:
        self.out = out
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._last = 0.0
        self.stage = "Starting"
        self.run = ""
        self.run_dir = ""
        self.step = 0
        self.epoch = 0.0
        self.total = 0
        self.start_step = 0
        self.t0: float | None = None
        self.loss: float | None = None
        self.evals: list[tuple[int, float, dict[str, float]]] = []
        self.checkpoints: list[str] = []
        self.notices: list[str] = []
        self.error: str | None = None
        self.end: Any = None
        self.message = ""

    # -- events ------------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        t = ev.type
        if t == "stage":
            label = {"load_data": "Reading data", "tokenize": "Tokenizing"}.get(ev.name, ev.name)
            label = {"load_model": "Loading model"}.get(ev.name, label)
            self.stage = label + ("…" if ev.status == "start" else ": done")
        elif t == "start":
            self.run, self.run_dir = ev.run, ev.run_dir
            self.total, self.step, self.start_step = ev.total_steps, ev.step, ev.step
            self.t0 = time.time()
            self.stage = "Training"
        elif t == "step":
            self.step, self.epoch, self.total = ev.step, ev.epoch, ev.total_steps or self.total
        elif t == "log":
            self.loss = ev.values.get("loss", self.loss)
        elif t == "eval":
            self.evals.append((ev.step, ev.epoch, dict(ev.metrics)))
        elif t == "checkpoint":
            if Path(ev.path).name not in self.checkpoints:
                self.checkpoints.append(Path(ev.path).name)
        elif t == "notice":
            self.notices.append(ev.message)
        elif t == "error":
            self.error = f"{ev.message} {ev.advice}".strip()
        elif t == "end":
            self.end = ev
            self.step = max(self.step, ev.step)
        self.draw(force=t in ("start", "eval", "checkpoint", "end", "error"))

    def close(self) -> None:
        self.draw(force=True)

    # -- drawing -----------------------------------------------------------------------------
    def draw(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.min_interval:
            return
        with self._lock:
            self._last = now
            body = self.html()
            self.out.outputs = (
                {
                    "output_type": "display_data",
                    "data": {"text/html": body, "text/plain": self.text()},
                    "metadata": {},
                },
            )

    def eta(self) -> float | None:
        done = self.step - self.start_step
        if self.t0 is None or done <= 0 or not self.total:
            return None
        return (time.time() - self.t0) / done * (self.total - self.step)

    def text(self) -> str:
        if self.end is not None:
            return f"{self.run}: {self.end.status} at step {self.end.step}"
        return f"{self.stage}: step {self.step}/{self.total}"

    def html(self) -> str:
        parts = [_CSS, "<div class='nbt-live'>"]
        frac = self.step / self.total if self.total else 0.0
        if self.end is None:
            eta = fmt_time(self.eta())
            parts.append(
                f"<div><b>{html.escape(self.stage)}</b> {html.escape(self.run)}</div>"
                f"<div class='nbt-bar'><div style='width:{100 * frac:.1f}%'></div></div>"
                f"<div class='nbt-progress'>step {self.step}/{self.total} · epoch "
                f"{self.epoch:.2f} · ETA {eta}"
                + (f" · loss {fmt(self.loss)}" if self.loss is not None else "")
                + "</div>"
            )
        parts.append(self._evals_table())
        if self.error:
            parts.append(f"<div class='nbt-bad'>{html.escape(self.error)}</div>")
        if self.end is not None:
            parts.append(self.card())
        if self.message:
            parts.append(f"<div>{html.escape(self.message)}</div>")
        parts.append("</div>")
        return "".join(parts)

    def _evals_table(self) -> str:
        if not self.evals:
            return ""
        names = sorted(
            {k for _, _, m in self.evals for k in m if not k.endswith(("runtime", "per_second"))}
        )
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        rows = "".join(
            f"<tr><td>{s}</td><td>{e:.2f}</td>"
            + "".join(f"<td>{fmt(m.get(n, ''))}</td>" for n in names)
            + "</tr>"
            for s, e, m in self.evals[-8:]
        )
        return f"<table><tr><th>step</th><th>epoch</th>{head}</tr>{rows}</table>"

    def card(self) -> str:
        """The run card: status, final metrics, what was saved (and ``card.html`` if written)."""
        end = self.end
        metrics = {
            k: v
            for k, v in (end.metrics or {}).items()
            if not k.endswith(("runtime", "per_second")) and k != "train_total_flos"
        }
        rows = "".join(
            f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{fmt(v)}</td></tr>"
            for k, v in metrics.items()
        )
        saved = end.final_dir or end.resume_checkpoint or ""
        extra = ""
        card_file = Path(self.run_dir) / "card.html" if self.run_dir else None
        if card_file is not None and card_file.is_file():
            extra = f"<div><small>card: {html.escape(str(card_file))}</small></div>"
        return (
            "<div class='nbt-card'>"
            f"<div><b>Run {html.escape(self.run)}</b> — {html.escape(end.status)} at step "
            f"{end.step}"
            + (f" in {fmt_time(end.duration_s)}" if end.duration_s else "")
            + "</div>"
            + (f"<table>{rows}</table>" if rows else "")
            + (f"<div>saved: <code>{html.escape(saved)}</code></div>" if saved else "")
            + (
                f"<div>checkpoints: {html.escape(', '.join(self.checkpoints))}</div>"
                if self.checkpoints
                else ""
            )
            + extra
            + "</div>"
        )


class BackgroundRun:
    """``nbtrain.finetune`` in a daemon thread, with a stop controller and a done callback."""

    def __init__(self, config: Any, view: PanelView, on_done: Any = None) -> None:
        from nbtrain.engine.callbacks import StopController

        self.config = config
        self.view = view
        self.on_done = on_done
        self.stop = StopController()
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="nbtrain-run", daemon=True)

    def start(self) -> BackgroundRun:
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def request_stop(self) -> None:
        self.stop.request("stopped")

    def _main(self) -> None:
        from nbtrain.api import finetune

        try:
            self.result = finetune(self.config, display=self.view, stop=self.stop)
            if getattr(self.result, "status", "") == "finished" and self.view.end is None:
                # A finished run re-opened with the same config: nothing was retrained.
                self.view.message = "This run had already finished; its results are shown."
        except BaseException as e:  # the thread must report, never die silently
            self.error = e
            self.view.error = self.view.error or _one_paragraph(e)
        finally:
            self.view.draw(force=True)
            if self.on_done is not None:
                self.on_done(self)


def _one_paragraph(e: BaseException) -> str:
    from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed

    if isinstance(e, (ConfigError, RunInterrupted, TrainingFailed)):
        return str(e)
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
