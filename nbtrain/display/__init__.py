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

_WIDGETS_NOTE = (
    "display='widgets': nbtrain has no widget view yet; showing the HTML view, which works in "
    "every notebook frontend."
)


def make_renderer(mode: str = "auto", *, frontend: Frontend | None = None) -> Any:
    """A renderer for ``mode`` (auto | html | widgets | text | none), or None for none.

    ``auto`` follows ``set_default``/``NBTRAIN_DISPLAY`` when set, else the frontend: the HTML
    view in any Jupyter kernel (JupyterLab, Notebook 7, VS Code, Colab), text elsewhere.
    """
    frontend = frontend or detect_frontend()
    resolved = resolve_mode(mode, frontend)
    if resolved == "none":
        return None
    if resolved in ("html", "widgets"):
        note = _WIDGETS_NOTE if resolved == "widgets" else ""
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


def attach(name: str, runs_dir: str | Path = "runs", *, display: Any = None) -> None:
    """Show a run's view again: live if it is training in this kernel, else its static card.

    Use it when the browser reconnected and lost the running cell's output, or to look at a
    finished run after reopening the notebook.

    Args:
        name: the run name (or its folder).
        runs_dir: where runs live.
        display: ``display(obj) -> handle`` (tests); IPython's by default.
    """
    from nbtrain.display.live import LIVE, HtmlRenderer

    live = LIVE.get(str(name))
    if live is not None and not live.state.ended:
        if display is not None:
            live._display = display
        live.reattach()
        return

    folder = Path(name)
    if not (folder / "events.jsonl").exists():
        folder = Path(runs_dir) / str(name)
    from nbtrain.runs import is_sweep

    if is_sweep(folder) or is_sweep(name):
        from nbtrain.display.sweep import SWEEPS_LIVE, replay_sweep  # a sweep: its panel

        live_panel = SWEEPS_LIVE.get(Path(folder if is_sweep(folder) else name).name)
        if live_panel is not None:
            if display is not None:
                live_panel._display = display
            live_panel._handle = None
            live_panel._draw()
            return
        replay_sweep(folder if is_sweep(folder) else Path(name), display=display)
        return
    if not (folder / "events.jsonl").exists():
        from nbtrain.errors import ConfigError, did_you_mean

        root = Path(runs_dir)
        names = (
            sorted(p.name for p in root.iterdir() if (p / "events.jsonl").exists())
            if (root.is_dir())
            else []
        )
        raise ConfigError(
            f"No run named {str(name)!r} in {str(runs_dir)!r}.{did_you_mean(str(name), names)}"
            + (f" Runs: {', '.join(names[:10])}." if names else "")
        )

    from nbtrain.events import read_events

    frontend = detect_frontend()
    if display is None and not frontend.is_kernel and frontend is not Frontend.IPYTHON_TERMINAL:
        from nbtrain.display.text import TextRenderer

        text = TextRenderer(stream=sys.stdout, tty=False)
        for ev in read_events(folder):
            text(ev)
        text.close()
        return

    view = HtmlRenderer(display=display, frontend=frontend, write_card=False)
    events = list(read_events(folder))
    ended = any(ev.type == "end" for ev in events)
    if not ended:
        view.note = (
            "This run is not training in this kernel: showing its last recorded state. "
            "Run its cell (or finetune with the same name) again to resume it."
        )
    # Replaying through the renderer shows exactly what the live view showed; with the clock
    # frozen, throttling keeps it to a few redraws.
    view.clock = lambda: 0.0
    for ev in events:
        view.state.update(ev)
    if ended:
        view._finish()
    else:
        view._draw(figure=True)
