"""The run card: a static, self-contained summary of a run, written when it ends.

``runs/<name>/card.html`` (PNG embedded as base64: opens anywhere, mails as one file) and
``runs/<name>/card.png``. Built from the run's events only, so the live view, the engine (without
a notebook), the CLI and a reopened notebook all produce the same card.
"""

from __future__ import annotations

import os
import time
from html import escape
from pathlib import Path
from typing import Any

from nbtrain.display import html as H
from nbtrain.display.state import RunState, fmt_num, fmt_time, state_from_events
from nbtrain.events import Event, read_events

# Config keys worth a glance on the card, in this order (others are in config.yaml).
_CONFIG_KEYS = (
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "weight_decay",
    "precision",
    "lora",
    "seed",
)


def render_card(state: RunState) -> tuple[str, bytes | None]:
    """The card's HTML (image embedded) and PNG bytes; the PNG is None if plotting failed."""
    png, problem = None, ""
    if state.started:
        try:
            from nbtrain.display.plots import curves_png

            png = curves_png(state, card=True)
        except Exception as e:  # the card without curves beats no card
            problem = f"Curves unavailable ({type(e).__name__}: {e})."
    return card_html(state, png, problem), png


def card_html(state: RunState, png: bytes | None, problem: str = "") -> str:
    end = state.end
    summary: list[tuple[str, str]] = []
    if state.started:
        summary.append(("steps", f"{state.step:,} / {state.total_steps:,}"))
        summary.append(("epochs", f"{state.epoch:.2f}"))
    if end is not None:
        summary.append(("duration", fmt_time(end.duration_s)))
    sps = state.samples_per_second
    if sps:
        summary.append(("throughput", f"{sps:,.1f} samples/s"))
    if state.tokens_per_second:
        summary.append(("tokens/s", f"{state.tokens_per_second:,.0f}"))
    best = state.best_index
    if best is not None:
        row = state.evals[best]
        metric = state.best_metric
        what = (
            f" ({metric[0]} {fmt_num(row.metrics.get(metric[0], float('nan')))})" if metric else ""
        )
        summary.append(("best evaluation", f"step {row.step:,}{escape(what)}"))
    if end is not None and end.best_checkpoint:
        summary.append(("best checkpoint", _path(end.best_checkpoint)))
    if end is not None and end.final_dir:
        summary.append(("final model", _path(end.final_dir)))
    summary_html = "".join(
        f"<tr><td style='{H.CELL}text-align:left;opacity:.75'>{k}</td>"
        f"<td style='{H.CELL}text-align:left'>{v}</td></tr>"
        for k, v in summary
    )
    blocks = [
        _section(
            "Run", f"<table style='border-collapse:collapse;font-size:90%'>{summary_html}</table>"
        ),
        _section("Final metrics", H.metrics_table(state.final_metrics) or "<i>none</i>"),
    ]
    per_class = _per_class(state.final_details)
    if per_class:
        blocks.append(_section("Per class (final model)", per_class))
    config = _config(state.info.get("config") or {})
    if config:
        blocks.append(_section("Config", config))
    grid = (
        "<div style='display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start'>"
        + "".join(blocks)
        + "</div>"
    )
    body = (
        H.header(state)
        + H.problem(state)
        + grid
        + (f"<div style='opacity:.8'>{escape(problem)}</div>" if problem else "")
        + H.png_img(png, f"curves of run {state.run}")
        + (_section("Evaluations", H.eval_table(state)) if state.evals else "")
        + H.samples_table(state, state.final_details)
        + H.notices(state)
        + "<div style='opacity:.6;font-size:80%;margin-top:6px'>nbtrain run card, written "
        + time.strftime("%Y-%m-%d %H:%M")
        + (f" · <code>{escape(state.run_dir)}</code>" if state.run_dir else "")
        + "</div>"
    )
    return H.wrap(body)


def _path(path: str) -> str:
    """The run-relative tail of a path, the full path on hover."""
    return f"<code title='{escape(path)}'>{escape(H._short(path))}</code>"


def _section(title: str, body: str) -> str:
    return (
        f"<div style='margin:6px 0'><div style='font-weight:600;margin-bottom:2px'>{title}</div>"
        f"{body}</div>"
    )


