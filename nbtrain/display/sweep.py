"""The sweep's views: one live trial panel (HTML) or a text log, fed by sweep and run events.

The panel is one display handle for the whole sweep: the trial table (params, metric, state),
the best trial so far highlighted, the current trial's live view nested under it (the run's own
HTML renderer, captured instead of displayed), the metric per trial, and at the end Optuna's
parameter importances and slice plot. It is rebuilt from events, like the run view.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from nbtrain.display import html as H
from nbtrain.display.frontend import Frontend, detect_frontend, resolve_mode
from nbtrain.events import Event
from nbtrain.format import fmt_short, fmt_time

# Trial panels of sweeps running in this kernel, by sweep name: what ``attach`` reconnects to.
SWEEPS_LIVE: dict[str, SweepPanel] = {}

STATE_COLORS = {
    "running": "#0072B2",
    "finished": "#117733",
    "pruned": "#6b6b6b",
    "failed": "#C00000",
    "stopped": "#B35900",
}


@dataclass
class TrialRow:
    number: int
    run: str
    params: dict[str, Any]
    state: str = "running"
    value: float | None = None
    duration_s: float | None = None
    message: str = ""
    started: float = 0.0


@dataclass
class SweepState:
    """Everything the panel shows, folded from sweep events."""

    sweep: str = ""
    sweep_dir: str = ""
    metric: str = ""
    direction: str = "maximize"
    total: int = 0
    space: dict[str, Any] = field(default_factory=dict)
    trials: dict[int, TrialRow] = field(default_factory=dict)
    current: int | None = None
    status: str = "running"
    end: Any = None

    def update(self, ev: Event) -> None:
        t = ev.type
        if t == "sweep_start":
            self.sweep, self.sweep_dir = ev.sweep, ev.sweep_dir
            self.metric, self.direction, self.total = ev.metric, ev.direction, ev.trials
            self.space = dict(ev.params)
            self.status, self.end = "running", None
            for r in ev.history:
                if r.get("state") == "running":
                    continue  # queued again: its retry becomes the row
                self.trials[r["number"]] = TrialRow(
                    number=r["number"],
                    run=r["run"],
                    params=dict(r["params"]),
                    state=r["state"],
                    value=r.get("value"),
                    duration_s=r.get("duration_s"),
                    message=r.get("message", ""),
                )
        elif t == "trial_start":
            self.trials[ev.number] = TrialRow(
                number=ev.number, run=ev.run, params=dict(ev.params), started=ev.time
            )
            self.current = ev.number
        elif t == "trial_end":
            row = self.trials.get(ev.number)
            if row is None:
                return
            row.state, row.value, row.message = ev.state, ev.value, ev.message
            row.duration_s = ev.duration_s
        elif t == "sweep_end":
            self.status, self.end = ev.status, ev
            self.current = None

    @property
    def started(self) -> bool:
        """The sweep has begun (its folder is open); as ``RunState.started`` for a run."""
        return bool(self.sweep_dir)

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def ended_count(self) -> int:
        return sum(1 for r in self.trials.values() if r.state in ("finished", "pruned", "failed"))

    @property
    def best(self) -> TrialRow | None:
        done = [r for r in self.trials.values() if r.state == "finished" and _finite(r.value)]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda r: r.value)

    @property
    def param_names(self) -> list[str]:
        names = list(self.space)
        for r in self.trials.values():
            names += [k for k in r.params if k not in names]
        return names


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# -- HTML ----------------------------------------------------------------------------------------


def badge(state: str) -> str:
    color = STATE_COLORS.get(state, "#6b6b6b")
    return (
        f"<span style='background:{color};color:#fff;border-radius:3px;padding:1px 6px;"
        f"font-size:85%'>{escape(state)}</span>"
    )


def header_html(s: SweepState) -> str:
    best = s.best
    bits = [
        f"{escape(s.direction)} <code>{escape(s.metric)}</code>",
        f"{s.ended_count}/{s.total} trials",
    ]
    if best is not None:
        bits.append(f"best <b>{escape(best.run)}</b> {fmt_short(best.value)}")
    status = s.status if s.end is not None else "running"
    return (
        f"<div style='margin-bottom:4px'><b style='font-size:110%'>sweep "
        f"{escape(s.sweep)}</b> {H.badge(status) if status in H.STATUS_COLORS else badge(status)}"
        f"<br><span style='opacity:.75;font-size:90%'>{' · '.join(bits)}</span></div>"
    )


def table_html(s: SweepState, now: float | None = None) -> str:
    """The trial table; the best finished trial's row highlighted with a star."""
    if not s.trials:
        return "<div style='opacity:.7'>No trials yet.</div>"
    names = s.param_names
    best = s.best
    head = "".join(f"<th style='{H.HEAD}'>{escape(n)}</th>" for n in names)
    rows = []
    for r in sorted(s.trials.values(), key=lambda r: r.number):
        mark = best is not None and r.number == best.number
        style = "font-weight:600;background:rgba(17,119,51,.12);" if mark else ""
        cells = "".join(
            f"<td style='{H.CELL}'>{escape(fmt_short(r.params[n])) if n in r.params else ''}</td>"
            for n in names
        )
        duration = r.duration_s
        if duration is None and r.state == "running" and r.started:
            duration = (now or time.time()) - r.started
        title = f" title='{escape(r.message)}'" if r.message else ""
        rows.append(
            f"<tr style='{style}'{title}><td style='{H.CELL}text-align:left'>"
            f"{'★ ' if mark else ''}{escape(r.run)}</td>{cells}"
            f"<td style='{H.CELL}'>{fmt_short(r.value) if _finite(r.value) else ''}</td>"
            f"<td style='{H.CELL}text-align:left'>{badge(r.state)}</td>"
            f"<td style='{H.CELL}'>{fmt_time(duration) if duration else ''}</td></tr>"
        )
    return (
        "<table style='border-collapse:collapse;font-size:90%;margin:4px 0;"
        "font-variant-numeric:tabular-nums'>"
        f"<thead><tr><th style='{H.HEAD}text-align:left'>trial</th>{head}"
        f"<th style='{H.HEAD}'>{escape(s.metric)}</th><th style='{H.HEAD}text-align:left'>state"
        f"</th><th style='{H.HEAD}'>time</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def messages_html(s: SweepState) -> str:
    items = [
        f"{escape(r.run)}: {escape(r.message)}"
        for r in sorted(s.trials.values(), key=lambda r: r.number)
        if r.message and r.state in ("pruned", "failed", "stopped")
    ]
    if not items:
        return ""
    lis = "".join(f"<li>{i}</li>" for i in items[-6:])
    return f"<ul style='margin:2px 0;padding-left:18px;opacity:.8;font-size:85%'>{lis}</ul>"


def nested(html: str, title: str) -> str:
    return (
        f"<div style='margin:6px 0 6px 10px;padding-left:10px;border-left:3px solid "
        f"rgba(0,114,178,.5)'><div style='opacity:.7;font-size:85%'>{escape(title)}</div>"
        f"{html}</div>"
    )


def panel_html(
    s: SweepState,
    *,
    trial_html: str = "",
    trials_png: bytes | None = None,
    study_png: bytes | None = None,
    note: str = "",
) -> str:
    body = header_html(s)
    if note:
        body += f"<div style='opacity:.8;font-size:85%'>{escape(note)}</div>"
    body += table_html(s) + messages_html(s)
    if s.end is not None and s.end.status != "finished":
        body += H._box(
            "#B35900",
            f"<b>Sweep {escape(s.end.status)}.</b> Finished trials are kept in "
            f"<code>{escape(s.sweep_dir)}</code>; run the same cell or command again to "
            "continue (the unfinished trial resumes from its checkpoint).",
        )
    if s.current is not None and trial_html:
        row = s.trials.get(s.current)
        params = ", ".join(f"{k}={fmt_short(v)}" for k, v in (row.params if row else {}).items())
        body += nested(trial_html, f"current trial: {row.run if row else ''} ({params})")
    body += H.png_img(trials_png, f"{s.metric} per trial of sweep {s.sweep}", width=560)
    body += H.png_img(study_png, f"parameter importances and slice plot of sweep {s.sweep}")
    return H.wrap(body)


def text_table(s: SweepState) -> str:
    names = s.param_names
    rows = [["trial", *names, s.metric, "state", "time"]]
    best = s.best
    for r in sorted(s.trials.values(), key=lambda r: r.number):
        rows.append(
            [
                ("* " if best is not None and r.number == best.number else "  ") + r.run,
                *[fmt_short(r.params[n]) if n in r.params else "" for n in names],
                fmt_short(r.value) if _finite(r.value) else "-",
                r.state,
                fmt_time(r.duration_s) if r.duration_s else "",
            ]
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows)


# -- figures -------------------------------------------------------------------------------------


def trials_png(s: SweepState, dpi: int = 100) -> bytes | None:
    """The metric of each trial (pruned ones at their last evaluation) and the best so far."""
    fig = trials_figure(s, dpi)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def _trial_index(r: TrialRow) -> int:
    """K of the trial's run ``trial-K``: the name the table shows. Optuna's number differs once a
    stopped trial was queued again (trial-1 retried is Optuna's trial 2)."""
    m = re.fullmatch(r"trial-(\d+)", r.run or "")
    return int(m.group(1)) if m else r.number


def trials_figure(s: SweepState, dpi: int = 100) -> Any:
    """The ``Figure`` behind :func:`trials_png`, or None before any trial has a metric."""
    rows = [r for r in sorted(s.trials.values(), key=lambda r: r.number) if _finite(r.value)]
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nbtrain.display.plots import BEST, COLORS, GRID, INK, MUTED

    fig = Figure(figsize=(5.6, 2.6), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for state, color, marker in (
        ("finished", COLORS[0], "o"),
        ("pruned", MUTED, "x"),
        ("stopped", COLORS[1], "s"),
    ):
        pts = [(_trial_index(r), r.value) for r in rows if r.state == state]
        if pts:
            ax.scatter(*zip(*pts), color=color, marker=marker, label=state, zorder=3)
    done = [r for r in rows if r.state == "finished"]
    if done:
        pick = max if s.direction == "maximize" else min
        xs, ys, best = [], [], None
        for r in done:
            best = r.value if best is None else pick(best, r.value)
            xs.append(_trial_index(r))
            ys.append(best)
        ax.step(xs, ys, where="post", color=BEST, lw=1.2, label="best so far")
    ax.set_xlabel("trial", color=INK)
    ax.set_ylabel(s.metric, color=INK)
    ax.set_title(f"{s.metric} per trial", color=INK, fontsize=10)
    ax.grid(True, color=GRID)
    ax.set_xticks(sorted({_trial_index(r) for r in rows}))
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def study_png(study: Any, dpi: int = 100) -> tuple[bytes | None, str]:
    """Optuna's parameter importances and slice plot (its matplotlib visualisations) as one PNG,
    and a note when they could not be drawn (too few finished trials)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2:
        return None, "Parameter importances need at least two finished trials."
    import matplotlib

    with _pyplot_agg() as plt:
        from optuna.visualization import matplotlib as ovm

        images: list[bytes] = []
        note = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API and few-trials warnings
            for draw in (ovm.plot_param_importances, ovm.plot_slice):
                try:
                    axes = draw(study)
                except (ValueError, RuntimeError, ZeroDivisionError) as e:
                    note = f"{draw.__name__} unavailable: {e}"
                    continue
                fig = _figure_of(axes)
                fig.set_dpi(dpi)
                if draw is ovm.plot_slice:
                    # Optuna lays out the slice plot and its colour bar itself: keep its size
                    # (tight_layout would slide the colour bar over the last panel).
                    _decade_labels_only(fig)
                else:
                    fig.set_size_inches(6, 2.8)
                    fig.tight_layout()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", facecolor="white", bbox_inches="tight")
                plt.close(fig)  # the inline backend would show every open figure
                images.append(buf.getvalue())
    del matplotlib
    if not images:
        return None, note
    return _stack(images, dpi), note


def _decade_labels_only(fig: Any) -> None:
    """Readable log axes in the slice plot: over a decade or two (a learning rate searched between
    1e-5 and 1e-3 and sampled in part of it) matplotlib labels the minor ticks too, and in the
    plot's narrow panels "2 × 10⁻⁵", "3 × 10⁻⁵"... run into each other; so only the decades are
    labelled. An axis with fewer than two decades in view (trials close together) gets two plain
    ticks instead."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    for ax in fig.axes:
        for axis, scale, (a, b) in (
            (ax.xaxis, ax.get_xscale(), ax.get_xlim()),
            (ax.yaxis, ax.get_yscale(), ax.get_ylim()),
        ):
            lo, hi = sorted((a, b))
            if scale != "log" or lo <= 0:
                continue
            axis.set_minor_formatter(NullFormatter())
            if math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) < 1:  # < 2 decade ticks
                axis.set_minor_locator(NullLocator())
                axis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
                axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_short(v)))


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Two ticks on a log axis from ``lo`` to ``hi``, a fifth of the way in from each end (room
    for a label like "0.00016" in a narrow panel), with the fewest significant digits (two or
    more) that keep them apart and inside the axis."""
    a, b = math.log10(lo), math.log10(hi)
    exact = [10 ** (a + (b - a) * f) for f in (0.2, 0.8)]
    for digits in range(2, 7):
        ticks = [float(f"{v:.{digits}g}") for v in exact]
        if len(set(ticks)) == len(ticks) and all(lo <= t <= hi for t in ticks):
            return ticks
    return exact


def _figure_of(axes: Any) -> Any:
    if hasattr(axes, "figure"):
        return axes.figure
    return axes.flat[0].figure  # a numpy array of Axes (one per parameter)


def _stack(images: list[bytes], dpi: int) -> bytes:
    """Place PNGs one under the other in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    arrays = [imread(io.BytesIO(b), format="png") for b in images]
    width = max(a.shape[1] for a in arrays)
    height = sum(a.shape[0] for a in arrays)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    top = 1.0
    for a in arrays:
        h = a.shape[0] / height
        ax = fig.add_axes((0, top - h, a.shape[1] / width, h))
        ax.imshow(a)
        ax.axis("off")
        top -= h
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


