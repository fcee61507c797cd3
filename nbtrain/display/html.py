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

from nbtrain.display.state import RunState, fmt_num, fmt_time, model_metrics, rerun_advice

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
        f"<div class='nbt-progress' style='margin:4px 0'><progress value='{state.step}' "
        f"max='{state.total_steps or 1}'"
        f" style='width:320px;vertical-align:middle'></progress> {pct:.0f}%<br>"
        f"<span style='font-variant-numeric:tabular-nums'>{' · '.join(bits)}</span></div>"
    )


def eval_table(state: RunState, limit: int | None = None) -> str:
    """A row per evaluation; the best one (as the engine picks it) marked with ★.

    ``limit``: show the first, the best and the last ``limit`` evaluations only (the live view:
    a long run's table would push the curves out of sight); a row says how many are left out.
    """
    if not state.evals:
        return ""
    names = state.metric_names
    best = state.best_index
    best_metric = state.best_metric
    head = "".join(
        f"<th style='{HEAD}'>{escape(n)}{' ★' if best_metric and n == best_metric[0] else ''}</th>"
        for n in names
    )
    n = len(state.evals)
    shown = set(range(n))
    if limit is not None and n > limit + 2:
        shown = {0, *range(n - limit, n)} | ({best} if best is not None else set())
    rows = []
    for i, row in enumerate(state.evals):
        if i not in shown:
            if i - 1 in shown:  # one row for each run of left-out evaluations
                gap = next((j for j in range(i, n) if j in shown), n) - i
                rows.append(
                    f"<tr><td colspan='{len(names) + 2}' style='{CELL}text-align:left;"
                    f"opacity:.65'>… {gap} more evaluation{'s' if gap > 1 else ''} "
                    "(all of them in the card and in run.history)</td></tr>"
                )
            continue
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


def samples_table(
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str]],
    *,
    title: str = "",
    mark: str | None = None,
    limit: int = 8,
) -> str:
    """Rows of examples (predictions, generations, completions) as a table.

    Args:
        rows: one dict per example.
        columns: ``(key, header)`` pairs, in order; a missing key is an empty cell.
        title: a line above the table.
        mark: a boolean key; rows where it is False are tinted and get ✗ (True: ✓).
        limit: at most this many rows are shown.
    """
    if not rows:
        return ""
    head = "".join(f"<th style='{HEAD}text-align:left'>{escape(h)}</th>" for _, h in columns)
    if mark:
        head = f"<th style='{HEAD}'></th>" + head
    body = []
    for row in rows[:limit]:
        cells = "".join(
            f"<td style='{_SAMPLE_CELL}'>{_sample_value(row.get(k))}</td>" for k, _ in columns
        )
        style = ""
        if mark:
            ok = bool(row.get(mark))
            style = "" if ok else "background:rgba(192,0,0,.08);"
            sign = (
                "<span style='color:#117733'>✓</span>"
                if ok
                else "<span style='color:#C00000'>✗</span>"
            )
            cells = f"<td style='{CELL}text-align:center'>{sign}</td>" + cells
        body.append(f"<tr style='{style}'>{cells}</tr>")
    caption = (
        f"<div style='font-weight:600;margin:6px 0 2px'>{escape(title)}</div>" if title else ""
    )
    return (
        f"{caption}<table style='border-collapse:collapse;font-size:90%;margin:2px 0'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


_SAMPLE_CELL = (
    f"padding:2px 8px;border-bottom:{BORDER};text-align:left;vertical-align:top;"
    "max-width:32em;white-space:pre-wrap;overflow-wrap:anywhere;"
)
_PREDICTION_COLUMNS = [
    ("text", "text"),
    ("label", "true"),
    ("predicted", "predicted"),
    ("confidence", "confidence"),
]
# generations (causal-lm, seq2seq) and post-training completions (dpo, orpo, kto, grpo)
_GENERATION_COLUMNS = [
    ("prompt", "prompt"),
    ("output", "generated"),
    ("reference", "reference"),
    ("chosen", "chosen"),
    ("rejected", "rejected"),
    ("reward", "reward"),
    ("reward_parts", "per reward function"),
]


def _sample_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return fmt_num(v)
    return escape(str(v))


def model_outputs(state: RunState, *, final: bool = False) -> str:
    """What the model does on evaluation rows: example predictions (classification, the most
    confident mistakes first) or generated samples (causal-lm, seq2seq), from the eval events.

    ``final``: the final model's evaluation (the card), else the latest one (the live view).
    """
    details = state.final_details if final else state.details
    step = next((s for s, d in state.details_by_step.items() if d is details), None)
    at = f" at step {step:,}" if step is not None else ""
    preds = details.get("predictions")
    if preds:
        # a sentence pair reads as two lines in one cell
        rows = [
            dict(r, text=f"{r.get('text', '')}\n— {r['text_pair']}") if r.get("text_pair") else r
            for r in preds
        ]
        wrong = sum(1 for r in preds if not r.get("correct"))
        title = f"Example predictions{at}" + (
            ", most confident mistakes first" if wrong else ", no mistakes among them"
        )
        return samples_table(rows, _PREDICTION_COLUMNS, title=title, mark="correct")
    samples = [s for s in details.get("samples") or [] if isinstance(s, dict)]
    if samples:
        samples = [
            dict(
                s,
                reward_parts=", ".join(f"{k} {_sample_value(v)}" for k, v in s["rewards"].items()),
            )
            if isinstance(s.get("rewards"), dict)
            else s
            for s in samples
        ]
        columns = [
            c for c in _GENERATION_COLUMNS if any(s.get(c[0]) not in (None, "") for s in samples)
        ]
        return samples_table(samples, columns, title=f"Generated samples{at}")
    return ""


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
            f"<b>Failed{where}:</b> {escape(err.message)}{advice}"
            + _resume_hint(end, state, failed=True),
        )
    if end is not None and end.status in ("stopped", "interrupted"):
        return _box(
            "#B35900",
            f"<b>Run {escape(end.status)} at step {end.step:,}.</b>" + _resume_hint(end, state),
        )
    if end is not None and end.status == "failed":
        return _box("#C00000", "<b>The run failed.</b>" + _resume_hint(end, state, failed=True))
    if state.early_stop:
        return _box(
            "#0072B2", f"<b>{escape(state.early_stop[0].upper() + state.early_stop[1:])}.</b>"
        )
    return ""


