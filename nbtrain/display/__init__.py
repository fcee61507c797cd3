"""Renderers: they subscribe to run events and show them. They hold no training logic."""

from __future__ import annotations

from typing import Any


def make_renderer(mode: str = "auto") -> Any:
    """A renderer for ``mode`` (auto | html | widgets | text | none), or None for none."""
    from nbtrain.config.schema import DISPLAYS
    from nbtrain.errors import ConfigError, did_you_mean

    if mode not in DISPLAYS:
        raise ConfigError(
            f"display: {mode!r} is not valid; expected one of {', '.join(DISPLAYS)}."
            + did_you_mean(mode, DISPLAYS)
        )
    if mode == "none":
        return None
    from nbtrain.display.text import TextRenderer

    return TextRenderer()
