"""HTML fragments of a :class:`RunState`, shared by the live view and the run card.

Inline styles only (a ``<style>`` block would leak into the whole notebook page), colours that
read on light and dark themes (text inherits the theme's colour, borders are translucent), and
plain tables and ``<progress>`` so a saved notebook still reads on GitHub, which strips styles.
"""

from __future__ import annotations

import base64
import functools
from html import escape
from typing import Any

from nbtrain.display.state import RunState, fmt_num, fmt_time, model_metrics

BORDER = "1px solid rgba(128,128,128,.35)"
FONT = "font-family:var(--jp-ui-font-family,system-ui,-apple-system,'Segoe UI',sans-serif);"
STATUS_COLORS = {
    "preparing": "#6b6b6b",
    "training": "#0072B2",
    "finished": "#117733",
    "stopped": "#B35900",
    "interrupted": "#B35900",
    "failed": "#C00000",
}
CELL = f"padding:2px 8px;border-bottom:{BORDER};text-align:right;"
HEAD = f"padding:2px 8px;border-bottom:{BORDER};text-align:right;font-weight:600;"


def badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6b6b6b")
    return (
        f"<span style='background:{color};color:#fff;border-radius:3px;padding:1px 6px;"
        f"font-size:85%'>{escape(status)}</span>"
    )


def header(state: RunState) -> str:
    info = state.info
    bits = []
    if info.get("model"):
        bits.append(f"<code>{escape(_short(str(info['model'])))}</code>")
    if info.get("task"):
        bits.append(escape(info["task"]))
    if info.get("device"):
        bits.append(escape(f"{info['device']}, {info.get('precision', '')}".rstrip(", ")))
    if info.get("train_samples"):
        bits.append(f"{info['train_samples']:,} train / {info.get('eval_samples', 0):,} eval rows")
    if info.get("params_trainable"):
        bits.append(
            f"{info['params_trainable'] / 1e6:.2f}M of {info.get('params_total', 0) / 1e6:.2f}M"
            " params trained"
        )
    if info.get("resumed_from"):
        bits.append(f"resumed from {escape(_short(info['resumed_from']))}")
    name = escape(state.run or "nbtrain run")
    sub = " · ".join(bits)
    return (
        f"<div style='margin-bottom:4px'><b style='font-size:110%'>{name}</b> "
        f"{badge(state.status)}"
        + (f"<br><span style='opacity:.75;font-size:90%'>{sub}</span>" if sub else "")
        + "</div>"
    )


def stages(state: RunState) -> str:
    """The preparation stages: done ones in one line each, the running one with its progress."""
    if not state.stages:
        return ""
    lines = []
    for st in state.stages.values():
        if st.status == "done":
            took = f" in {st.ended - st.started:.1f} s" if st.ended else ""
            detail = f" — {escape(st.detail)}" if st.detail else ""
            lines.append(f"✓ {escape(st.label)}{detail}{took}")
        else:
            detail = f" {escape(st.detail)}" if st.detail else ""
            bar = ""
            if st.total:
                done = st.done or 0
                bar = (
                    f" <progress value='{done}' max='{st.total}' style='width:160px;"
                    f"vertical-align:middle'></progress> {done:,}/{st.total:,}"
                )
            lines.append(f"⏳ {escape(st.label)}…{detail}{bar}")
    if state.started:
        # Once training runs, the preparation is one compact line.
        return f"<div style='opacity:.7;font-size:85%'>{' · '.join(lines)}</div>"
    return "<div style='font-size:95%'>" + "<br>".join(lines) + "</div>"


def progress(state: RunState) -> str:
    if not state.started:
        return ""
    pct = state.fraction * 100
    bits = [
        f"step <b>{state.step:,}</b>/{state.total_steps:,}",
        f"epoch {state.epoch:.2f}/{float(state.info.get('num_epochs') or 0):g}",
        f"{fmt_time(state.elapsed)} elapsed",
    ]
    if not state.ended:
        eta = state.eta
        bits.append(f"ETA {fmt_time(eta)}" if eta is not None else "ETA –")
    sps = state.samples_per_second
    if sps:
        bits.append(f"{sps:,.1f} samples/s")
    if state.tokens_per_second:
        bits.append(f"{state.tokens_per_second:,.0f} tokens/s")
    loss = state.train_loss
    if loss:
        bits.append(f"loss {fmt_num(loss[-1][1])}")
    return (
        f"<div style='margin:4px 0'><progress value='{state.step}' max='{state.total_steps or 1}'"
        f" style='width:320px;vertical-align:middle'></progress> {pct:.0f}%<br>"
        f"<span style='font-variant-numeric:tabular-nums'>{' · '.join(bits)}</span></div>"
    )