def _per_class(details: dict[str, Any]) -> str:
    per = details.get("per_class") or {}
    if not per:
        return ""
    cols = ("precision", "recall", "f1", "support")
    head = "".join(f"<th style='{H.HEAD}'>{c}</th>" for c in cols)
    rows = "".join(
        f"<tr><td style='{H.CELL}text-align:left'>{escape(str(name))}</td>"
        + "".join(f"<td style='{H.CELL}'>{fmt_num(scores.get(c, ''))}</td>" for c in cols)
        + "</tr>"
        for name, scores in list(per.items())[:50]
    )
    more = f"<div style='opacity:.7'>… {len(per) - 50} more classes</div>" if len(per) > 50 else ""
    return (
        "<table style='border-collapse:collapse;font-size:90%;font-variant-numeric:tabular-nums'>"
        f"<thead><tr><th style='{H.HEAD}text-align:left'>class</th>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}"
    )


def _config(cfg: dict[str, Any]) -> str:
    items = [(k, cfg[k]) for k in _CONFIG_KEYS if cfg.get(k) not in (None, -1, {}, [])]
    data = cfg.get("data") or {}
    if data.get("train"):
        items.insert(0, ("data.train", data["train"]))
    if data.get("eval"):
        items.insert(1, ("data.eval", data["eval"]))
    if not items:
        return ""
    rows = "".join(
        f"<tr><td style='{H.CELL}text-align:left;opacity:.75'>{escape(k)}</td>"
        f"<td style='{H.CELL}text-align:left'><code>{escape(_short(v))}</code></td></tr>"
        for k, v in items
    )
    return f"<table style='border-collapse:collapse;font-size:90%'>{rows}</table>"


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 60 else "…" + s[-59:]


# -- files -------------------------------------------------------------------------------------


def save_card(run_dir: str | os.PathLike, html: str, png: bytes | None) -> Path:
    """Write ``card.html`` (and ``card.png`` when there is one) atomically; returns the HTML path."""
    folder = Path(run_dir)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>nbtrain run card: {escape(folder.name)}</title></head>"
        "<body style='margin:16px'>" + html + "</body></html>"
    )
    if png:
        _atomic_write(folder / "card.png", png)
    _atomic_write(folder / "card.html", page.encode("utf-8"))
    return folder / "card.html"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def card_is_current(run_dir: str | os.PathLike) -> bool:
    """True when ``card.html`` is newer than the run's last event (nothing to rewrite)."""
    folder = Path(run_dir)
    card, events = folder / "card.html", folder / "events.jsonl"
    try:
        return card.stat().st_mtime_ns >= events.stat().st_mtime_ns
    except OSError:
        return False


def write_card(run_dir: str | os.PathLike) -> Path:
    """Build the card of the run in ``run_dir`` from its ``events.jsonl`` and write it.

    Returns:
        The path of ``card.html`` (``card.png`` lies next to it).
    """
    folder = Path(run_dir)
    if not (folder / "events.jsonl").exists():
        from nbtrain.errors import ConfigError

        raise ConfigError(f"{str(folder)!r} has no events.jsonl: it is not an nbtrain run folder.")
    state = state_from_events(read_events(folder))
    if not state.run_dir:
        state.run_dir = str(folder)
    if not state.run:
        state.run = folder.name
    html, png = render_card(state)
    return save_card(folder, html, png)


class CardWriter:
    """Engine subscriber: writes the card when a run ends, with or without a notebook.

    Imports matplotlib only then, skips the work when a live view already wrote the card, and
    never lets a card problem reach the run.
    """

    def __init__(self) -> None:
        self.run_dir: str | None = None
        self.path: Path | None = None
        self.error: str | None = None

    def __call__(self, ev: Event) -> None:
        if ev.type == "start":
            self.run_dir = ev.run_dir
        elif ev.type == "end" and self.run_dir:
            try:
                if not card_is_current(self.run_dir):
                    self.path = write_card(self.run_dir)
                else:
                    self.path = Path(self.run_dir) / "card.html"
            except Exception as e:  # the run's results matter more than its card
                self.error = f"{type(e).__name__}: {e}"
