"""The live view: one run state, drawn in place every half second, as HTML or as widgets.

:class:`HtmlRenderer` updates one display handle: it works in every Jupyter frontend without
widget state (JupyterLab 4, Notebook 7, VS Code, Colab) and reads in a saved notebook, because
it is plain HTML with inline SVG curves. :class:`WidgetRenderer` shows the same HTML inside
ipywidgets with a Stop button. Neither calls ``clear_output``: the content is replaced, so the
user's other output stays. Both may be fed from a worker thread (background runs): drawing only
replaces a display handle's content or a widget's value, which goes to that output, never to
whichever cell happens to be executing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from nbtrain.display import html as H
from nbtrain.display.frontend import Frontend, detect_frontend
from nbtrain.display.state import RunState, fmt_time
from nbtrain.display.svg import curves_svg
from nbtrain.events import Event


class View:
    """One frame of the view: HTML for notebooks, one line of text for terminals."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def _ipython_display(obj: Any) -> Any:
    from IPython.display import display

    return display(obj, display_id=True)


class OutputWidgetDisplay:
    """``display(obj) -> handle`` drawing into an ipywidgets ``Output`` (the form's panel).

    It replaces ``out.outputs`` instead of writing ``with out:``, which from a worker thread
    would land in whatever cell the kernel is busy with.
    """

    def __init__(self, out: Any) -> None:
        self.out = out

    def __call__(self, obj: Any) -> OutputWidgetDisplay:
        self.update(obj)
        return self

    def update(self, obj: Any) -> None:
        self.out.outputs = (
            {
                "output_type": "display_data",
                "data": {"text/html": obj._repr_html_(), "text/plain": repr(obj)},
                "metadata": {},
            },
        )


