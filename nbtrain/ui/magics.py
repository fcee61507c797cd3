"""``%finetune_form [NAME] [--from RUN] [--runs-dir DIR]`` and ``%nbtrain checkpoints [NAME]``.

They parse a line and call :func:`nbtrain.form` / :func:`nbtrain.browse`; nothing else.
"""

from __future__ import annotations

import shlex
from typing import Any

FORM_USAGE = "%finetune_form [NAME] [--from RUN] [--runs-dir DIR]"
CHECKPOINTS_USAGE = "%nbtrain checkpoints [NAME] [--runs-dir DIR]"


def _usage_error(message: str) -> Exception:
    try:
        from IPython.core.error import UsageError
    except ImportError:  # pragma: no cover - IPython is a dependency
        from nbtrain.errors import ConfigError as UsageError
    return UsageError(message)


def _parse(line: str, flags: tuple[str, ...], usage: str) -> tuple[list[str], dict[str, str]]:
    from nbtrain.errors import did_you_mean
    from nbtrain.magics import strip_comment

    try:
        words = shlex.split(strip_comment(line))
    except ValueError as e:
        raise _usage_error(f"{e}. Usage: {usage}") from None
    positional: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            key, _, value = w.partition("=")
            if key not in flags:
                raise _usage_error(
                    f"Unknown option {key}.{did_you_mean(key, flags)} Usage: {usage}"
                )
            if not value:
                if i + 1 >= len(words):
                    raise _usage_error(f"{key} needs a value. Usage: {usage}")
                i += 1
                value = words[i]
            opts[key] = value
        else:
            positional.append(w)
        i += 1
    if len(positional) > 1:
        raise _usage_error(f"Give at most one run name; got {' '.join(positional)}. Usage: {usage}")
    return positional, opts


def finetune_form_line(line: str) -> Any:
    """What ``%finetune_form`` does with its line: the form, filled and named."""
    from nbtrain.ui.form import form, resolve_config

    positional, opts = _parse(line, ("--from", "--runs-dir"), FORM_USAGE)
    runs_dir = opts.get("--runs-dir")
    cfg = resolve_config(opts["--from"], runs_dir) if "--from" in opts else None
    if positional or runs_dir:
        import dataclasses

        from nbtrain.config import Config

        # No validation here: a fresh form has no model yet, and the form shows what is missing.
        cfg = dataclasses.replace(
            cfg if cfg is not None else Config(), **_named(positional, runs_dir)
        )
    return form(cfg)


def _named(positional: list[str], runs_dir: str | None) -> dict[str, str]:
    out = {}
    if positional:
        out["name"] = positional[0]
    if runs_dir:
        out["runs_dir"] = runs_dir
    return out


def checkpoints_line(line: str) -> Any:
    """What ``%nbtrain checkpoints [NAME]`` does with the rest of its line."""
    from nbtrain.ui.browser import browse

    positional, opts = _parse(line, ("--runs-dir",), CHECKPOINTS_USAGE)
    return browse(positional[0] if positional else None, opts.get("--runs-dir", "runs"))


def register_ui_magics(ipython: Any) -> None:
    """Register ``%finetune_form`` (called from ``%load_ext nbtrain``)."""
    from nbtrain.errors import ConfigError

    def finetune_form(line: str) -> Any:
        try:
            return finetune_form_line(line)
        except ConfigError as e:
            raise _usage_error(str(e)) from None

    ipython.register_magic_function(finetune_form, magic_kind="line", magic_name="finetune_form")
