"""Renderers: they subscribe to run events and show them. They hold no training logic.

``make_renderer(mode)`` picks the view for the detected frontend (HTML in any Jupyter kernel,
plain text in a terminal); ``set_default`` / ``NBTRAIN_DISPLAY`` override the choice;
``attach(name)`` rebuilds a run's view from its ``events.jsonl``; ``write_card(run_dir)``
regenerates its run card. Nothing here imports IPython or matplotlib until it is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nbtrain.display.frontend import (
    Frontend,
    detect_frontend,
    get_default,
    resolve_mode,
    set_default,
)

__all__ = [
    "Frontend",
    "attach",
    "detect_frontend",
    "get_default",
    "make_renderer",
    "resolve_mode",
    "set_default",
    "write_card",
]


def make_renderer(
    mode: str = "auto", *, frontend: Frontend | None = None, on_stop: Any = None
) -> Any:
    """A renderer for ``mode`` (auto | html | widgets | text | none), or None for none.

    ``auto`` follows ``set_default``/``NBTRAIN_DISPLAY`` when set, else the frontend: the HTML
    view in any Jupyter kernel (JupyterLab, Notebook 7, VS Code, Colab), text elsewhere.
    ``widgets`` is the same view in ipywidgets with a Stop button (``on_stop``); where widgets
    cannot be shown it falls back to the HTML view and says why.
    """
    frontend = frontend or detect_frontend()
    resolved = resolve_mode(mode, frontend)
    if resolved == "none":
        return None
    if resolved in ("html", "widgets"):
        note = ""
        if resolved == "widgets":
            from nbtrain.display.frontend import widgets_available

            ok, reason = widgets_available()
            if ok:
                from nbtrain.display.live import WidgetRenderer

                return WidgetRenderer(frontend=frontend, on_stop=on_stop)
            note = f"display='widgets': {reason}; showing the HTML view instead."
        if frontend is Frontend.NO_IPYTHON:
            # No IPython to display HTML: a script or the CLI gets the text view instead.
            from nbtrain.display.text import TextRenderer

            renderer = TextRenderer()
            renderer._line(f"display={resolved!r} needs IPython or Jupyter; showing text instead.")
            return renderer
        from nbtrain.display.live import HtmlRenderer

        return HtmlRenderer(frontend=frontend, note=note)
    from nbtrain.display.text import TextRenderer

    return TextRenderer()


def write_card(run_dir: str | Path) -> Path:
    """Write ``card.html`` and ``card.png`` of the run in ``run_dir`` from its events."""
    from nbtrain.display.card import write_card as _write

    return _write(run_dir)


def attach(
    name: str,
    runs_dir: str | Path = "runs",
    *,
    display: Any = None,
    mode: str = "auto",
    follow: bool = True,
    poll: float = 0.5,
) -> Any:
    """Show a run's view from its ``events.jsonl``: the curves so far, then live updates while
    another process (the CLI, ``accelerate launch``, another kernel) is still training it.

    Background runs of this kernel are attached by :func:`nbtrain.attach` (which also lands
    here for every other run). A run whose log has not changed for ``STALE_S`` seconds and has
    no end is shown as it was left, with a note on how to resume it.

    Args:
        name: the run name (or its folder).
        runs_dir: where runs live.
        display: ``display(obj) -> handle`` (tests); IPython's by default.
        mode: the view (auto | html | widgets | text).
        follow: keep the view live while the run is training elsewhere.
        poll: seconds between two reads of the log while following.

    Returns:
        The :class:`~nbtrain.display.follow.Follower` when following, else None.
    """
    from nbtrain.display.follow import Follower
    from nbtrain.runs import is_sweep

    sweep_folder = Path(runs_dir) / str(name)
    if is_sweep(name) or is_sweep(sweep_folder):
        from nbtrain.display.sweep import SWEEPS_LIVE, replay_sweep  # a sweep: its trial panel

        folder = Path(name) if is_sweep(name) else sweep_folder
        live_panel = SWEEPS_LIVE.get(folder.name)
        if live_panel is not None:
            if display is not None:
                live_panel._display = display
            live_panel._handle = None
            live_panel._draw()
            return None
        replay_sweep(folder, display=display)
        return None
    from nbtrain.events import read_events
    from nbtrain.runs import STALE_S, find_run

    folder = find_run(name, runs_dir)
    frontend = detect_frontend()
    if display is None and not frontend.is_kernel and frontend is not Frontend.IPYTHON_TERMINAL:
        from nbtrain.display.text import TextRenderer

        text = TextRenderer(stream=sys.stdout, tty=False)
        for ev in read_events(folder):
            text(ev)
        text.close()
        return None

    from nbtrain.display.live import HtmlRenderer

    view = HtmlRenderer(display=display, frontend=frontend, write_card=False)
    log = folder / "events.jsonl"
    events = list(read_events(folder))
    ended = any(ev.type == "end" for ev in events)
    import time

    live = follow and not ended and log.exists() and time.time() - log.stat().st_mtime < STALE_S
    if not ended and not live:
        view.note = (
            "This run is not training in this kernel: showing its last recorded state. To resume "
            f"it, run its config again with the name {folder.name!r} (%%finetune {folder.name}, "
            f"or finetune(config, name={folder.name!r}))."
        )
    # Replaying through the renderer shows what the live view showed, in one redraw.
    for ev in events:
        view.state.update(ev)
    if ended:
        view._finish()
        return None
    if live:
        view.note = "Following this run: it is training in another process."
    view.show()
    if not live:
        return None
    return Follower(log, view, skip=sum(1 for _ in open(log, encoding="utf-8")), poll=poll).start()
