"""Can this frontend show widgets? One answer, one message, and the HTML fallbacks use it."""

from __future__ import annotations

import importlib.util
import os

ENV_VAR = "NBTRAIN_WIDGETS"  # "0" turns the widget UI off (e.g. a frontend without widgets)


def widgets_available() -> tuple[bool, str]:
    """``(True, "")`` where the widget UI can be shown, else ``(False, reason)``."""
    if os.environ.get(ENV_VAR, "").strip().lower() in ("0", "false", "no", "off"):
        return False, f"widgets are turned off ({ENV_VAR}={os.environ[ENV_VAR]})"
    if importlib.util.find_spec("ipywidgets") is None:
        return False, "ipywidgets is not installed (pip install ipywidgets)"
    import sys

    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return False, "this Python is not running in a notebook kernel"
    return True, ""


def user_namespace() -> dict | None:
    """The notebook's variables (IPython's ``user_ns``), or None outside IPython."""
    import sys

    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    return getattr(shell, "user_ns", None)


def fallback_message(reason: str) -> str:
    return (
        f"nbtrain: the widget UI cannot be shown here: {reason}. Showing the HTML version "
        "instead; everything it offers is also in the %%finetune magic and nbtrain.runs."
    )