def eval_table(state: RunState) -> str:
    """A row per evaluation; the best one (as the engine picks it) marked with ★."""
    if not state.evals:
        return ""
    names = state.metric_names
    best = state.best_index
    best_metric = state.best_metric
    head = "".join(
        f"<th style='{HEAD}'>{escape(n)}{' ★' if best_metric and n == best_metric[0] else ''}</th>"
        for n in names
    )
    rows = []
    for i, row in enumerate(state.evals):
        mark = i == best
        style = "font-weight:600;background:rgba(17,119,51,.12);" if mark else ""
        cells = "".join(
            f"<td style='{CELL}'>{fmt_num(row.metrics[n]) if n in row.metrics else ''}</td>"
            for n in names
        )
        rows.append(
            f"<tr style='{style}'><td style='{CELL}'>{'★ ' if mark else ''}{row.step:,}</td>"
            f"<td style='{CELL}'>{row.epoch:.2f}</td>{cells}</tr>"
        )
    return (
        "<table style='border-collapse:collapse;font-size:90%;margin:4px 0;"
        "font-variant-numeric:tabular-nums'>"
        f"<thead><tr><th style='{HEAD}'>step</th><th style='{HEAD}'>epoch</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def notices(state: RunState) -> str:
    if not state.notices:
        return ""
    items = "".join(f"<li>{escape(m)}</li>" for m in state.notices[-5:])
    return f"<ul style='margin:2px 0;padding-left:18px;opacity:.8;font-size:85%'>{items}</ul>"


def problem(state: RunState) -> str:
    """What went wrong or why the run stopped, and what to do next."""
    end, err = state.end, state.error
    if err is not None:
        advice = f"<br>{escape(err.advice)}" if err.advice else ""
        where = f" at step {err.step:,}" if err.step else ""
        return _box(
            "#C00000",
            f"<b>Failed{where}:</b> {escape(err.message)}{advice}" + _resume_hint(end, failed=True),
        )
    if end is not None and end.status in ("stopped", "interrupted"):
        return _box(
            "#B35900",
            f"<b>Run {escape(end.status)} at step {end.step:,}.</b>" + _resume_hint(end),
        )
    if end is not None and end.status == "failed":
        return _box("#C00000", "<b>The run failed.</b>" + _resume_hint(end, failed=True))
    if state.early_stop:
        return _box(
            "#0072B2", f"<b>{escape(state.early_stop[0].upper() + state.early_stop[1:])}.</b>"
        )
    return ""


def _resume_hint(end: Any, failed: bool = False) -> str:
    if end is None:
        return ""
    if end.resume_checkpoint:
        verb = "Fix the cause, then run" if failed else "Run"
        return (
            f"<br>Progress is saved in <code>{escape(_short(end.resume_checkpoint))}</code>. "
            f"{verb} the same cell or command again to resume from it."
        )
    return "<br>No checkpoint was written; running it again starts from the beginning."


def _box(color: str, body: str) -> str:
    return (
        f"<div style='border-left:4px solid {color};padding:4px 8px;margin:4px 0;"
        f"background:rgba(128,128,128,.08)'>{body}</div>"
    )


@functools.lru_cache(maxsize=4)  # the same figure goes out with many bar frames
def png_img(png: bytes | None, alt: str, width: int = 1000) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<img src='data:image/png;base64,{data}' alt='{escape(alt)}' width='{width}' "
        "style='max-width:100%;height:auto;display:block;margin-top:4px'>"
    )


def metrics_table(metrics: dict[str, float]) -> str:
    shown = {k: v for k, v in model_metrics(metrics).items() if not k.endswith("flos")}
    if not shown:
        return ""
    rows = "".join(
        f"<tr><td style='{CELL}text-align:left'>{escape(k)}</td>"
        f"<td style='{CELL}'>{fmt_num(v)}</td></tr>"
        for k, v in shown.items()
    )
    return (
        "<table style='border-collapse:collapse;font-size:90%;font-variant-numeric:tabular-nums'>"
        f"{rows}</table>"
    )


def wrap(body: str) -> str:
    return f"<div class='nbtrain-view' style='{FONT}line-height:1.45'>{body}</div>"


def _short(path: str) -> str:
    parts = str(path).replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else str(path)


def live_html(state: RunState, png: bytes | None, note: str = "") -> str:
    """The whole live view as one HTML string."""
    body = (
        header(state)
        + (f"<div style='opacity:.8;font-size:85%'>{escape(note)}</div>" if note else "")
        + stages(state)
        + progress(state)
        + problem(state)
        + eval_table(state)
        + png_img(png, f"training curves of {state.run}")
        + notices(state)
    )
    return wrap(body)
