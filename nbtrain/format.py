"""How nbtrain writes times, sizes and numbers: once, for every renderer, message and CLI line.

Standard library only, so the engine's error messages and the renderers share it.
"""

from __future__ import annotations

import math
from typing import Any


def fmt_time(seconds: float | None, *, unknown: str = "–") -> str:
    """``mm:ss`` or ``h:mm:ss``."""
    if seconds is None or not math.isfinite(seconds):
        return unknown
    s = int(max(0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def fmt_bytes(n: float | None, *, unknown: str = "?") -> str:
    """Binary units with one decimal: ``512 B``, ``1.5 KB``, ``6.1 GB``."""
    if n is None:
        return unknown
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover (the loop returns at GB)


def fmt_num(v: Any) -> str:
    """A metric or count for a table: ints with separators, floats with 4 significant places."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.3g}"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def fmt_short(v: Any) -> str:
    """A number in running text: ``0.8704``, ``3e-05``, ``12``."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_metrics(metrics: dict[str, Any]) -> str:
    """``eval_loss 0.3121, eval_accuracy 0.8704`` without timings."""
    keep = {
        k: v for k, v in metrics.items() if not k.endswith(("runtime", "per_second", "total_flos"))
    }
    return ", ".join(f"{k} {fmt_short(v)}" for k, v in keep.items())


def one_paragraph(e: BaseException) -> str:
    """An exception as users read it: nbtrain's own errors whole, others as one line."""
    from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed

    if isinstance(e, (ConfigError, RunInterrupted, TrainingFailed)):
        return str(e)
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
