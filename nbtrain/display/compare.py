"""How a comparison of runs looks: HTML (inline SVG curves), text, and PNG (matplotlib, Agg).

Renders a :class:`nbtrain.comparison.Comparison` (passed in, never imported: ``nbtrain.comparison`` sits
above the display). One colour per run, the same in the curves, the legend and the table.
"""

from __future__ import annotations

import io
import json
import math
from html import escape
from typing import Any

from nbtrain.display import html as H
from nbtrain.display.svg import COLORS, Chart, Series, render, smooth
from nbtrain.format import fmt_num, fmt_short, fmt_time

BEST_BG = "background:rgba(17,119,51,.12);font-weight:600;"
#: What the curves can be drawn against, and the axis label for each.
X_AXES = {"step": "optimizer step", "epoch": "epoch", "samples": "samples seen"}


def run_color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def panels(cmp: Any) -> list[tuple[str, str, list[list[tuple[float, float]]]]]:
    """(title, y label, one list of points per run) for each chart: train loss, eval loss and
    the main metric (when the runs have one other than the loss)."""
    out = [
        ("Train loss", "loss", [r.train_loss(cmp.x) for r in cmp.runs]),
        ("Eval loss", "loss", [r.eval_curve("loss", cmp.x) for r in cmp.runs]),
    ]
    if cmp.metric:
        name = cmp.metric[0]
        out.append((f"Eval {name}", name, [r.eval_curve(name, cmp.x) for r in cmp.runs]))
    return out


def _x_range(cmp: Any) -> tuple[float, float] | None:
    ends = [e for e in (r.x_end(cmp.x) for r in cmp.runs) if e]
    return (0.0, max(ends)) if ends else None


def charts(cmp: Any) -> list[Chart]:
    out = []
    for title, _, per_run in panels(cmp):
        series: list[Series] = []
        train = title == "Train loss"
        for i, (run, pts) in enumerate(zip(cmp.runs, per_run)):
            if train and len(pts) >= 5:
                # raw values faint, the smoothed line on top: several runs stay readable
                series.append(Series(run.name, pts, run_color(i), width=1, opacity=0.25))
                sm = smooth([v for _, v in pts])
                pts = [(x, v) for (x, _), v in zip(pts, sm)]
                series.append(Series(run.name, pts, run_color(i)))
            else:
                series.append(Series(run.name, pts, run_color(i), markers=not train))
        out.append(
            Chart(
                title,
                series,
                x_label=X_AXES[cmp.x],
                x_range=_x_range(cmp),
                legend=False,
                empty="no evaluation yet" if not train else "no logged step yet",
                width=360,
                height=230,
            )
        )
    return out


# -- HTML --------------------------------------------------------------------------------------


def comparison_html(cmp: Any) -> str:
    head = (
        f"<div style='margin-bottom:4px'><b style='font-size:110%'>Comparing {len(cmp.runs)} "
        f"runs</b> <span style='opacity:.75;font-size:90%'>curves against "
        f"{escape(X_AXES[cmp.x])}</span></div>"
    )
    curves = (
        "<div style='display:flex;flex-wrap:wrap;gap:8px;margin:6px 0'>"
        + "".join(render(c) for c in charts(cmp))
        + "</div>"
    )
    diff = config_diff_html(cmp)
    return H.wrap(head + legend_html(cmp) + curves + metrics_html(cmp) + diff)


def _swatch(i: int) -> str:
    return (
        f"<span style='display:inline-block;width:14px;height:3px;background:{run_color(i)};"
        "vertical-align:middle;margin-right:5px'></span>"
    )


def legend_html(cmp: Any) -> str:
    items = [
        f"<span style='margin-right:14px;white-space:nowrap'>{_swatch(i)}<b>{escape(r.name)}</b> "
        f"{H.badge(r.status)}</span>"
        for i, r in enumerate(cmp.runs)
    ]
    return f"<div style='margin:2px 0;line-height:1.9'>{''.join(items)}</div>"


def _table_rows(cmp: Any) -> tuple[list[str], list[list[str]], list[set[int]]]:
    """Header, cells (formatted) and, per row, the indices of its best cells."""
    names = cmp.metric_names
    main = cmp.metric[0] if cmp.metric else None
    header = ["run", "status", "steps", "best eval at"]
    header += [f"{n} ({'↑' if _greater(cmp, n) else '↓'})" for n in names]
    header += ["train loss", "time"]
    best_by_metric = {n: cmp.best_runs(n) for n in names}
    rows, marks = [], []
    for i, run in enumerate(cmp.runs):
        s, row = run.state, run.best_eval
        steps = f"{s.step:,}/{s.total_steps:,}" if s.total_steps else "–"
        cells = [run.name, run.status, steps, f"step {row.step:,}" if row else "–"]
        best_cells = set()
        for j, n in enumerate(names):
            v = row.metrics.get(n) if row else None
            cells.append(fmt_num(v) if v is not None else "–")
            if i in best_by_metric[n]:
                best_cells.add(4 + j)
                cells[-1] = ("★ " if n == main else "") + cells[-1]
        loss = run.last_train_loss
        cells += [fmt_num(loss) if loss is not None else "–", fmt_time(s.elapsed)]
        rows.append(cells)
        marks.append(best_cells)
    return header, rows, marks