def _resume_hint(end: Any, state: RunState, failed: bool = False) -> str:
    if end is None:
        return ""
    if end.resume_checkpoint:
        advice = rerun_advice(state.run, state.named, failed=failed)
        return (
            f"<br>Progress is saved in <code>{escape(_short(end.resume_checkpoint))}</code>. "
            f"{escape(advice)}"
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


def wrap(body: str, kind: str = "nbtrain-view") -> str:
    return f"<div class='{kind}' style='{FONT}line-height:1.45'>{body}</div>"


def _short(path: str) -> str:
    parts = str(path).replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else str(path)


def run_output(text: str, limit: int = 4000) -> str:
    """What the run printed (callbacks, the user's code), in the run's own view."""
    if not text:
        return ""
    shown = text if len(text) <= limit else "…" + text[-limit:]
    return (
        "<details style='margin-top:4px'><summary style='cursor:pointer;opacity:.8'>"
        f"output of the run ({text.count(chr(10)) + 1} lines)</summary>"
        f"<pre style='max-height:14em;overflow:auto;font-size:85%;margin:2px 0'>"
        f"{escape(shown)}</pre></details>"
    )


#: Evaluations the live view lists (first, best and the latest ones); the card lists all.
LIVE_EVAL_ROWS = 6


def live_html(state: RunState, curves: str = "", note: str = "", *, output: str = "") -> str:
    """The whole live view as one HTML string (``curves``: the SVG charts)."""
    body = (
        header(state)
        + (f"<div style='opacity:.8;font-size:85%'>{escape(note)}</div>" if note else "")
        + stages(state)
        + progress(state)
        + problem(state)
        + eval_table(state, limit=LIVE_EVAL_ROWS)
        + curves
        + model_outputs(state)
        + notices(state)
        + run_output(output)
    )
    return wrap(body)
