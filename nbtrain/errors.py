"""The exceptions users see. One short paragraph each, no traceback wall."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config, data or usage problem the user can fix.

    Its message is one short paragraph that names the field, the value and what would work.
    Every error nbtrain raises about user input is a ``ConfigError`` (or a subclass), so one
    ``except nbtrain.ConfigError`` catches them all.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DataError(ConfigError):
    """The data cannot be used as configured (missing file or column, one class, ...)."""


class RunInterrupted(KeyboardInterrupt):
    """Training was interrupted; a resumable checkpoint was written where possible.

    A subclass of ``KeyboardInterrupt`` so scripts that stop on Ctrl-C keep stopping.
    """

    def __init__(self, message: str, run_dir: str | None = None, checkpoint: str | None = None):
        super().__init__(message)
        self.run_dir = run_dir
        self.checkpoint = checkpoint


class TrainingFailed(RuntimeError):
    """Training stopped on an error nbtrain recognised (NaN loss, out of memory, disk full)."""

    def __init__(self, message: str, *, kind: str = "error", run_dir: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.run_dir = run_dir


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidates, or an empty string."""
    close = difflib.get_close_matches(str(word), list(dict.fromkeys(candidates)), n=n, cutoff=0.6)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean '{close[0]}'?"
    return " Did you mean " + ", ".join(f"'{c}'" for c in close[:-1]) + f" or '{close[-1]}'?"
