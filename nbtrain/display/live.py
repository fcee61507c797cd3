"""The HTML live view: one display handle, updated in place, throttled by time.

Works in every Jupyter frontend without widget state (JupyterLab 4, Notebook 7, VS Code,
Colab) and reads in a saved notebook, because it is plain HTML with an embedded PNG. It never
calls ``clear_output``: the handle's content is replaced, so the user's other output stays and
the saved notebook holds one view, not thousands.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from nbtrain.display import html as H
from nbtrain.display.frontend import Frontend, detect_frontend
from nbtrain.display.state import RunState, fmt_time
from nbtrain.events import Event

# Live views of runs training in this kernel, by run name: what ``attach`` reconnects to.
LIVE: dict[str, HtmlRenderer] = {}

# A figure costs 0.1-0.5 s to draw; waiting this many times the last cost between two figures
# keeps plotting under ~2.5 % of the training time however slow the machine.
FIGURE_COST_FACTOR = 40


class View:
    """One frame of the view: HTML for notebooks, one line of text for terminals."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def _preload_matplotlib() -> threading.Thread | None:
    """Import matplotlib in the background while the data and the model load.

    The first figure would otherwise pay for the import (1-3 s) in the middle of training.
    """
    if "matplotlib.backends.backend_agg" in sys.modules:
        return None

    def load() -> None:
        try:
            import matplotlib.backends.backend_agg
            import matplotlib.figure  # noqa: F401
        except Exception:
            pass  # the figure reports the problem when it is drawn

    thread = threading.Thread(target=load, name="nbtrain-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def _ipython_display(obj: Any) -> Any:
    from IPython.display import display

    return display(obj, display_id=True)


class HtmlRenderer:
    """Subscribes to a run's events and keeps one HTML view up to date.

    Args:
        display: ``display(obj) -> handle`` with ``handle.update(obj)``; IPython's by default
            (tests pass a recording one).
        clock: seconds, monotonic (tests pass a fake one).
        frontend: where the view is shown; VS Code gets slower redraws.
        bar_interval: least seconds between two redraws of the bar (0.2, VS Code 0.5).
        figure_interval: least seconds between two figure redraws (5, VS Code 10); evaluations
            and the end always redraw.
        write_card: write ``card.html``/``card.png`` into the run folder when the run ends.
        note: one line shown at the top of the view (e.g. why this view was picked).
    """

    def __init__(
        self,
        *,
        display: Callable[[Any], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        frontend: Frontend | None = None,
        bar_interval: float | None = None,
        figure_interval: float | None = None,
        write_card: bool = True,
        note: str = "",
    ) -> None:
        frontend = frontend or detect_frontend()
        slow = frontend is Frontend.VSCODE  # VS Code's renderer falls behind fast updates
        self.bar_interval = bar_interval if bar_interval is not None else (0.5 if slow else 0.2)
        self.figure_interval = (
            figure_interval if figure_interval is not None else (10.0 if slow else 5.0)
        )
        self.clock = clock
        self.write_card = write_card
        self.note = note
        self.state = RunState()
        self.updates = 0  # display calls + handle updates, for tests and benchmarks
        self.figures = 0
        self.card_path: Any = None
        self._display = display or _ipython_display
        self._handle: Any = None
        self._png: bytes | None = None
        self._last_draw = float("-inf")
        self._last_figure = float("-inf")
        self._figure_cost = 0.0
        self._figure_dirty = False
        self._figure_error: str | None = None
        self._final: View | None = None
        self._preloading = False
        self._preload: threading.Thread | None = None

    # -- events ------------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        if not self._preloading:
            self._preloading = True
            self._preload = _preload_matplotlib()
        self.state.update(ev)
        t = ev.type
        if t == "start" and self.state.run:
            LIVE[self.state.run] = self
        if t in ("log", "eval"):
            self._figure_dirty = True
        if t == "end":
            self._finish()
            return
        now = self.clock()
        forced = t in ("start", "eval", "error", "notice") or (
            t == "stage" and ev.status != "progress"
        )
        if not forced and now - self._last_draw < self.bar_interval:
            return
        since = now - self._last_figure
        budget = FIGURE_COST_FACTOR * self._figure_cost
        # An evaluation always redraws the view and, unless the last figure is very recent for
        # what figures cost on this machine, the figure: its point shows at once. Otherwise
        # figures follow their own, slower cadence. Either way plotting stays within budget.
        figure = self._figure_dirty and (
            (t == "eval" and since >= budget) or since >= max(self.figure_interval, budget)
        )
        self._draw(figure=figure)

    def close(self) -> None:
        """Called by ``finetune`` when the run returns: the view stops being live."""
        if LIVE.get(self.state.run) is self:
            del LIVE[self.state.run]

    # -- drawing -------------------------------------------------------------------------------
    def _draw(self, *, figure: bool) -> None:
        if figure and self.state.started and self._figure_error is None:
            self._render_figure()
        self._show(View(self.html(), self.text()))
        self._last_draw = self.clock()

    def _wait_for_preload(self) -> None:
        # Never import matplotlib from two threads at once: wait for the background import.
        if self._preload is not None:
            self._preload.join()
            self._preload = None

    def _render_figure(self) -> None:
        from nbtrain.display.plots import curves_png

        self._wait_for_preload()

        t0 = self.clock()
        try:
            self._png = curves_png(self.state, dpi=100)
        except Exception as e:  # a plotting problem must not cost the run or the view
            self._figure_error = f"Curves unavailable ({type(e).__name__}: {e})."
            self._png = None
        self.figures += 1
        self._last_figure = self.clock()
        self._figure_cost = max(0.0, self._last_figure - t0)
        self._figure_dirty = False

    def _show(self, view: View) -> None:
        self.updates += 1
        if self._handle is None:
            self._handle = self._display(view)
        else:
            self._handle.update(view)

    def html(self) -> str:
        note = " ".join(n for n in (self.note, self._figure_error or "") if n)
        return H.live_html(self.state, self._png, note)

    def text(self) -> str:
        s = self.state
        if not s.started:
            return f"nbtrain: preparing {s.run or 'run'}"
        eta = "" if s.ended else f" ETA {fmt_time(s.eta)}"
        return (
            f"nbtrain run {s.run}: {s.status}, step {s.step}/{s.total_steps}, "
            f"{fmt_time(s.elapsed)} elapsed{eta}"
        )

    def _finish(self) -> None:
        """The run ended: the view becomes the static run card (also written to disk)."""
        from nbtrain.display.card import card_is_current, render_card, save_card

        self._wait_for_preload()

        html, png = render_card(self.state)
        if self.write_card and self.state.run_dir:
            try:
                if not card_is_current(self.state.run_dir):
                    self.card_path = save_card(self.state.run_dir, html, png)
            except OSError as e:
                html = html.replace(
                    "</div>", f"<div>Could not write the card file: {e}</div></div>", 1
                )
        self._final = View(html, self.text())
        self._show(self._final)
        self._last_draw = self.clock()
        self.close()

    def reattach(self) -> None:
        """Show this view again in a new output (the old one stops updating)."""
        self._handle = None
        self._show(self._final or View(self.html(), self.text()))
