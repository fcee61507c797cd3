"""What ``%nbtrain`` shows: runs, one run, its config, versions; each as text and as HTML.

Reads the run store only (``nbtrain.runs``, ``nbtrain.api.load_run``); no IPython needed,
so the same views work in a script or a terminal.
"""

from __future__ import annotations

import os
import sys
from html import escape
from typing import Any

from nbtrain.format import fmt_bytes, fmt_short


class View:
    """Something ``%nbtrain`` shows: the same content as plain text and as HTML."""

    def __init__(self, text: str, html: str | None = None) -> None:
        self.text = text
        self.html = html if html is not None else f"<pre>{escape(text)}</pre>"

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html


def _table(header: list[str], rows: list[list[str]]) -> tuple[str, str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    text = "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]
    )
    head = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{escape(str(c))}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return text, f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _headline_metric(info: Any) -> str:
    if info.best_metric:
        k, v = info.best_metric
        return f"{k}={fmt_short(v)}"
    m = info.metrics
    keys = [k for k in m if not k.endswith(("runtime", "per_second"))]
    ordered = sorted(keys, key=lambda k: (not k.startswith("eval_"), k.endswith("loss")))
    for k in ordered:
        if k.startswith("eval_") or k in ("loss", "train_loss"):
            return f"{k.removeprefix('eval_')}={fmt_short(m[k])}"
    return "-"


def runs_view(runs_dir: str | os.PathLike) -> View:
    """``%nbtrain runs``: name, kind, status, steps, best metric and size of every run; a sweep
    is one row (trials done/total, its best trial's metric), its trials are not listed."""
    from nbtrain.background import running
    from nbtrain.runs import list_runs, list_sweeps

    runs = list_runs(runs_dir)
    sweeps = list_sweeps(runs_dir)
    # This kernel's background runs: their live status, and queued ones before they have a folder.
    live = {h.name: h for h in running()}
    if not runs and not sweeps and not live:
        return View(f"No runs in {os.fspath(runs_dir)}/ yet.")
    dated: list[tuple[float, list[str]]] = []
    for r in runs:
        h = live.pop(r.name, None)
        status = _live_status(h) if h is not None else r.status
        steps = f"{r.steps}/{r.total_steps}" if r.total_steps else str(r.steps)
        row = [r.name, "run", status, steps, _headline_metric(r), fmt_bytes(r.size_bytes)]
        dated.append((r.started or 0, row))
    for sw in sweeps:
        h = live.pop(sw.name, None)
        status = _live_status(h) if h is not None else sw.status
        dated.append((sw.started or 0, _sweep_row(sw, status)))
    dated.sort(key=lambda d: d[0])
    rows = [row for _, row in dated]
    for h in live.values():
        rows.append([h.name, h.kind, _live_status(h), "0", "-", "-"])
    text, html = _table(["name", "kind", "status", "steps", "metric", "size"], rows)
    return View(
        text, f"<div><b>nbtrain runs</b> in <code>{escape(str(runs_dir))}</code>{html}</div>"
    )


def _sweep_row(sw: Any, status: str) -> list[str]:
    trials = f"{sw.trials_done}/{sw.trials_total} trials"
    metric = "-"
    if sw.best_value is not None:
        metric = (
            f"best {sw.metric.removeprefix('eval_')}={fmt_short(sw.best_value)} ({sw.best_run})"
        )
    return [sw.name, "sweep", status, trials, metric, fmt_bytes(sw.size_bytes)]


def _live_status(h: Any) -> str:
    if h.status == "queued":
        return f"queued behind {h.queued_behind}" if h.queued_behind else "queued"
    if h.kind == "sweep" and h.status == "running":
        return f"running trial {h.state.ended_count + 1}/{h.state.total} (background)"
    if h.status == "running" and h.state.total_steps:
        return f"running {100 * h.state.fraction:.0f}% (background)"
    return f"{h.status} (background)"


def show_view(name: str, runs_dir: str | os.PathLike) -> View:
    """``%nbtrain show NAME``: the run's card when it has one, else a summary."""
    from nbtrain.api import load_run
    from nbtrain.runs import list_checkpoints, run_status

    result = load_run(name, runs_dir=runs_dir)
    info = run_status(result.output_dir)
    ckpts = list_checkpoints(result.output_dir)
    lines = [
        f"run {info.name}: {info.status}",
        f"  folder      {result.output_dir}",
        f"  steps       {info.steps}" + (f"/{info.total_steps}" if info.total_steps else ""),
    ]
    lines += [f"  {k:<11} {fmt_short(v)}" for k, v in info.metrics.items()]
    if ckpts:
        flags = [
            c.name + (" (best)" if c.is_best else "") + (" (newest)" if c.is_newest else "")
            for c in ckpts
        ]
        lines.append(f"  checkpoints {', '.join(flags)}")
    lines.append(f"  final model {'yes' if result.final_dir.is_dir() else 'no'}")
    text = "\n".join(lines)
    card = result.output_dir / "card.html"
    html = card.read_text(encoding="utf-8") if card.is_file() else None
    if html is None:
        rows = [[k, fmt_short(v)] for k, v in info.metrics.items()]
        _, table = _table(["metric", "value"], rows) if rows else ("", "")
        html = (
            f"<div><b>nbtrain run</b> <code>{escape(info.name)}</code> — {escape(info.status)}, "
            f"step {info.steps}{f'/{info.total_steps}' if info.total_steps else ''}"
            f"<br><small>{escape(str(result.output_dir))}</small>{table}"
            f"<small>{len(ckpts)} checkpoint(s); final model: "
            f"{'yes' if result.final_dir.is_dir() else 'no'}</small></div>"
        )
    return View(text, html)


def config_view(name: str, runs_dir: str | os.PathLike) -> View:
    """``%nbtrain config NAME``: the run's resolved ``config.yaml``."""
    from nbtrain.api import load_run

    result = load_run(name, runs_dir=runs_dir)
    text = (result.output_dir / "config.yaml").read_text(encoding="utf-8")
    return View(text, f"<pre>{escape(text)}</pre>")


def version_view() -> View:
    """``%nbtrain version``: nbtrain, transformers, torch and the device training would use."""
    from importlib import metadata

    from nbtrain.version import __version__

    rows = [["nbtrain", __version__]]
    for pkg in ("transformers", "torch", "datasets", "peft", "accelerate"):
        try:
            rows.append([pkg, metadata.version(pkg)])
        except metadata.PackageNotFoundError:
            rows.append([pkg, "not installed"])
    rows.append(["python", sys.version.split()[0]])
    try:
        from nbtrain.engine.model import device_info

        rows.append(["device", device_info().label])
    except ImportError as e:  # torch missing: say so rather than fail
        rows.append(["device", f"unknown ({e})"])
    text, html = _table(["package", "version"], rows)
    return View(text, html)


__all__ = ["View", "config_view", "runs_view", "show_view", "version_view"]
