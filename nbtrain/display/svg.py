"""Training curves as inline SVG: vector charts built from the numbers, redrawn in milliseconds.

The live view redraws them at its own cadence (every half second), so a point shows as soon as
it is logged. Inline SVG needs no JavaScript, no widget state and no network: it renders in
JupyterLab, Notebook 7, VS Code, Colab and a saved notebook alike. Measured against the PNG
(matplotlib) and Vega-Lite (Altair) alternatives in ``bench/view_overhead.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from nbtrain.display.state import RunState
from nbtrain.format import fmt_short

# Okabe-Ito, as in the PNG plots: distinguishable with the common colour-vision deficiencies.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
BEST = "#C00000"
GRID = "rgba(128,128,128,.25)"
INK = "currentColor"  # the theme's text colour: reads on light and dark themes


@dataclass
class Series:
    """One line of a chart."""

    name: str
    points: list[tuple[float, float]]
    color: str = COLORS[0]
    width: float = 1.8
    opacity: float = 1.0
    dashed: bool = False
    markers: bool = False


@dataclass
class Chart:
    """A small line chart: title, series, optional best-point star, optional log y."""

    title: str
    series: list[Series] = field(default_factory=list)
    x_label: str = "step"
    x_range: tuple[float, float] | None = None
    log_y: bool = False
    best: tuple[float, float, str] | None = None  # x, y, label
    empty: str = "waiting for the first logged step"
    legend: bool = True  # off when the legend is drawn once for several charts (compare)
    width: int = 300
    height: int = 210


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        m, e = f"{v:.1e}".split("e")
        return f"{m.rstrip('0').rstrip('.')}e{int(e)}"
    return f"{v:.4g}"


#: Points a line keeps: more than the chart's width in pixels buys nothing but bytes and time.
MAX_POINTS = 400


def thin(points: list[tuple[float, float]], n: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Every k-th point (the first and the last kept) so a line has at most about ``n``."""
    if len(points) <= n:
        return points
    k = math.ceil(len(points) / n)
    out = points[::k]
    return out if out[-1] == points[-1] else [*out, points[-1]]


def render(chart: Chart) -> str:
    """The chart as one ``<svg>`` element."""
    w, h = chart.width, chart.height
    left, right, top, bottom = 48, 10, 22, 30
    pw, ph = w - left - right, h - top - bottom
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' "
        f"viewBox='0 0 {w} {h}' role='img' aria-label='{escape(chart.title)}' "
        "style='font:11px system-ui,sans-serif;color:inherit;overflow:visible'>",
        f"<text x='{left}' y='13' fill='{INK}' font-weight='600'>{escape(chart.title)}</text>",
    ]
    pts = [
        (x, y)
        for s in chart.series
        for x, y in s.points
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not chart.log_y)
    ]
    if not pts:
        out.append(
            f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' "
            f"stroke='{GRID}'/><text x='{left + pw / 2}' y='{top + ph / 2}' text-anchor='middle' "
            f"fill='{INK}' opacity='.6'>{escape(chart.empty)}</text></svg>"
        )
        return "".join(out)

    def fy(y: float) -> float:
        return math.log10(y) if chart.log_y else y

    xs = [p[0] for p in pts]
    ys = [fy(p[1]) for p in pts]
    x0, x1 = chart.x_range or (min(xs), max(xs))
    x0, x1 = min(x0, min(xs)), max(x1, max(xs))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 0.5)
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (fy(y) - y0) / (y1 - y0)) * ph

    # grid and axes
    for t in nice_ticks(y0, y1):
        yy = top + (1 - (t - y0) / (y1 - y0)) * ph
        label = _tick_label(10**t) if chart.log_y else _tick_label(t)
        out.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{yy:.1f}' y2='{yy:.1f}' stroke='{GRID}'/>"
            f"<text x='{left - 4}' y='{yy + 3.5:.1f}' text-anchor='end' fill='{INK}' "
            f"opacity='.75'>{label}</text>"
        )
    for t in nice_ticks(x0, x1):
        xx = sx(t)
        out.append(
            f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='{top + ph}' y2='{top + ph + 3}' "
            f"stroke='{INK}' opacity='.5'/><text x='{xx:.1f}' y='{top + ph + 14}' "
            f"text-anchor='middle' fill='{INK}' opacity='.75'>{_tick_label(t)}</text>"
        )
    out.append(
        f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='{GRID}'/>"
        f"<text x='{left + pw}' y='{h - 3}' text-anchor='end' fill='{INK}' "
        f"opacity='.6'>{escape(chart.x_label)}</text>"
    )
    # lines
    legend = []
    for s in chart.series:
        spts = [
            (sx(x), sy(y))
            for x, y in thin(s.points)
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not chart.log_y)
        ]
        if not spts:
            continue
        dash = " stroke-dasharray='4 3'" if s.dashed else ""
        if len(spts) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in spts)
            out.append(
                f"<polyline points='{d}' fill='none' stroke='{s.color}' "
                f"stroke-width='{s.width}' stroke-opacity='{s.opacity}' "
                f"stroke-linejoin='round'{dash}/>"
            )
        if s.markers or len(spts) == 1:
            out.extend(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.8' fill='{s.color}'/>" for x, y in spts
            )
        if s.opacity >= 0.5 and chart.legend:
            legend.append((s.name, s.color, s.dashed))
    if chart.best is not None:
        bx, by, label = chart.best
        if math.isfinite(bx) and math.isfinite(by):
            out.append(
                f"<text x='{sx(bx):.1f}' y='{sy(by) + 5:.1f}' text-anchor='middle' "
                f"fill='{BEST}' font-size='16'>★</text>"
                f"<text x='{sx(bx):.1f}' y='{sy(by) + 18:.1f}' text-anchor='middle' "
                f"fill='{BEST}'>{escape(label)}</text>"
            )
    # legend, top right inside the plot
    for i, (name, color, dashed) in enumerate(legend[:6]):
        ly = top + 10 + 13 * i
        dash = " stroke-dasharray='4 3'" if dashed else ""
        out.append(
            f"<line x1='{left + pw - 88}' x2='{left + pw - 74}' y1='{ly - 3.5}' y2='{ly - 3.5}' "
            f"stroke='{color}' stroke-width='2'{dash}/><text x='{left + pw - 70}' y='{ly}' "
            f"fill='{INK}'>{escape(_clip(name, 14))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def smooth(values: Sequence[float], weight: float | None = None) -> list[float]:
    """TensorBoard-style exponential smoothing, debiased so the start is not pulled to 0."""
    if not values:
        return []
    if weight is None:
        weight = min(0.9, 1 - 5 / max(len(values), 5)) if len(values) > 5 else 0.0
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n) if weight else v)
    return out