@contextlib.contextmanager
def _pyplot_agg() -> Any:
    """pyplot for Optuna's plots, on Agg when no backend was chosen yet (scripts, the CLI)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not _in_kernel():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt


def _in_kernel() -> bool:
    return detect_frontend().is_kernel


def sweep_png(study: Any, metric: str) -> bytes:
    """``SweepResult.plot()``: the metric per trial above importances and slice plot."""
    from nbtrain.runs import trial_rows

    state = SweepState(metric=metric, direction=study.direction.name.lower())
    for r in trial_rows(study):
        state.trials[r["number"]] = TrialRow(
            number=r["number"], run=r["run"], params=r["params"], state=r["state"], value=r["value"]
        )
    parts = [p for p in (trials_png(state), study_png(study)[0]) if p]
    if not parts:
        raise ValueError("The sweep has no trial with a metric yet: nothing to plot.")
    return parts[0] if len(parts) == 1 else _stack(parts, 100)


def result_html(result: Any) -> str:
    """``SweepResult`` in a notebook: header, trial table, the best trial's config."""
    from nbtrain.runs import trial_rows

    s = SweepState(
        sweep=result.name,
        sweep_dir=str(result.output_dir),
        metric=result.metric,
        direction=result.direction,
        status=result.status,
    )
    rows = trial_rows(result.study)
    for r in rows:
        s.trials[r["number"]] = TrialRow(
            number=r["number"],
            run=r["run"],
            params=r["params"],
            state=r["state"],
            value=r["value"],
            duration_s=r["duration_s"],
            message=r["message"],
        )
    s.total = len(rows)
    s.end = True  # a result: not running
    return H.wrap(header_html(s).replace("running", escape(result.status), 1) + table_html(s))


