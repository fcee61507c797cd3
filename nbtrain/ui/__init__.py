"""Widget UI: the hyperparameter form and the checkpoint browser (ipywidgets loads on use).

``form`` and ``browse`` resolve lazily so ``%load_ext nbtrain`` (which registers
``%finetune_form`` through :func:`register_ui_magics`) stays instant.
"""

from __future__ import annotations

from typing import Any

__all__ = ["browse", "form", "register_ui_magics"]

_LAZY = {
    "browse": "nbtrain.ui.browser",
    "form": "nbtrain.ui.form",
    "register_ui_magics": "nbtrain.ui.magics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbtrain.ui' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