class HtmlRenderer:
    """Subscribes to a run's events and keeps one HTML view up to date.

    Args:
        display: ``display(obj) -> handle`` with ``handle.update(obj)``; IPython's by default
            (tests pass a recording one).
        clock: seconds, monotonic (tests pass a fake one).
        frontend: where the view is shown; VS Code gets slower redraws.
        interval: least seconds between two redraws (0.5, VS Code 1.0); the start, evaluations,
            errors and the end always redraw.
        write_card: write ``card.html``/``card.png`` into the run folder when the run ends.
        note: one line shown at the top of the view (e.g. why this view was picked).
    """

    def __init__(
        self,
        *,
        display: Callable[[Any], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        frontend: Frontend | None = None,
        interval: float | None = None,
        write_card: bool = True,
        note: str = "",
    ) -> None:
        frontend = frontend or detect_frontend()
        slow = frontend is Frontend.VSCODE  # VS Code's renderer falls behind fast updates
        self.interval = interval if interval is not None else (1.0 if slow else 0.5)
        self.clock = clock
        self.write_card = write_card
        self.note = note
        self.status_note = ""  # e.g. "queued behind NAME", set by the run's handle
        self.output = ""  # what the run printed (background runs capture it here)
        self.state = RunState()
        self.updates = 0  # display calls + handle updates, for tests and benchmarks
        self.draw_seconds = 0.0  # time spent building frames, for bench/view_overhead.py
        self.card_path: Any = None
        self._display = display or _ipython_display
        self._handle: Any = None
        self._last_draw = float("-inf")
        self._final: View | None = None
        self._lock = threading.RLock()  # the worker thread and an attaching cell both draw

    # -- events ------------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        with self._lock:
            self.state.update(ev)
            t = ev.type
            if t == "end":
                self._finish()
                return
            forced = t in ("start", "eval", "error", "notice") or (
                t == "stage" and ev.status != "progress"
            )
            if forced or self.clock() - self._last_draw >= self.interval:
                self._draw()

    def show(self) -> None:
        """Draw now (the first frame of a view that was just created, or after a note)."""
        with self._lock:
            if self._final is not None:
                self._show(self._final)
            else:
                self._draw()

    def close(self) -> None:
        """Called when the run returns; nothing to release for the HTML view."""

    # -- drawing -------------------------------------------------------------------------------
    def _draw(self) -> None:
        t0 = time.perf_counter()
        frame = View(self.html(), self.text())
        self.draw_seconds += time.perf_counter() - t0
        self._show(frame)
        self._last_draw = self.clock()

    def _show(self, view: View) -> None:
        self.updates += 1
        if self._handle is None:
            self._handle = self._display(view)
        else:
            self._handle.update(view)

    def html(self) -> str:
        return H.live_html(
            self.state,
            curves_svg(self.state) if self.state.started else "",
            " ".join(n for n in (self.note, self.status_note) if n),
            output=self.output,
        )

    def text(self) -> str:
        s = self.state
        if not s.started and s.status == "failed":  # refused before training: say so and why
            why = f": {s.error.message}" if s.error is not None else ""
            return f"nbtrain{' run ' + s.run if s.run else ''}: failed before training{why}"
        if not s.started:
            return f"nbtrain: {self.status_note or 'preparing'} {s.run or ''}".rstrip()
        eta = "" if s.ended else f" ETA {fmt_time(s.eta)}"
        return (
            f"nbtrain run {s.run}: {s.status}, step {s.step}/{s.total_steps}, "
            f"{fmt_time(s.elapsed)} elapsed{eta}"
        )

    def _finish(self) -> None:
        """The run ended: the view becomes the static run card (also written to disk)."""
        from nbtrain.display.card import card_is_current, render_card, save_card

        html, png = render_card(self.state)
        if self.write_card and self.state.run_dir:
            try:
                if not card_is_current(self.state.run_dir):
                    self.card_path = save_card(self.state.run_dir, html, png)
            except OSError as e:
                html = html.replace(
                    "</div>", f"<div>Could not write the card file: {e}</div></div>", 1
                )
        if self.output:
            html = html.replace("</div>", H.run_output(self.output) + "</div>", 1)
        self._final = View(html, self.text())
        self._show(self._final)
        self._last_draw = self.clock()
        self.close()

    def reattach(self, display: Callable[[Any], Any] | None = None) -> None:
        """Show this view again in a new output (the old one stops updating)."""
        with self._lock:
            if display is not None:
                self._display = display
            self._handle = None
            self._show(self._final or View(self.html(), self.text()))


#: The widget view's status line in a foreground run, which no Stop button could reach.
FOREGROUND_STOP_HINT = (
    "<span style='opacity:.75'>training in the foreground: interrupt the kernel (■) to stop "
    "after this step with a checkpoint; a background run (--background) has a Stop button"
    "</span>"
)


class WidgetRenderer(HtmlRenderer):
    """The live view as ipywidgets: the same HTML in a widget, a Stop button and a status line.

    When the run ends the output is replaced by the static run card (plain HTML), so a saved
    notebook shows the card even where no widget state was saved.

    Args:
        on_stop: called (on the kernel's thread) when Stop is clicked. Without it (a run in the
            foreground: the kernel is busy and handles no click until the cell ends) there is
            no Stop button; the status line says how to stop the run instead.
    """

    def __init__(self, *, on_stop: Callable[[], None] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        import ipywidgets as W

        self.body = W.HTML()
        self.stop_button = W.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop at the end of this step and save a checkpoint",
            button_style="warning",
            layout=W.Layout(width="90px"),
        )
        self.stop_button.on_click(self._clicked)
        self.status = W.HTML()
        self.on_stop = on_stop
        self.box = W.VBox([W.HBox([self.stop_button, self.status]), self.body])
        self.box.add_class("nbtrain-widget-view")

    @property
    def on_stop(self) -> Callable[[], None] | None:
        return self._on_stop

    @on_stop.setter
    def on_stop(self, fn: Callable[[], None] | None) -> None:
        """No one to stop: no button (a click nothing would hear), the status line says what
        works instead."""
        self._on_stop = fn
        self.stop_button.layout.display = None if fn is not None else "none"
        if fn is None:
            self.status.value = FOREGROUND_STOP_HINT
        elif self.status.value == FOREGROUND_STOP_HINT:
            self.status.value = ""

    def _clicked(self, _button: Any) -> None:
        self.stop_button.disabled = True
        self.status.value = "<span style='opacity:.75'>stopping after this step…</span>"
        if self.on_stop is not None:
            self.on_stop()

    def _show(self, view: View) -> None:
        self.updates += 1
        if view is self._final:  # the end: a plain-HTML card replaces the widgets
            if self._handle is None:
                self._handle = self._display(view)
            else:
                self._handle.update(view)
            return
        self.body.value = view.html
        if self._handle is None:
            self._handle = self._display(self.box)

    def reattach(self, display: Callable[[Any], Any] | None = None) -> None:
        with self._lock:
            if display is not None:
                self._display = display
            self._handle = None
            if self._final is not None:
                self._show(self._final)
            else:
                self._handle = self._display(self.box)