# -- renderers -----------------------------------------------------------------------------------


def _show(obj: Any) -> Any:
    from IPython.display import display

    return display(obj, display_id=True)


class _Capture:
    """A display handle for the nested run view: keeps its HTML, redraws the panel."""

    def __init__(self, panel: SweepPanel) -> None:
        self.panel = panel

    def __call__(self, view: Any) -> _Capture:
        self.update(view)
        return self

    def update(self, view: Any) -> None:
        self.panel._trial_html = view._repr_html_()
        self.panel._draw()


class SweepPanel:
    """The live trial panel: subscribes to sweep and run events, updates one display handle.

    Args:
        display: ``display(obj) -> handle`` (tests pass a recording one); IPython's by default.
        frontend: where the panel shows (VS Code gets slower redraws in the nested view).
    """

    def __init__(
        self, *, display: Callable[[Any], Any] | None = None, frontend: Frontend | None = None
    ) -> None:
        from nbtrain.display.live import HtmlRenderer

        self._display = display or _show
        self._frontend = frontend or detect_frontend()
        self._renderer_cls = HtmlRenderer
        self.state = SweepState()
        self.trial_view: Any = None
        self.updates = 0
        self._handle: Any = None
        self._trial_html = ""
        self._trials_png: bytes | None = None
        self._study_png: bytes | None = None
        self._note = ""
        self.status_note = ""  # e.g. "queued behind NAME", set by a background sweep's handle
        self.output = ""  # what the trials printed (a background sweep captures it here)

    def __call__(self, ev: Event) -> None:
        t = ev.type
        if t.startswith(("sweep_", "trial_")):
            self.state.update(ev)
            if t == "sweep_start" and not getattr(self, "_replaying", False):
                SWEEPS_LIVE[self.state.sweep] = self
            if t == "trial_start":
                self.trial_view = self._renderer_cls(
                    display=_Capture(self), frontend=self._frontend
                )
                self._trial_html = ""
            elif t in ("trial_end", "sweep_start"):
                self._trials_png = _safe(trials_png, self.state)
            elif t == "sweep_end":
                self._finish()
                return
            self._draw()
        elif self.trial_view is not None:
            self.trial_view(ev)  # the run's events: the nested live view (and its card)

    def _finish(self) -> None:
        self._trials_png = _safe(trials_png, self.state)
        if self.state.sweep_dir and self.state.ended_count >= 2:
            try:
                from nbtrain.runs import load_study

                study = load_study(self.state.sweep_dir)
                self._study_png, self._note = study_png(study)
            except Exception as e:  # the table matters more than the figure
                self._note = f"Importances unavailable ({type(e).__name__}: {e})."
        self._trial_html = ""
        self._draw()

    def html(self) -> str:
        html = panel_html(
            self.state,
            trial_html=self._trial_html,
            trials_png=self._trials_png,
            study_png=self._study_png,
            note=" ".join(n for n in (self._note, self.status_note) if n),
        )
        if self.output:
            html = html[: -len("</div>")] + H.run_output(self.output) + "</div>"  # inside wrap()
        return html

    def show(self) -> None:
        """Draw now (the first frame of a panel that was just created, or after a note)."""
        self._draw()

    def text(self) -> str:
        s = self.state
        if not s.started and self.status_note:
            return f"nbtrain sweep {s.sweep}: {self.status_note}"
        return f"nbtrain sweep {s.sweep}: {s.ended_count}/{s.total} trials, {s.status}"

    def _draw(self) -> None:
        if getattr(self, "_replaying", False):
            return  # replay_sweep draws once at the end
        from nbtrain.display.live import View

        view = View(self.html(), self.text())
        self.updates += 1
        if self._handle is None:
            self._handle = self._display(view)
        else:
            self._handle.update(view)

    def close(self) -> None:
        if self.trial_view is not None:
            self.trial_view.close()
        if SWEEPS_LIVE.get(self.state.sweep) is self:
            del SWEEPS_LIVE[self.state.sweep]


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # a figure problem must not cost the sweep
        return None


