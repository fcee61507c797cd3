"""``nbtrain.lr_find(config)`` and ``learning_rate: find``: the LR range test for users.

``lr_find`` leaves nothing on disk. ``learning_rate: find`` runs it before training, trains with
the suggestion (written to the run's ``config.yaml``) and keeps the curve beside the run as
``lr_find.json`` / ``lr_find.png``, so re-running the cell resumes with the same learning rate
instead of searching again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from nbtrain.config import Config, load_config
from nbtrain.config.schema import LR_FIND
from nbtrain.events import Event
from nbtrain.format import fmt_short

LR_FILE = "lr_find.json"


class LRFindResult:
    """The LR finder's curve and suggestion.

    Attributes:
        suggestion: the suggested learning rate.
        method: the rule that picked it (valley, steep or minimum).
        lrs, losses, smoothed: the curve, one value per step.
        candidates: what each rule would suggest.
    """

    def __init__(self, curve: Any) -> None:
        self.curve = curve
        self.suggestion: float = curve.suggestion
        self.method: str = curve.method
        self.lrs: list[float] = list(curve.lrs)
        self.losses: list[float] = list(curve.losses)
        self.smoothed: list[float] = list(curve.smoothed)
        self.candidates: dict[str, float] = dict(curve.candidates)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LRFindResult:
        from nbtrain.engine.lr_find import LRCurve

        names = {f.name for f in dataclasses.fields(LRCurve)}
        return cls(LRCurve(**{k: v for k, v in d.items() if k in names}))

    def to_dict(self) -> dict[str, Any]:
        return self.curve.to_dict()

    def plot(self) -> Any:
        """The loss against the learning rate, the suggestion marked, as an image."""
        from nbtrain.display.image import PNGImage
        from nbtrain.display.lr_plot import lr_png

        return PNGImage(lr_png(self.curve))

    def _repr_html_(self) -> str:
        from nbtrain.display.lr_plot import lr_html, lr_png

        return lr_html(self.curve, lr_png(self.curve))

    def __repr__(self) -> str:
        return (
            f"LRFindResult(suggestion={fmt_short(self.suggestion)}, method={self.method!r}, "
            f"steps={len(self.lrs)})"
        )


def lr_find(
    config: Config | dict[str, Any] | str | Path | None = None,
    /,
    *,
    steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    method: str = "valley",
    **overrides: Any,
) -> LRFindResult:
    """Run the LR range test for a config and suggest a learning rate.

    An exponential ramp from ``start_lr`` to ``end_lr`` over ``steps`` training steps, from the
    model's starting weights on a copy of the model (the model you pass is left untouched);
    nothing is written to disk. ``method`` picks the rule read off the smoothed loss: ``valley``
    (default), ``steep`` (steepest descent) or ``minimum`` (a tenth of the loss minimum's LR).

    Args:
        config: a :class:`Config`, a dict, a YAML path or YAML text (as for ``finetune``).
        **overrides: config fields, e.g. ``batch_size=32``.

    Raises:
        ConfigError: bad config or data.
    """
    from nbtrain.engine.lr_find import find_lr

    cfg = load_config(config, **overrides)
    curve = find_lr(cfg, steps=steps, start_lr=start_lr, end_lr=end_lr, method=method)
    return LRFindResult(curve)


def resolve_learning_rate(cfg: Config, *, restart: bool = False) -> tuple[Config, Any]:
    """For ``learning_rate: find``: the config with the suggested learning rate, and a run
    subscriber that keeps the curve beside the run and tells the views. Other configs pass
    through unchanged (with no subscriber).

    A run that already has ``lr_find.json`` (re-running the cell to resume it) keeps its
    learning rate without searching again, unless ``restart``.
    """
    if cfg.learning_rate != LR_FIND:
        return cfg, None
    found: LRFindResult | None = None
    if cfg.name and not restart:
        saved = Path(cfg.runs_dir).expanduser() / cfg.name / LR_FILE
        if saved.is_file():
            found = LRFindResult.from_dict(json.loads(saved.read_text()))
    reused = found is not None
    if found is None:
        found = lr_find(dataclasses.replace(cfg, learning_rate=1e-5))
    resolved = dataclasses.replace(cfg, learning_rate=float(found.suggestion))
    return resolved, _KeepCurve(found, reused)


class _KeepCurve:
    """Writes ``lr_find.json``/``.png`` into the run folder once it exists (the run's start)."""

    def __init__(self, found: LRFindResult, reused: bool) -> None:
        self.found = found
        self.reused = reused
        self.message = (
            f"learning_rate: find → {fmt_short(found.suggestion)} (LR finder, {found.method} "
            f"rule{', kept from the first run' if reused else ''}; curve in lr_find.png)"
        )

    def __call__(self, ev: Event) -> None:
        if ev.type != "start" or not ev.run_dir:
            return
        folder = Path(ev.run_dir)
        if not (folder / LR_FILE).exists():
            (folder / LR_FILE).write_text(json.dumps(self.found.to_dict(), indent=1))
            try:
                from nbtrain.display.lr_plot import lr_png

                (folder / "lr_find.png").write_bytes(lr_png(self.found.curve))
            except Exception:  # the curve's picture is a nicety; the JSON has the numbers
                pass


__all__ = ["LRFindResult", "lr_find", "resolve_learning_rate"]
