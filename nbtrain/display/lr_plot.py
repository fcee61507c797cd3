"""The LR finder's loss-vs-learning-rate curve as PNG bytes (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import io
from html import escape
from typing import Any

from nbtrain.display import html as H
from nbtrain.format import fmt_short


def lr_png(curve: Any, dpi: int = 100) -> bytes:
    """Raw and smoothed loss against the learning rate (log scale), the suggestion marked."""
    buf = io.BytesIO()
    lr_figure(curve, dpi).savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def lr_figure(curve: Any, dpi: int = 100) -> Any:
    """The matplotlib ``Figure`` behind :func:`lr_png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nbtrain.display.plots import BEST, COLORS, GRID, INK, MUTED

    fig = Figure(figsize=(6.4, 3.4), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve.lrs, curve.losses, color=MUTED, lw=0.8, alpha=0.6, label="loss per step")
    ax.plot(curve.lrs, curve.smoothed, color=COLORS[0], lw=1.8, label="smoothed")
    ax.set_xscale("log")
    lr = curve.suggestion
    y = _at(curve.lrs, curve.smoothed, lr)
    ax.axvline(lr, color=BEST, lw=1, ls="--")
    ax.scatter(
        [lr], [y], color=BEST, zorder=5, label=f"suggestion {fmt_short(lr)} ({curve.method})"
    )
    low = min(curve.smoothed)
    first = curve.smoothed[0]
    ax.set_ylim(
        low - 0.1 * abs(first - low) - 1e-3, max(first, low) + 0.6 * abs(first - low) + 1e-3
    )
    ax.set_xlabel("learning rate", color=INK)
    ax.set_ylabel("training loss", color=INK)
    ax.set_title("LR finder: loss during an exponential LR ramp", color=INK, fontsize=10)
    ax.grid(True, color=GRID, which="both", lw=0.5)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _at(xs: list[float], ys: list[float], x: float) -> float:
    i = min(range(len(xs)), key=lambda k: abs(xs[k] - x))
    return ys[i]


def lr_html(curve: Any, png: bytes | None) -> str:
    others = ", ".join(
        f"{m} {fmt_short(v)}" for m, v in curve.candidates.items() if m != curve.method
    )
    ran = len(curve.lrs)
    stop = " (stopped early: the loss diverged)" if curve.diverged else ""
    body = (
        f"<div><b style='font-size:110%'>LR finder</b>: suggested learning_rate "
        f"<b>{fmt_short(curve.suggestion)}</b> ({escape(curve.method)})<br>"
        f"<span style='opacity:.75;font-size:90%'>{ran} steps of batch {curve.batch_size}, LR "
        f"{fmt_short(curve.lrs[0])} → {fmt_short(curve.lrs[-1])}{stop}; other rules: "
        f"{escape(others)}</span></div>" + H.png_img(png, "loss against learning rate", width=640)
    )
    return H.wrap(body)
