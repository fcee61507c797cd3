"""Training curves and the confusion matrix as PNG bytes (matplotlib, Agg, no pyplot).

A ``matplotlib.figure.Figure`` drawn on its own Agg canvas touches no global pyplot state, so
nothing leaks into the user's own plots and no GUI backend is ever started. The PNG has an
opaque light background, so it reads the same in light and dark notebook themes.
"""

from __future__ import annotations

import io
import math
from typing import Any

from nbtrain.display.state import RunState, fmt_num

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
INK = "#222222"
MUTED = "#6b6b6b"
GRID = "#e3e3e3"
BEST = "#C00000"


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing); weight from the length."""
    n = len(values)
    if n == 0:
        return []
    if weight is None:
        weight = 0.0 if n < 5 else min(0.95, 1.0 - 6.0 / n)
    out, last, norm = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(out[-1] if out else v)
            continue
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def curves_png(state: RunState, *, card: bool = False, dpi: int = 120) -> bytes:
    """The run's curves as PNG bytes: loss, eval metrics, learning rate (and, for the card, the
    confusion matrix and a title line)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    confusion = bool(card and state.final_details.get("confusion_matrix"))
    if confusion:
        fig = Figure(figsize=(10.5, 7.4), dpi=dpi, facecolor="white")
        grid = fig.add_gridspec(2, 2, hspace=0.5, wspace=0.28)
        axes = [fig.add_subplot(grid[i // 2, i % 2]) for i in range(4)]
    else:
        fig = Figure(figsize=(11, 3.6 if card else 3.2), dpi=dpi, facecolor="white")
        grid = fig.add_gridspec(1, 3, wspace=0.3)
        axes = [fig.add_subplot(grid[0, i]) for i in range(3)]
    FigureCanvasAgg(fig)

    _loss_panel(axes[0], state)
    _metrics_panel(axes[1], state)
    _lr_panel(axes[2], state)
    if confusion:
        _confusion_panel(axes[3], state.final_details)
    if card:
        fig.suptitle(_title(state), fontsize=12, color=INK, x=0.01, ha="left", fontweight="bold")
        two_lines = "\n" in _title(state)
        top = (0.87 if two_lines else 0.9) if confusion else (0.74 if two_lines else 0.8)
    else:
        top = 0.88
    fig.subplots_adjust(left=0.06 if not confusion else 0.08, right=0.98, bottom=0.16, top=top)
    if confusion:
        fig.subplots_adjust(bottom=0.1)
    buf = io.BytesIO()
    # Live frames favour speed (zlib level 1: ~20 % faster, ~7 % bigger); the card, size.
    level = 6 if card else 1
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", pil_kwargs={"compress_level": level})
    return buf.getvalue()


def _title(state: RunState) -> str:
    parts = [state.run or "run", state.status]
    metrics = state.final_metrics
    headline = ("eval_accuracy", "eval_f1", "eval_rewards/accuracies", "eval_reward", "eval_loss")
    for key in (*headline, "train_loss"):
        if key in metrics:
            parts.append(f"{key} {fmt_num(metrics[key])}")
    line = "  ·  ".join(parts)
    if len(line) > 80:  # the figure is ~11 inches wide: keep the metrics on their own line
        line = "  ·  ".join(parts[:2]) + "\n" + "  ·  ".join(parts[2:])
    return line


def _style(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, color=INK, loc="left", fontweight="bold")
    ax.set_xlabel("optimizer step", fontsize=9, color=MUTED)
    ax.set_ylabel(ylabel, fontsize=9, color=MUTED)
    ax.tick_params(labelsize=8, colors=MUTED)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#bbbbbb")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=MUTED)
    ax.set_xticks([])
    ax.set_yticks([])


def _x_limits(ax: Any, state: RunState) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    if state.total_steps:
        # A run that ended early (stopped, failed) is drawn over the steps it trained.
        last = state.step if state.ended and state.step < state.total_steps else state.total_steps
        ax.set_xlim(0, max(1, last) * 1.02)


def _loss_panel(ax: Any, state: RunState) -> None:
    _style(ax, "Loss", "loss")
    train = [(s, v) for s, v in state.train_loss if math.isfinite(v)]
    evals = [(r.step, r.metrics["loss"]) for r in state.evals if "loss" in r.metrics]
    if not train and not evals:
        _empty(ax, "waiting for the first logged step")
        return
    if train:
        xs, ys = zip(*train)
        raw_alpha = 0.3 if len(train) >= 5 else 0.9
        ax.plot(xs, ys, color=COLORS[0], alpha=raw_alpha, linewidth=1, label="train")
        if len(train) >= 5:
            ax.plot(xs, smooth(list(ys)), color=COLORS[0], linewidth=2, label="train (smoothed)")
    if evals:
        xs, ys = zip(*evals)
        ax.plot(xs, ys, color=COLORS[1], marker="o", markersize=4, linewidth=1.5, label="eval")
    best = state.best_metric
    if best and best[0] == "loss":
        _mark_best(ax, state, "loss")
    _x_limits(ax, state)
    ax.legend(fontsize=8, frameon=True, framealpha=0.85, edgecolor="none", loc="best")


def _metrics_panel(ax: Any, state: RunState) -> None:
    names = [n for n in state.metric_names if n != "loss"]
    _style(ax, "Eval metrics", "score")
    if not names:
        _empty(ax, "no evaluation yet" if not state.evals else "eval loss only (left)")
        return
    for i, name in enumerate(names[:6]):
        pts = [(r.step, r.metrics[name]) for r in state.evals if name in r.metrics]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(
                xs,
                ys,
                color=COLORS[(i + 2) % len(COLORS)],
                marker="o",
                markersize=4,
                linewidth=1.5,
                label=name,
            )
    best = state.best_metric
    if best and best[0] in names:
        _mark_best(ax, state, best[0])
    _score_limits(ax, state, names[:6])
    _x_limits(ax, state)
    ax.legend(fontsize=8, frameon=True, framealpha=0.85, edgecolor="none", loc="best")


def _score_limits(ax: Any, state: RunState, names: list[str]) -> None:
    """Scores in [0, 1] get a y-range of at least 0.1: a flat or single-point curve must not be
    blown up until 0.861 and 0.862 look far apart."""
    ys = [r.metrics[n] for r in state.evals for n in names if n in r.metrics]
    ys = [y for y in ys if math.isfinite(y)]
    if not ys or min(ys) < 0 or max(ys) > 1:
        return
    lo, hi = min(ys), max(ys)
    pad = max(0.05, (hi - lo) * 0.15)
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) + 0.02)


def _mark_best(ax: Any, state: RunState, name: str) -> None:
    idx = state.best_index
    if idx is None:
        return
    row = state.evals[idx]
    if name not in row.metrics:
        return
    y = row.metrics[name]
    ax.scatter(
        [row.step], [y], s=160, marker="*", color=BEST, zorder=5, label=f"best {name} {fmt_num(y)}"
    )
    ax.annotate(
        f"best\n{fmt_num(y)}",
        (row.step, y),
        textcoords="offset points",
        xytext=(0, -26),
        ha="center",
        fontsize=8,
        color=BEST,
    )


def _lr_panel(ax: Any, state: RunState) -> None:
    _style(ax, "Learning rate", "learning rate")
    pts = state.learning_rate
    if not pts:
        _empty(ax, "waiting for the first logged step")
        return
    xs, ys = zip(*pts)
    ax.plot(xs, ys, color=COLORS[4], linewidth=2)
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(_sci))
    ax.set_ylim(bottom=0)
    _x_limits(ax, state)


def _sci(v: float, _pos: Any = None) -> str:
    if v == 0:
        return "0"
    mantissa, exp = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _confusion_panel(ax: Any, details: dict[str, Any]) -> None:
    cm = details["confusion_matrix"]
    labels = [str(x) for x in details.get("labels") or range(len(cm))]
    n = len(cm)
    ax.set_title("Confusion matrix (eval)", fontsize=11, color=INK, loc="left", fontweight="bold")
    peak = max((max(row) for row in cm), default=0) or 1
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=peak)
    if n <= 20:
        size = 9 if n <= 6 else 7
        for i in range(n):
            for j in range(n):
                v = cm[i][j]
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if v > peak * 0.55 else INK,
                )
    shown = labels if n <= 20 else [""] * n
    short = [lab if len(lab) <= 12 else lab[:11] + "…" for lab in shown]
    ax.set_xticks(
        range(n), short, fontsize=8, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center"
    )
    ax.set_yticks(range(n), short, fontsize=8)
    ax.set_xlabel("predicted", fontsize=9, color=MUTED)
    ax.set_ylabel("true", fontsize=9, color=MUTED)
    ax.tick_params(colors=MUTED, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
