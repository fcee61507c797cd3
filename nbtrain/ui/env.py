"""The notebook the widget UI runs in (whether widgets can show: ``display.frontend``)."""

from __future__ import annotations


def user_namespace() -> dict | None:
    """The notebook's variables (IPython's ``user_ns``), or None outside IPython."""
    import sys

    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    return getattr(shell, "user_ns", None)
