"""``nbtrain.inspect(config)``: the data-and-run report before training, as an object.

The same report ``%%finetune NAME --dry-run`` and ``nbtrain run CONFIG --dry-run`` show:
token lengths and truncation, labels, duplicates and junk, the label mask of language-model
data, peak memory from the real batches and the run's time from a few timed steps.
"""

from __future__ import annotations

from typing import Any

from nbtrain.display.report import Report


def inspect(config: Any, *, timing: bool = True, **overrides: Any) -> Report:
    """Check ``config`` and its data and report what a run would do; trains nothing.

    Args:
        config: a YAML path, a dict or a :class:`~nbtrain.config.Config`.
        timing: time a few real training steps for the time estimate (loads the weights; the
            model object in a config is copied, never trained).
        **overrides: config keys to change, as for :func:`nbtrain.finetune`.

    Returns:
        A :class:`~nbtrain.display.report.Report`: the numbers as attributes
        (``report.data`` lengths/labels/duplicates, ``report.memory``, ``report.time``,
        ``report.total_steps``), an HTML repr in notebooks, ``text()``, ``plot()``, ``to_json()``.

    Raises:
        ConfigError: what a real run raises before training.
    """
    from nbtrain.config import Config, load_config
    from nbtrain.engine.dryrun import dry_run

    cfg = (
        config if isinstance(config, Config) and not overrides else load_config(config, **overrides)
    )
    return Report(dry_run(cfg, timing=timing))


__all__ = ["inspect"]
