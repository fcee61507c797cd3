"""Where the code runs (JupyterLab, VS Code, Colab, a terminal) and which view that gets.

Detected when a run starts, never frozen at import time, and always overridable: the
``display=`` argument, ``nbtrain.display.set_default(mode)`` (what ``%config``-style settings
call) or the ``NBTRAIN_DISPLAY`` environment variable.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import sys

ENV_VAR = "NBTRAIN_DISPLAY"


class Frontend(enum.Enum):
    """The frontend showing this Python process's output."""

    JUPYTER = "jupyter"  # JupyterLab / Notebook 7 / any other Jupyter kernel client
    VSCODE = "vscode"
    COLAB = "colab"
    IPYTHON_TERMINAL = "ipython-terminal"
    NO_IPYTHON = "none"

    @classmethod
    def list(cls) -> list[str]:
        return [f.value for f in cls]

    @property
    def is_kernel(self) -> bool:
        """Rich output (HTML, PNG) reaches a browser-like frontend."""
        return self in (Frontend.JUPYTER, Frontend.VSCODE, Frontend.COLAB)


def detect_frontend() -> Frontend:
    """The frontend of the running process, from the IPython shell in use (if any)."""
    # IPython is only consulted when something already imported it: a plain script never
    # pays for the import, and without an imported IPython there is no shell to ask.
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    if shell is None:
        return Frontend.NO_IPYTHON
    if "google.colab" in sys.modules:
        return Frontend.COLAB
    kind = type(shell).__name__
    if kind == "ZMQInteractiveShell" or getattr(shell, "kernel", None) is not None:
        if "VSCODE_PID" in os.environ or "VSCODE_CWD" in os.environ:
            return Frontend.VSCODE
        return Frontend.JUPYTER
    return Frontend.IPYTHON_TERMINAL


_default: str | None = None


def set_default(mode: str | None) -> None:
    """Set the view ``display="auto"`` resolves to in this process (None: back to detection).

    Args:
        mode: ``"auto"``, ``"html"``, ``"widgets"``, ``"text"`` or ``"none"``.
    """
    global _default
    if mode is not None:
        _check(mode, "nbtrain.display.set_default")
    _default = None if mode in (None, "auto") else mode


def get_default() -> str:
    """The user's chosen default view: ``set_default`` first, then ``NBTRAIN_DISPLAY``."""
    if _default:
        return _default
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        _check(env, f"The environment variable {ENV_VAR}")
        return env
    return "auto"


def resolve_mode(mode: str = "auto", frontend: Frontend | None = None) -> str:
    """The concrete view (html | widgets | text | none) for ``mode`` in ``frontend``."""
    _check(mode, "display")
    if mode == "auto":
        mode = get_default()
    if mode != "auto":
        return mode
    frontend = frontend or detect_frontend()
    return "html" if frontend.is_kernel else "text"


def _check(mode: str, where: str) -> None:
    from nbtrain.config.schema import DISPLAYS
    from nbtrain.errors import ConfigError, did_you_mean

    if mode not in DISPLAYS:
        raise ConfigError(
            f"{where}: {mode!r} is not a display; expected one of {', '.join(DISPLAYS)}."
            + did_you_mean(mode, DISPLAYS)
        )


WIDGETS_ENV_VAR = "NBTRAIN_WIDGETS"  # "0" turns the widget UI off (e.g. a frontend without widgets)


def widgets_available() -> tuple[bool, str]:
    """``(True, "")`` where the widget UI can be shown, else ``(False, reason)``."""
    if os.environ.get(WIDGETS_ENV_VAR, "").strip().lower() in ("0", "false", "no", "off"):
        return False, f"widgets are turned off ({WIDGETS_ENV_VAR}={os.environ[WIDGETS_ENV_VAR]})"
    if importlib.util.find_spec("ipywidgets") is None:
        return False, "ipywidgets is not installed (pip install ipywidgets)"
    import sys

    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return False, "this Python is not running in a notebook kernel"
    return True, ""


def fallback_message(reason: str) -> str:
    return (
        f"nbtrain: the widget UI cannot be shown here: {reason}. Showing the HTML version "
        "instead; everything it offers is also in the %%finetune magic and nbtrain.runs."
    )