class SweepText:
    """Text log of a sweep: a line per trial start and end, each trial's progress line, and the
    trial table at the end."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.state = SweepState()
        self.trial_view: Any = None

    def _line(self, text: str) -> None:
        if self.trial_view is not None:
            self.trial_view.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, ev: Event) -> None:
        from nbtrain.display.text import TextRenderer

        t = ev.type
        if not t.startswith(("sweep_", "trial_")):
            if self.trial_view is not None:
                self.trial_view(ev)
            return
        self.state.update(ev)
        s = self.state
        if t == "sweep_start":
            kept = len(s.trials)
            self._line(
                f"Sweep {s.sweep}: {s.total} trials, {s.direction} {s.metric}"
                + (f" ({kept} trials from earlier sessions kept)" if kept else "")
            )
        elif t == "trial_start":
            params = ", ".join(f"{k}={fmt_short(v)}" for k, v in ev.params.items())
            again = " (resuming)" if ev.resumed else ""
            self._line(f"-- {ev.run} [{s.ended_count + 1}/{s.total}]{again}: {params}")
            self.trial_view = TextRenderer(stream=self.stream)
        elif t == "trial_end":
            value = f" {s.metric}={fmt_short(ev.value)}" if _finite(ev.value) else ""
            why = f" ({ev.message})" if ev.message else ""
            best = s.best
            star = " (best so far)" if best is not None and best.number == ev.number else ""
            self._line(f"-- {ev.run}: {ev.state}{value}{star}{why}")
            self.trial_view = None
        elif t == "sweep_end":
            self._line(text_table(s))
            best = s.best
            if best is not None:
                params = ", ".join(f"{k}={fmt_short(v)}" for k, v in best.params.items())
                self._line(f"Best: {best.run} {s.metric}={fmt_short(best.value)} ({params})")
                self._line(f"Its config: {s.sweep_dir}/best_config.yaml")
            if s.status != "finished":
                self._line(f"Sweep {s.status}: run the same command again to continue.")

    def close(self) -> None:
        if self.trial_view is not None:
            self.trial_view.close()


def replay_sweep(
    folder: str | Any, *, display: Callable[[Any], Any] | None = None, note: str = ""
) -> SweepPanel:
    """Rebuild the trial panel of the sweep in ``folder`` from its events (``sweep.jsonl`` and
    the running trial's ``events.jsonl``): what ``attach`` shows after a disconnect."""
    from pathlib import Path

    from nbtrain.events import read_events

    folder = Path(folder)
    panel = SweepPanel(display=display)
    panel._replaying = True
    events = list(read_events(folder / "sweep.jsonl"))
    ended = {ev.number for ev in events if ev.type == "trial_end"}
    for ev in events:
        panel(ev)
        if ev.type == "trial_start" and ev.number not in ended and panel.trial_view is not None:
            panel.trial_view.clock = lambda: 0.0  # replay: a few redraws, not one per event
            for run_ev in read_events(Path(ev.run_dir)):
                panel(run_ev)
            if not panel.trial_view.state.ended:
                panel.trial_view._draw()  # its last recorded state, with curves
    panel._replaying = False
    if note or not any(ev.type == "sweep_end" for ev in events[-1:]):
        panel._note = note or (
            "This sweep is not running in this kernel: showing its last recorded state. Run its "
            "cell (or finetune with the same name) again to continue it."
        )
    panel._draw()
    return panel


def make_sweep_renderer(mode: str = "auto", *, frontend: Frontend | None = None) -> Any:
    """The sweep's view for ``mode`` (as for runs): the HTML panel in a kernel, text elsewhere."""
    frontend = frontend or detect_frontend()
    resolved = resolve_mode(mode, frontend)
    if resolved == "none":
        return None
    if resolved in ("html", "widgets") and frontend is not Frontend.NO_IPYTHON:
        return SweepPanel(frontend=frontend)
    return SweepText()


__all__ = [
    "SweepPanel",
    "SweepState",
    "SweepText",
    "make_sweep_renderer",
    "panel_html",
    "replay_sweep",
    "study_png",
    "sweep_png",
    "trials_png",
]