def _x_range(state: RunState) -> tuple[float, float] | None:
    # From the first step to the latest one: the curves fill the chart as they grow (the
    # progress bar already says how far along the run is).
    return (0, max(1, state.step))


def loss_chart(state: RunState) -> Chart:
    train = [(s, v) for s, v in state.train_loss if math.isfinite(v)]
    evals = [(r.step, r.metrics["loss"]) for r in state.evals if "loss" in r.metrics]
    series = []
    if train:
        if len(train) >= 5:
            series.append(Series("train", train, COLORS[0], width=1, opacity=0.3))
            sm = smooth([v for _, v in train])
            series.append(Series("train", [(s, v) for (s, _), v in zip(train, sm)], COLORS[0]))
        else:
            series.append(Series("train", train, COLORS[0], markers=True))
    if evals:
        series.append(Series("eval", evals, COLORS[1], markers=True))
    return Chart("Loss", series, x_range=_x_range(state), best=_best(state, "loss"))


def metrics_chart(state: RunState) -> Chart:
    names = [n for n in state.metric_names if n != "loss"][:6]
    series = [
        Series(
            n,
            [(r.step, r.metrics[n]) for r in state.evals if n in r.metrics],
            COLORS[(i + 2) % len(COLORS)],
            markers=True,
        )
        for i, n in enumerate(names)
    ]
    best = state.best_metric
    return Chart(
        "Eval metrics",
        series,
        x_range=_x_range(state),
        best=_best(state, best[0]) if best and best[0] in names else None,
        empty="no evaluation yet" if not state.evals else "eval loss only (left)",
    )


def lr_chart(state: RunState) -> Chart:
    return Chart(
        "Learning rate",
        [Series("lr", state.learning_rate, COLORS[4])],
        x_range=_x_range(state),
    )


def _best(state: RunState, name: str) -> tuple[float, float, str] | None:
    idx = state.best_index
    best = state.best_metric
    if idx is None or best is None or best[0] != name:
        return None
    row = state.evals[idx]
    if name not in row.metrics:
        return None
    return (row.step, row.metrics[name], f"best {fmt_short(row.metrics[name])}")


def curves_svg(state: RunState) -> str:
    """Loss, eval metrics and learning rate side by side (wrapping on narrow outputs)."""
    charts = (loss_chart(state), metrics_chart(state), lr_chart(state))
    return (
        "<div style='display:flex;flex-wrap:wrap;gap:8px;margin:6px 0'>"
        + "".join(render(c) for c in charts)
        + "</div>"
    )