def _greater(cmp: Any, name: str) -> bool:
    from nbtrain.display.state import higher_is_better

    if cmp.metric and cmp.metric[0] == name:
        return cmp.metric[1]
    return higher_is_better(name)


def metrics_html(cmp: Any) -> str:
    header, rows, marks = _table_rows(cmp)
    head = "".join(
        f"<th style='{H.HEAD}{'text-align:left' if j < 2 else ''}'>{escape(h)}</th>"
        for j, h in enumerate(header)
    )
    body = []
    for i, (cells, best) in enumerate(zip(rows, marks)):
        tds = []
        for j, c in enumerate(cells):
            style = H.CELL + ("text-align:left;" if j < 2 else "") + (BEST_BG if j in best else "")
            text = escape(c) if j else _swatch(i) + escape(c)
            if j == 1:
                text = H.badge(c)
            tds.append(f"<td style='{style}'>{text}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    note = (
        "<div style='opacity:.7;font-size:85%'>Metrics of each run's kept evaluation (the best "
        "checkpoint; the best so far while a run trains); ★ and green: the best run on that "
        "metric.</div>"
    )
    return (
        "<div style='font-weight:600;margin:8px 0 2px'>Metrics</div>"
        "<table style='border-collapse:collapse;font-size:90%;font-variant-numeric:tabular-nums'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"
    )


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return fmt_short(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def config_diff_html(cmp: Any) -> str:
    diff = cmp.config_diff()
    title = "<div style='font-weight:600;margin:8px 0 2px'>Config differences</div>"
    if not diff:
        return title + "<div style='opacity:.8'>The configs are the same (apart from names).</div>"
    head = f"<th style='{H.HEAD}text-align:left'>key</th>" + "".join(
        f"<th style='{H.HEAD}text-align:left'>{_swatch(i)}{escape(r.name)}</th>"
        for i, r in enumerate(cmp.runs)
    )
    body = "".join(
        f"<tr><td style='{H.CELL}text-align:left'><code>{escape(k)}</code></td>"
        + "".join(
            f"<td style='{H.CELL}text-align:left'><code>{escape(_clip(_value(v)))}</code></td>"
            for v in values
        )
        + "</tr>"
        for k, values in diff
    )
    return (
        title + "<table style='border-collapse:collapse;font-size:90%'>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# -- text --------------------------------------------------------------------------------------


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]
    )


def comparison_text(cmp: Any) -> str:
    header, rows, marks = _table_rows(cmp)
    for cells, best in zip(rows, marks):
        for j in best:
            if not cells[j].startswith("★"):
                cells[j] = "* " + cells[j]
    lines = [f"Comparison of {len(cmp.runs)} runs ({', '.join(r.name for r in cmp.runs)})"]
    lines += ["", _text_table(header, rows), "(★/*: the best run on that metric)", ""]
    diff = cmp.config_diff()
    if diff:
        lines.append("Config differences:")
        lines.append(
            _text_table(
                ["key", *[r.name for r in cmp.runs]],
                [[k, *[_clip(_value(v), 30) for v in values]] for k, values in diff],
            )
        )
    else:
        lines.append("The configs are the same (apart from names).")
    return "\n".join(lines)


# -- PNG ---------------------------------------------------------------------------------------


def comparison_png(cmp: Any, *, dpi: int = 120) -> bytes:
    """The overlaid curves as PNG bytes (a Figure on its own Agg canvas: no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    items = panels(cmp)
    fig = Figure(figsize=(3.7 * len(items), 3.6), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(items))
    x_range = _x_range(cmp)
    for ax, (title, ylabel, per_run) in zip(axes, items):
        ax.set_title(title, fontsize=11, color="#222222", loc="left", fontweight="bold")
        ax.set_xlabel(X_AXES[cmp.x], fontsize=9, color="#6b6b6b")
        ax.set_ylabel(ylabel, fontsize=9, color="#6b6b6b")
        ax.tick_params(labelsize=8, colors="#6b6b6b")
        ax.grid(True, color="#e3e3e3", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        drawn = False
        for i, pts in enumerate(per_run):
            pts = [(x, y) for x, y in pts if math.isfinite(y)]
            if not pts:
                continue
            drawn = True
            xs, ys = zip(*pts)
            if title == "Train loss" and len(pts) >= 5:
                ax.plot(xs, ys, color=run_color(i), alpha=0.25, linewidth=1)
                ax.plot(xs, smooth(list(ys)), color=run_color(i), linewidth=2)
            else:
                ax.plot(xs, ys, color=run_color(i), linewidth=1.6, marker="o", markersize=3.5)
        if not drawn:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        if x_range:
            ax.set_xlim(x_range[0], x_range[1] * 1.02)
        if cmp.x != "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    handles = [Line2D([], [], color=run_color(i), linewidth=2.5) for i in range(len(cmp.runs))]
    fig.legend(
        handles,
        [f"{r.name} ({r.status})" for r in cmp.runs],
        loc="upper center",
        ncol=min(len(cmp.runs), 5),
        frameon=False,
        fontsize=9,
    )
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.78, wspace=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()
