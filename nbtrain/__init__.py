"""nbtrain: fine-tune transformer models from a notebook cell.

``import nbtrain`` is instant: torch, transformers, datasets, matplotlib and ipywidgets load only
when a run starts. Heavy names resolve lazily through the module ``__getattr__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbtrain.errors import ConfigError, DataError, RunInterrupted, TrainingFailed
from nbtrain.version import __version__

_LAZY = {
    "finetune": "nbtrain.api",
    "load_run": "nbtrain.api",
    "RunResult": "nbtrain.api",
    "load_sweep": "nbtrain.api",
    "lr_find": "nbtrain.lr_finder",
    "SweepResult": "nbtrain.sweep",
    "Config": "nbtrain.config",
    "load_config": "nbtrain.config",
    "config_help": "nbtrain.config",
    "form": "nbtrain.ui",
    "browse": "nbtrain.ui",
    "demo_data": "nbtrain.data",
}

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "RunInterrupted",
    "RunResult",
    "SweepResult",
    "TrainingFailed",
    "__version__",
    "browse",
    "config_help",
    "finetune",
    "form",
    "load_config",
    "load_ipython_extension",
    "load_run",
    "load_sweep",
    "lr_find",
]

if TYPE_CHECKING:
    from nbtrain.api import RunResult, finetune, load_run, load_sweep
    from nbtrain.config import Config, config_help, load_config
    from nbtrain.lr_finder import lr_find
    from nbtrain.sweep import SweepResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbtrain' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbtrain``: register the magics (imports nothing heavy)."""
    from nbtrain.magics import register
    from nbtrain.ui.magics import register_ui_magics

    register(ipython)
    register_ui_magics(ipython)  # %finetune_form
