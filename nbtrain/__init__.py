"""nbtrain: fine-tune transformer models from a notebook cell.

``import nbtrain`` is instant: torch, transformers, datasets, matplotlib and ipywidgets load only
when a run starts. Heavy names and the sub-modules (``nbtrain.events``, ``nbtrain.display``, ...)
resolve lazily through the module ``__getattr__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbtrain.errors import ConfigError, DataError, RunInterrupted, TrainingFailed
from nbtrain.version import __version__

# name -> (module that defines it, attribute). Always the defining module, never a package that
# re-exports it: importing nbtrain.ui.form binds the *module* as nbtrain.ui.form, so resolving
# ``form`` through nbtrain.ui would hand out the module once %finetune_form has run.
_LAZY: dict[str, tuple[str, str]] = {
    "finetune": ("nbtrain.api", "finetune"),
    "load_run": ("nbtrain.api", "load_run"),
    "RunResult": ("nbtrain.api", "RunResult"),
    "Config": ("nbtrain.config", "Config"),
    "load_config": ("nbtrain.config", "load_config"),
    "config_help": ("nbtrain.config", "config_help"),
    "form": ("nbtrain.ui.form", "form"),
    "browse": ("nbtrain.ui.browser", "browse"),
    "demo_data": ("nbtrain.data", "demo_data"),
    "estimate_memory": ("nbtrain.engine.estimate", "estimate_memory"),
    "attach": ("nbtrain.api", "attach"),
    "compare": ("nbtrain.comparison", "compare"),
    "Comparison": ("nbtrain.comparison", "Comparison"),
    "RunHandle": ("nbtrain.background", "RunHandle"),
    "inspect": ("nbtrain.preflight", "inspect"),
    "arena": ("nbtrain.api", "arena"),
    "load_sweep": ("nbtrain.api", "load_sweep"),
    "lr_find": ("nbtrain.lr_finder", "lr_find"),
    "SweepResult": ("nbtrain.sweep", "SweepResult"),
}

# Sub-modules reachable as attributes after a plain ``import nbtrain`` (``nbtrain.events.read_events``,
# ``nbtrain.display.set_default``, ``nbtrain.runs.list_runs``), imported on first use.
_SUBMODULES = frozenset(
    {
        "api",
        "cli",
        "config",
        "data",
        "demo",
        "display",
        "engine",
        "events",
        "export",
        "format",
        "magics",
        "runs",
        "runviews",
        "ui",
    }
)

__all__ = [
    "Comparison",
    "Config",
    "ConfigError",
    "DataError",
    "RunHandle",
    "RunInterrupted",
    "RunResult",
    "SweepResult",
    "TrainingFailed",
    "__version__",
    "arena",
    "attach",
    "browse",
    "compare",
    "config_help",
    "demo_data",
    "estimate_memory",
    "finetune",
    "form",
    "inspect",
    "load_config",
    "load_ipython_extension",
    "load_run",
    "load_sweep",
    "lr_find",
]

if TYPE_CHECKING:
    from nbtrain.api import RunResult, arena, finetune, load_run, load_sweep
    from nbtrain.config import Config, config_help, load_config
    from nbtrain.data import demo_data
    from nbtrain.engine.estimate import estimate_memory
    from nbtrain.lr_finder import lr_find
    from nbtrain.preflight import inspect
    from nbtrain.sweep import SweepResult
    from nbtrain.ui.browser import browse
    from nbtrain.ui.form import form


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"nbtrain.{name}")  # also binds it as nbtrain.<name>
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'nbtrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbtrain``: register the magics (imports nothing heavy)."""
    from nbtrain.magics import register
    from nbtrain.ui.magics import register_ui_magics

    register(ipython)
    register_ui_magics(ipython)  # %finetune_form
