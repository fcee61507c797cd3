"""The dry-run report's forms: text for terminals, HTML for notebooks, a plot, JSON.

The engine hands over numbers (:class:`nbtrain.engine.dryrun.DryRunReport`); :class:`Report`
wraps them with ``__repr__``/``text()``, ``_repr_html_``, ``.plot()`` and ``to_json()``. The
HTML draws the length histograms as inline SVG (no matplotlib needed, readable in a saved
notebook on GitHub); ``.plot()`` draws them with matplotlib on its own Agg canvas.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from nbtrain.display.html import CELL, FONT, HEAD
from nbtrain.format import fmt_bytes, fmt_time

TRAINED = "#c8f0c8"
MASKED = "#e6e6e6"
LINE = "#C00000"
BAR = "#0072B2"


class Report:
    """A dry-run report as the user sees it.

    ``report.numbers`` is the engine's :class:`~nbtrain.engine.dryrun.DryRunReport`; its fields
    read as attributes too: ``report.data`` (lengths, labels, duplicates), ``report.memory``,
    ``report.time``, ``report.total_steps``.
    """

    def __init__(self, numbers: Any) -> None:
        self.numbers = numbers

    def __getattr__(self, name: str) -> Any:
        if name == "numbers":
            raise AttributeError(name)
        return getattr(self.numbers, name)

    def to_dict(self) -> dict[str, Any]:
        return self.numbers.to_dict()

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def text(self) -> str:
        return report_text(self.numbers)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        return report_html(self.numbers)

    def plot(self) -> Any:
        """The token-length histograms (one panel per split) with max_length, as a Figure."""
        return lengths_figure(self.numbers)


# -- text -------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _change(new: float, old: float) -> str:
    if not old:
        return ""
    return f"{100 * (new - old) / old:+.0f}%"


def report_text(r: Any) -> str:
    """The whole report as plain text, sections headed ``== Title ==``."""
    parts = [("nbtrain dry run - nothing was trained", [])]
    if r.error:
        parts.append(("The run would stop", [r.error]))
    parts.append(("Data and steps", _steps_lines(r)))
    d = r.data
    if d is not None and d.lengths:
        parts.append(("Token lengths", _length_lines(r)))
    if d is not None and d.labels is not None:
        parts.append(("Labels", _label_lines(d.labels)))
    if d is not None and (d.duplicates is not None or d.junk):
        parts.append(("Duplicates and junk", _junk_lines(d)))
    if d is not None and (d.preview is not None or d.dropped):
        parts.append(("What is trained (label mask)", _mask_lines(d)))
    if r.memory is not None or r.memory_error:
        parts.append(("Parameters and memory", memory_lines(r.memory, r.memory_error)))
    if r.time is not None or r.time_error:
        parts.append(("Time", time_lines(r.time, r.time_error)))
    if r.examples:
        parts.append(("Tokenized examples", _example_lines(r)))
    parts.append(("Resolved config", r.config_yaml.rstrip().splitlines()))
    return "\n\n".join("\n".join([f"== {t} =="] + lines) for t, lines in parts)


def _steps_lines(r: Any) -> list[str]:
    lines = [
        f"task            {r.task}",
        f"train rows      {r.train_rows}",
        f"eval rows       {r.eval_rows}",
        f"labels          {', '.join(map(str, r.labels)) if r.labels else '-'}",
        f"max_length      {r.max_length}",
        f"batch size      {r.batch_size} x {r.gradient_accumulation_steps} accumulation",
        f"steps/epoch     {r.steps_per_epoch}",
        f"total steps     {r.total_steps}",
    ]
    return lines + [f"note: {n}" for n in r.notices]


def _length_lines(r: Any) -> list[str]:
    d = r.data
    head = f"{'split':<6} {'rows':>7} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}  truncated"
    lines = [head]
    for s in d.lengths:
        trunc = (
            f"{s.truncated_rows} rows, {_pct(s.lost_share)} of tokens lost"
            if s.truncated_rows
            else "none"
        )
        lines.append(
            f"{s.split:<6} {s.count:>7,} {s.p50:>6} {s.p90:>6} {s.p99:>6} {s.max:>6}  {trunc}"
        )
    if d.packed:
        lines.append("Rows are packed into blocks of max_length: nothing is truncated.")
    train = next((s for s in d.lengths if s.split == "train"), None)
    if train is not None:
        lines.append("Histogram of train lengths (tokens before truncation, | = max_length):")
        lines += text_histogram(train.histogram, train.max_length)
    a = d.advice
    if a is not None:
        lines.append(_advice_line(r, a))
    return lines


def _advice_line(r: Any, a: Any) -> str:
    if a.change == "keep":
        if a.longest_batch_now < a.current:
            return (
                f"max_length {a.current} truncates nothing (longest row "
                f"{a.longest_batch_now} tokens; batches are padded to their longest row): keep it."
            )
        return f"max_length {a.current} covers 99% of training rows: keep it."
    more = (
        f"; peak memory {fmt_bytes(r.memory.total_bytes)} -> {fmt_bytes(r.suggested_memory_bytes)}"
        if r.memory is not None and r.suggested_memory_bytes
        else ""
    )
    verb = "cuts" if a.change == "lower" else "covers"
    return (
        f"Suggested max_length: {a.suggested} (covers 99% of training rows; {a.rows_truncated} "
        f"would be truncated). It {verb} tokens per epoch {a.tokens_now:,} -> "
        f"{a.tokens_suggested:,} ({_change(a.tokens_suggested, a.tokens_now)}, about that "
        f"much training time) and the longest batch {a.longest_batch_now} -> "
        f"{a.longest_batch_suggested} tokens per row{more}."
    )


def text_histogram(h: Any, max_length: int, width: int = 40, rows: int = 12) -> list[str]:
    """Bars of ``#`` per bin (merged down to ``rows`` lines), a ``|`` line at max_length."""
    edges, counts = list(h.edges), list(h.counts)
    while len(counts) > 1 and counts[-1] == 0 and edges[-2] > max_length:
        counts.pop()
        edges.pop()
    step = max(1, -(-len(counts) // rows))
    merged = [
        (edges[i], edges[min(i + step, len(counts))], sum(counts[i : i + step]))
        for i in range(0, len(counts), step)
    ]
    top = max((c for *_, c in merged), default=0) or 1
    out, drawn = [], False
    for lo, hi, c in merged:
        if not drawn and lo >= max_length:
            out.append(f"{'':>13} |---- max_length {max_length}")
            drawn = True
        bar = "#" * (round(width * c / top) if c else 0)
        out.append(f"  {lo:>5}-{hi - 1:<5} {bar} {c}")
        if not drawn and lo < max_length < hi - 1:
            out.append(f"{'':>13} |---- max_length {max_length} (inside the bin above)")
            drawn = True
    if not drawn:
        beyond = " (beyond the longest row)" if max_length >= edges[-1] else ""
        out.append(f"{'':>13} |---- max_length {max_length}{beyond}")
    return out


def _label_lines(lab: Any) -> list[str]:
    splits = list(lab.counts)
    lines = [f"{'class':<16}" + "".join(f"{s:>10}" for s in splits)]
    names = list(dict.fromkeys([*lab.names, *(k for c in lab.counts.values() for k in c)]))
    for n in names:
        lines.append(
            f"{str(n)[:16]:<16}" + "".join(f"{lab.counts[s].get(n, 0):>10,}" for s in splits)
        )
    lines.append(f"imbalance (largest / smallest training class): {lab.imbalance:g}")
    if lab.imbalanced:
        w = ", ".join(f"{x:.4g}" for x in lab.weights)
        lines.append(
            f"The classes are imbalanced: set class_weights: auto (weights {w}, one per class "
            "in the order above) so each class counts the same in the loss."
        )
    if lab.unseen_in_train:
        seen = ", ".join(f"{k!r} ({v} rows)" for k, v in lab.unseen_in_train.items())
        lines.append(f"Eval labels the training data does not have: {seen}.")
    for split, rows in lab.missing.items():
        lines.append(f"{split}: {len(rows)} rows without a label (rows {_rows(rows)}).")
    return lines


def _rows(rows: Any, n: int = 10) -> str:
    rows = list(rows)
    return ", ".join(map(str, rows[:n])) + (", ..." if len(rows) > n else "")


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _junk_lines(d: Any) -> list[str]:
    lines = []
    dup = d.duplicates
    if dup is not None:
        lines.append(f"exact duplicates within train: {dup.within_train} rows")
        lines += [
            f"  {_short(t)!r}: rows {_rows(rows)}" for t, rows in dup.within_train_examples[:5]
        ]
        lines.append(f"eval rows whose text is also in train: {dup.train_eval}")
        lines += [
            f"  {_short(t)!r}: train row {i}, eval row {j}"
            for t, i, j in dup.train_eval_examples[:5]
        ]
    for j in d.junk:
        if j.empty:
            lines.append(
                f"{j.split}: {len(j.empty)} empty or whitespace-only rows ({_rows(j.empty)})"
            )
        if j.special_only:
            lines.append(
                f"{j.split}: {len(j.special_only)} rows of special tokens only "
                f"({_rows(j.special_only)})"
            )
    if not any(j.empty or j.special_only for j in d.junk):
        lines.append("no empty rows, no rows of special tokens only")
    return lines


def _mask_lines(d: Any) -> list[str]:
    lines = []
    p = d.preview
    if p is not None:
        lines.append("First training example as rendered:")
        lines += ["  " + line for line in p.text.splitlines()[:12]]
        lines.append(
            f"Tokens: {p.n_tokens}, trained {p.n_trained} (in [brackets]; the rest is masked, -100):"
        )
        shown = " ".join(f"[{t}]" if on else t for t, on in zip(p.tokens, p.trained))
        lines.append("  " + shown + (" ..." if p.n_tokens > len(p.tokens) else ""))
    for split, rows in d.dropped.items():
        lines.append(
            f"{split}: {len(rows)} rows have no token left to train on after truncation (all "
            f"labels -100) and are dropped: rows {_rows(rows)}."
        )
    if p is not None and not d.dropped:
        lines.append("Every row keeps at least one trained token after truncation.")
    return lines


def memory_lines(est: Any, error: str | None = None) -> list[str]:
    """The memory estimate as text lines (parts, notes, ways to use less)."""
    if est is None:
        return [f"(no estimate: {error})"]
    fits = {True: " - fits", False: " - DOES NOT FIT", None: ""}[est.fits]
    where = (
        f" of {fmt_bytes(est.device_bytes)} on {est.device}"
        if est.device_bytes
        else f" on {est.device}"
    )
    lines = [
        f"Parameters: {est.params_total:,} total, {est.params_trainable:,} trainable "
        f"({100 * est.trainable_share:.2f}%)",
        f"Peak memory estimate ({est.precision}): {fmt_bytes(est.total_bytes)}{where}{fits}",
    ]
    lines += [f"  {name:<52} {fmt_bytes(n):>10}" for name, n in est.rows()]
    lines += [f"  note: {n}" for n in est.notes]
    if est.options:
        lines.append(
            "Changes that make it fit (cheapest first):"
            if est.fits is False
            else "Ways to use less memory:"
        )
        lines += [
            f"  {o.change:<52} {fmt_bytes(o.total_bytes):>10}" + ("" if o.fits else "  (no)")
            for o in est.options
        ]
    return lines


def time_lines(t: Any, error: str | None = None) -> list[str]:
    if t is None:
        return [f"(no time estimate: {error})"]
    measured = ", ".join(f"{m.rows} x {m.tokens} tokens {m.seconds:.3f} s" for m in t.measured)
    lines = [
        f"Estimated training time: {fmt_time(t.total_s)} ({t.optimizer_steps:,} steps, "
        f"{t.seconds_per_step:.3f} s each"
        + (f"; {t.evals} evaluations, {fmt_time(t.eval_s)} in all" if t.evals else "")
        + ")",
        f"  timed real steps: forward+backward {measured}; optimizer step {t.optimizer_s:.3f} s",
        f"  batches padded to {t.batch_p50_tokens} tokens (median) .. {t.batch_max_tokens} "
        "(longest); checkpoint saves and model loading not counted",
        f"  measured now on this machine ({t.timing_s:.0f} s to measure): a busier machine is slower",
    ]
    if t.load and t.cpus and t.load > t.cpus and t.threads > 1:
        lines.append(
            f"  the machine is oversubscribed (load {t.load:.0f} on {t.cpus} cores) and torch "
            f"uses {t.threads} threads: torch.set_num_threads(1) is often several times faster "
            "here (docs/performance.md)"
        )
    if t.cpu_s:
        lines.append(
            f"  CPU time of the same work: {fmt_time(t.cpu_s)} (load does not change it; the wall "
            "time above assumes the machine stays as busy as it is now)"
        )
    return lines


def _example_lines(r: Any) -> list[str]:
    out = []
    for i, ex in enumerate(r.examples, 1):
        out.append(f"[{i}] label={ex['label']}  ({ex['n_tokens']} tokens)")
        out.append("    " + " ".join(ex["tokens"]))
    return out or ["(no rows)"]


# -- HTML -------------------------------------------------------------------------------------


def _section(title: str, body: str) -> str:
    return f"<h4 style='margin:10px 0 4px'>{escape(title)}</h4>{body}"


def _pre(lines: list[str]) -> str:
    return f"<pre style='margin:0;font-size:85%'>{escape(chr(10).join(lines))}</pre>"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th style='{HEAD}'>{escape(str(c))}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td style='{CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        "<table style='border-collapse:collapse;font-size:90%;font-variant-numeric:tabular-nums'>"
        f"<thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"
    )


def report_html(r: Any) -> str:
    d = r.data
    blocks = [
        "<div style='font-weight:600;font-size:110%'>nbtrain dry run "
        "<span style='opacity:.6;font-weight:400'>— nothing was trained</span></div>"
    ]
    if r.error:
        blocks.append(
            "<div style='border-left:4px solid #C00000;padding:4px 8px;margin:4px 0;"
            f"background:rgba(192,0,0,.06)'><b>The run would stop:</b> {escape(r.error)}</div>"
        )
    blocks.append(_section("Data and steps", _pre(_steps_lines(r))))
    if d is not None and d.lengths:
        blocks.append(_section("Token lengths", _lengths_html(r)))
    if d is not None and d.labels is not None:
        blocks.append(_section("Labels", _labels_html(d.labels)))
    if d is not None and (d.duplicates is not None or d.junk):
        blocks.append(_section("Duplicates and junk", _pre(_junk_lines(d))))
    if d is not None and (d.preview is not None or d.dropped):
        blocks.append(_section("What is trained (label mask)", _mask_html(d)))
    if r.memory is not None or r.memory_error:
        blocks.append(_section("Parameters and memory", memory_html(r.memory, r.memory_error)))
    if r.time is not None or r.time_error:
        blocks.append(_section("Time", _pre(time_lines(r.time, r.time_error))))
    if r.examples:
        blocks.append(_section("Tokenized examples", _pre(_example_lines(r))))
    blocks.append(
        "<details><summary>Resolved config</summary>"
        + _pre(r.config_yaml.splitlines())
        + "</details>"
    )
    return (
        f"<div class='nbtrain-report' style='{FONT}line-height:1.4'>" + "".join(blocks) + "</div>"
    )


def _lengths_html(r: Any) -> str:
    d = r.data
    rows = [
        [
            escape(s.split),
            f"{s.count:,}",
            s.p50,
            s.p90,
            s.p99,
            s.max,
            f"{s.truncated_rows:,}"
            + (f" ({_pct(s.lost_share)} tokens lost)" if s.truncated_rows else ""),
        ]
        for s in d.lengths
    ]
    table = _table(["split", "rows", "p50", "p90", "p99", "max", "truncated"], rows)
    svgs = "".join(
        svg_histogram(s.histogram, s.max_length, f"{s.split} lengths") for s in d.lengths
    )
    notes = []
    if d.packed:
        notes.append("Rows are packed into blocks of max_length: nothing is truncated.")
    if d.advice is not None:
        notes.append(_advice_line(r, d.advice))
    return (
        table
        + f"<div style='display:flex;gap:16px;flex-wrap:wrap'>{svgs}</div>"
        + "".join(f"<div>{escape(n)}</div>" for n in notes)
    )


def svg_histogram(h: Any, max_length: int, title: str, w: int = 340, hgt: int = 120) -> str:
    """Bars of the histogram with a red dashed line at ``max_length``, as inline SVG."""
    edges, counts = list(h.edges), list(h.counts)
    lo, hi = edges[0], max(edges[-1], max_length + 1)
    beyond = max_length > 2 * edges[-1]
    if beyond:  # far right of every row: draw the line at the right edge, labelled with an arrow
        hi = edges[-1]
    top = max(counts) or 1
    sx = (w - 40) / (hi - lo)
    bars = "".join(
        f"<rect x='{30 + (edges[i] - lo) * sx:.1f}' y='{10 + (hgt - 30) * (1 - c / top):.1f}' "
        f"width='{max(1.0, (edges[i + 1] - edges[i]) * sx - 1):.1f}' "
        f"height='{(hgt - 30) * c / top:.1f}' fill='{BAR}'><title>{edges[i]}-{edges[i + 1] - 1}"
        f" tokens: {c} rows</title></rect>"
        for i, c in enumerate(counts)
    )
    x = 30 + (min(max_length, hi) - lo) * sx
    anchor = " text-anchor='end'" if beyond else ""
    return (
        f"<svg width='{w}' height='{hgt + 8}' style='background:#fff' role='img' "
        f"aria-label='{escape(title)}'><text x='30' y='9' font-size='10' fill='#222'>"
        f"{escape(title)} (rows per token count)</text>{bars}"
        f"<line x1='{x:.1f}' x2='{x:.1f}' y1='10' y2='{hgt - 20}' stroke='{LINE}' "
        "stroke-dasharray='4 3' stroke-width='1.5'/>"
        f"<text x='{x - 3 if beyond else min(x + 3, w - 90):.1f}' y='22' font-size='10' "
        f"fill='{LINE}'{anchor}>max_length {max_length}{' →' if beyond else ''}</text>"
        f"<text x='30' y='{hgt - 6}' font-size='10' fill='#555'>{lo}</text>"
        f"<text x='{w - 12}' y='{hgt - 6}' font-size='10' fill='#555' text-anchor='end'>{hi}</text>"
        f"<text x='26' y='18' font-size='9' fill='#555' text-anchor='end'>{top}</text></svg>"
    )


def _labels_html(lab: Any) -> str:
    splits = list(lab.counts)
    names = list(dict.fromkeys([*lab.names, *(k for c in lab.counts.values() for k in c)]))
    rows = [[escape(str(n))] + [f"{lab.counts[s].get(n, 0):,}" for s in splits] for n in names]
    extra = [line for line in _label_lines(lab)[len(names) + 1 :]]
    return _table(["class", *splits], rows) + "".join(f"<div>{escape(x)}</div>" for x in extra)


def _mask_html(d: Any) -> str:
    out = []
    p = d.preview
    if p is not None:
        out.append(
            "<div style='opacity:.8'>First training example as rendered (template applied):</div>"
            f"<pre style='margin:2px 0;font-size:85%;white-space:pre-wrap'>{escape(p.text)}</pre>"
        )
        spans = "".join(
            f"<span title='{'trained' if on else 'masked (-100)'}' style='background:"
            f"{TRAINED if on else MASKED};padding:0 2px;margin:1px;border-radius:2px;"
            f"display:inline-block'>{escape(t)}</span>"
            for t, on in zip(p.tokens, p.trained)
        )
        out.append(
            f"<div style='font-family:monospace;font-size:85%;line-height:1.8'>{spans}"
            + (" …" if p.n_tokens > len(p.tokens) else "")
            + "</div>"
            f"<div><span style='background:{TRAINED};padding:0 4px'>trained</span> "
            f"{p.n_trained} of {p.n_tokens} tokens · <span style='background:{MASKED};"
            "padding:0 4px'>masked (-100)</span></div>"
        )
    out += [
        f"<div>{escape(x)}</div>"
        for x in _mask_lines(d)
        if x.startswith(("train:", "eval:", "Every"))
    ]
    return "".join(out)


def memory_html(est: Any, error: str | None = None) -> str:
    """The memory estimate as an HTML block (parts table, ways to use less)."""
    if est is None:
        return f"<div>(no estimate: {escape(str(error))})</div>"
    verdict = {True: "fits", False: "<b style='color:#b00'>does not fit</b>", None: ""}[est.fits]
    rows = "".join(
        f"<tr><td>{escape(n)}</td><td style='text-align:right'>{fmt_bytes(b)}</td></tr>"
        for n, b in est.rows()
    )
    opts = "".join(
        f"<tr><td><code>{escape(o.change)}</code></td>"
        f"<td style='text-align:right'>{fmt_bytes(o.total_bytes)}</td>"
        f"<td>{'fits' if o.fits else ''}</td></tr>"
        for o in est.options
    )
    device = f" of {fmt_bytes(est.device_bytes)}" if est.device_bytes else ""
    return (
        f"<div><b>Memory</b>: {fmt_bytes(est.total_bytes)}{device} on "
        f"{escape(est.device)} ({escape(est.precision)}) {verdict}<br>"
        f"<small>{est.params_total:,} parameters, {est.params_trainable:,} trainable "
        f"({100 * est.trainable_share:.2f}%)</small><table>{rows}</table>"
        + (f"<b>Ways to use less memory</b><table>{opts}</table>" if opts else "")
        + "".join(f"<br><small>{escape(n)}</small>" for n in est.notes)
        + "</div>"
    )


# -- plot -------------------------------------------------------------------------------------


def lengths_figure(r: Any) -> Any:
    """A matplotlib Figure (own Agg canvas, no pyplot) of each split's length histogram."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = list(r.data.lengths) if r.data is not None else []
    fig = Figure(figsize=(5 * max(1, len(stats)), 3.2), dpi=110, facecolor="white")
    FigureCanvasAgg(fig)
    for k, s in enumerate(stats or [None]):
        ax = fig.add_subplot(1, max(1, len(stats)), k + 1)
        if s is None:
            ax.set_title("no token lengths")
            continue
        edges, counts = list(s.histogram.edges), list(s.histogram.counts)
        ax.bar(
            edges[:-1],
            counts,
            width=[edges[i + 1] - edges[i] for i in range(len(counts))],
            align="edge",
            color=BAR,
        )
        ax.axvline(s.max_length, color=LINE, linestyle="--", label=f"max_length {s.max_length}")
        ax.set_title(f"{s.split}: p50 {s.p50}, p99 {s.p99}, max {s.max}", fontsize=10)
        ax.set_xlabel("tokens per row (before truncation)")
        ax.set_ylabel("rows")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- the run card's data section --------------------------------------------------------------


def data_card_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Short (key, value) rows about a trained run's data, from ``env.json["data"]``."""
    rows = []
    for s in data.get("lengths") or []:
        rows.append(
            (
                f"{s['split']} tokens",
                f"{s['count']:,} rows · p50 {s['p50']} · p99 {s['p99']} · max {s['max']} · "
                f"{s['truncated_rows']} truncated at {s['max_length']}",
            )
        )
    labels = data.get("labels")
    if labels:
        train = labels["counts"].get("train", {})
        rows.append(("train classes", ", ".join(f"{k} {v:,}" for k, v in train.items())))
    dup = data.get("duplicates")
    if dup:
        rows.append(
            (
                "duplicates",
                f"{dup['within_train']} in train · {dup['train_eval']} eval rows in train",
            )
        )
    for split, dropped in (data.get("dropped") or {}).items():
        rows.append((f"{split} rows dropped", f"{len(dropped)} (no trained token left)"))
    return rows


__all__ = ["Report", "data_card_rows", "memory_html", "memory_lines", "report_text"]
