"""Task recipes behind one interface (:class:`Task`); the engine picks one by name or infers it."""

from __future__ import annotations

from typing import Any

from nbtrain.engine.tasks import (
    causal_lm,  # noqa: F401
    classification,  # noqa: F401  (registers itself)
    grpo,  # noqa: F401  (post-training on TRL; trl is imported only when a run builds)
    masked_lm,  # noqa: F401
    preference,  # noqa: F401
    seq2seq,  # noqa: F401
    token_classification,  # noqa: F401
)
from nbtrain.engine.tasks.base import Prepared, Task, register, registry
from nbtrain.errors import ConfigError, did_you_mean

__all__ = ["Prepared", "Task", "get_task", "infer_task", "register", "registry"]


def get_task(name: str, cfg: Any) -> Task:
    tasks = registry()
    if name not in tasks:
        raise ConfigError(
            f"task: {name!r} is not available.{did_you_mean(name, tasks)} Available: "
            f"{', '.join(tasks)}.",
            field="task",
        )
    return tasks[name](cfg)


def infer_task(columns: list[str], cfg: Any, architectures: list[str]) -> str:
    """The task whose ``detect`` scores highest for these columns and model."""
    scores = {name: cls.detect(columns, cfg, architectures) for name, cls in registry().items()}
    best = max(scores, key=scores.get) if scores else None
    if best is None or scores[best] <= 0:
        raise ConfigError(
            f"Cannot infer the task from the columns {', '.join(columns)}: set task: to one of "
            f"{', '.join(registry())}, or data.text / data.label to the right columns.",
            field="task",
        )
    return best
