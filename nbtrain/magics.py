"""``%%finetune`` and ``%nbtrain``: turn cell text into a config and call the public API.

No training logic lives here: a cell becomes ``nbtrain.finetune(config)`` (or ``dry_run``), and
``%nbtrain`` reads the run store. Importing this module loads nothing heavy, so
``%load_ext nbtrain`` is instant; torch and transformers load when a run starts.

``{name}`` in the YAML body refers to a variable of the notebook, looked up by name only (the
cell text is never evaluated): DataFrames and ``datasets`` objects as data, a model or tokenizer
object, a ``compute_metrics`` function, a list of callbacks, a ``Trainer`` subclass, class weights.
"""

from __future__ import annotations

import keyword
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Unicode

from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed, did_you_mean
from nbtrain.runviews import View, config_view, runs_view, show_view, version_view

DISPLAY_CHOICES = ("auto", "html", "widgets", "text", "none")
_REF = re.compile(r"^\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}$")


class RunStopped(Exception):
    """A run was interrupted: shown as its message alone, and it stops "Run All" there."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


# ---------------------------------------------------------------------------------------------
# {name} references


def resolve_refs(value: Any, namespace: Mapping[str, Any], where: str = "") -> Any:
    """Replace every ``{name}`` value with the notebook object it names.

    YAML reads a bare ``{df}`` as the mapping ``{"df": None}``; a quoted ``"{df}"`` stays text.
    Both mean the variable ``df``. Plain values (text, numbers, paths, lists of them) are put in
    as they are, so ``config.yaml`` records them; other objects become :class:`~nbtrain.config.Ref`
    so the config records ``{df}`` and the object never reaches disk.
    """
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if inner is None and isinstance(key, str) and key.isidentifier():
                return _lookup(key, namespace, where)
        return {
            k: resolve_refs(v, namespace, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_refs(v, namespace, where) for v in value]
    if isinstance(value, str):
        m = _REF.match(value.strip())
        if m:
            return _lookup(m.group(1), namespace, where)
    return value


def _lookup(name: str, namespace: Mapping[str, Any], where: str) -> Any:
    from nbtrain.config import Ref

    if name not in namespace:
        names = user_names(namespace)
        hint = did_you_mean(name, names)
        if not hint and names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f" Variables in the notebook: {shown}."
        raise ConfigError(
            f"{where or 'config'}: {{{name}}} refers to a notebook variable, but there is no "
            f"variable named {name!r}.{hint} Define it in a cell above, or write a file path "
            "or hub name instead.",
            field=where or None,
        )
    obj = namespace[name]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if _plain(obj):
        return list(obj) if isinstance(obj, tuple) else obj
    return Ref(name, obj)


def _plain(obj: Any) -> bool:
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return True
    return isinstance(obj, (list, tuple)) and all(
        v is None or isinstance(v, (str, int, float, bool)) for v in obj
    )


def user_names(namespace: Mapping[str, Any]) -> list[str]:
    """The notebook's own variables: no ``_private`` names, no modules, no IPython internals."""
    import types

    return sorted(
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in ("In", "Out", "exit", "quit", "get_ipython")
        and not isinstance(v, types.ModuleType)
    )


def build_config(
    cell: str,
    namespace: Mapping[str, Any],
    *,
    name: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Any:
    """The :class:`~nbtrain.Config` a ``%%finetune`` cell describes.

    Raises:
        ConfigError: YAML syntax (with the cell's line number), unknown keys, bad values,
            unknown ``{name}`` references.
    """
    from nbtrain.config import load_config, parse_yaml
    from nbtrain.config.load import parse_set

    # The leading newline makes YAML line numbers match the cell's (line 1 is %%finetune).
    raw = resolve_refs(parse_yaml("\n" + cell, origin="%%finetune cell"), namespace)
    extra = {k: resolve_refs(v, namespace, k) for k, v in parse_set(overrides).items()}
    if name:
        extra["name"] = name
    return load_config(raw, **extra)


def _plugin(module: str, attr: str) -> Any:
    import importlib
    import importlib.util

    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(module), attr, None)


_SUBCOMMANDS = {
    "runs": "list runs: name, status, steps, best metric, size",
    "show": "NAME: the run's card or summary",
    "config": "NAME: the run's resolved config.yaml",
    "version": "nbtrain, transformers, torch and device",
    "attach": "NAME: reattach the live view of a run",
    "checkpoints": "[NAME]: browse checkpoints",
    "lr_find": "CONFIG: LR finder on a config (a variable, a YAML file or a run's config)",
}


# ---------------------------------------------------------------------------------------------


@magics_class
class NbtrainMagics(Magics):
    """``%%finetune`` and ``%nbtrain``. Defaults can be changed with ``%config``, e.g.
    ``%config NbtrainMagics.display = 'text'``."""

    display = Unicode("auto", help="Default live view: auto, html, widgets, text or none.").tag(
        config=True
    )
    runs_dir = Unicode("", help="Default runs folder for %nbtrain (else the last run's).").tag(
        config=True
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._last_runs_dir = "runs"

    def _runs_dir(self, given: str | None) -> str:
        return given or self.runs_dir or self._last_runs_dir

    @magic_arguments()
    @argument("name", nargs="?", help="run name (its folder under runs_dir); re-running resumes")
    @argument(
        "--dry-run", action="store_true", help="check config and data, show steps; no training"
    )
    @argument("--restart", action="store_true", help="start the named run over from scratch")
    @argument(
        "--lr-find",
        action="store_true",
        help="run the LR finder on this config and show the curve; no training",
    )
    @argument("--out", metavar="VAR", help="variable for the RunResult (default: NAME or run)")
    @argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set epochs=1",
    )
    @argument("--display", choices=DISPLAY_CHOICES, help="live view (default: auto)")
    @no_var_expand  # {name} in --set is ours to resolve, not IPython's string expansion
    @cell_magic
    def finetune(self, line: str, cell: str) -> None:
        """Fine-tune the model the YAML body describes; ``{name}`` refers to notebook variables.

        Re-running the cell with the same name and config resumes an unfinished run or shows the
        finished one; a changed config is refused unless ``--restart`` is given.
        """
        args = parse_argstring(self.finetune, line)
        out = args.out or (args.name if _identifier(args.name) else "run")
        if not _identifier(out):
            raise UsageError(f"--out {out!r} is not a Python variable name; try --out result.")
        try:
            cfg = build_config(cell, self.shell.user_ns, name=args.name, overrides=args.overrides)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        self._last_runs_dir = cfg.runs_dir

        if args.dry_run:
            from IPython.display import display

            from nbtrain.engine.dryrun import dry_run

            try:
                report = dry_run(cfg)
            except ConfigError as e:
                raise UsageError(str(e)) from None
            display(report)
            return
        if args.lr_find:
            self.shell.user_ns[out if args.out else "lr"] = self._lr_find(cfg)
            return

        reused = not args.restart and _finished(cfg)
        message = self._train(cfg, args, out, reused)
        if message is not None:
            # Raised outside the except block so no traceback (and no tensor) is kept alive.
            raise RunStopped(message)

    def _train(self, cfg: Any, args: Any, out: str, reused: bool) -> str | None:
        from nbtrain.api import finetune, load_run

        try:
            # --display, then the cell's `display:` key, then %config NbtrainMagics.display.
            mode = args.display or (cfg.display if cfg.display != "auto" else self.display)
            result = finetune(cfg, restart=args.restart, display=mode)
        except RunInterrupted as e:
            if e.run_dir and (Path(e.run_dir) / "config.yaml").exists():
                self.shell.user_ns[out] = load_run(e.run_dir)  # from disk: holds no tensors
            return f"{e} (`{out}` holds the interrupted run.)"
        except TrainingFailed as e:
            raise UsageError(str(e)) from None
        except ConfigError as e:
            raise UsageError(str(e)) from None
        self.shell.user_ns[out] = result
        if reused:
            print(
                f"Run {result.name!r} already finished: showing its result without training "
                "(use --restart to train it again, or give a new name)."
            )
        print(f"{out} = {result!r}")
        return None

    @no_var_expand
    @line_magic
    def nbtrain(self, line: str) -> Any:
        """``%nbtrain runs|show NAME|config NAME|version|attach NAME|checkpoints [NAME]``
        (``--runs-dir DIR`` to look elsewhere than the last run's folder)."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%nbtrain: {e}.") from None
        runs_dir = None
        if "--runs-dir" in words:
            i = words.index("--runs-dir")
            if i + 1 >= len(words):
                raise UsageError("%nbtrain: --runs-dir needs a folder.")
            runs_dir = words[i + 1]
            del words[i : i + 2]
        usage = "Usage: %nbtrain " + " | ".join(
            f"{k} {v.split(':')[0]}" if ":" in v else k for k, v in _SUBCOMMANDS.items()
        )
        if not words:
            raise UsageError(usage)
        cmd, rest = words[0], words[1:]
        if cmd not in _SUBCOMMANDS:
            raise UsageError(
                f"%nbtrain: unknown command {cmd!r}.{did_you_mean(cmd, _SUBCOMMANDS)} {usage}"
            )
        needs_name = cmd in ("show", "config", "attach", "lr_find")
        if (
            (needs_name and len(rest) != 1)
            or (not needs_name and len(rest) > 1)
            or (cmd in ("runs", "version") and rest)
        ):
            raise UsageError(f"%nbtrain {cmd} {_SUBCOMMANDS[cmd]}. {usage}")
        folder = self._runs_dir(runs_dir)
        try:
            if cmd == "runs":
                return runs_view(folder)
            if cmd == "show":
                return show_view(rest[0], folder)
            if cmd == "config":
                return config_view(rest[0], folder)
            if cmd == "version":
                return version_view()
            if cmd == "lr_find":
                return self._lr_find(self._config_of(rest[0], folder), show=False)
            if cmd == "attach":
                fn = _plugin("nbtrain.display", "attach")
                if fn is None:
                    return View("%nbtrain attach is not available in this version of nbtrain.")
                return fn(rest[0], runs_dir=folder)
            fn = _plugin("nbtrain.ui", "browse")
            if fn is None:
                return View("%nbtrain checkpoints is not available in this version of nbtrain.")
            return fn(rest[0] if rest else None, runs_dir=folder)
        except ConfigError as e:
            raise UsageError(str(e)) from None

    def _config_of(self, what: str, runs_dir: str) -> Any:
        """A config from a notebook variable (Config, dict, YAML text or path), a YAML file, or
        the ``config.yaml`` of a run (its ``{name}`` references resolved in the notebook)."""
        from nbtrain.config import Config, load_config

        ns = self.shell.user_ns
        value: Any = ns.get(what) if what.isidentifier() and what in ns else None
        if isinstance(value, (Config, Mapping)):
            return load_config(value)
        if isinstance(value, (str, os.PathLike)):
            what = os.fspath(value)
        path = Path(what).expanduser()
        if not path.is_file() and (Path(runs_dir) / what / "config.yaml").is_file():
            path = Path(runs_dir) / what / "config.yaml"
        if path.is_file():
            return build_config(path.read_text(encoding="utf-8"), ns)
        if "\n" in what:
            return build_config(what, ns)
        names = user_names(ns)
        raise ConfigError(
            f"%nbtrain lr_find: {what!r} is neither a notebook variable holding a config, a YAML "
            f"file, nor a run in {runs_dir!r}.{did_you_mean(what, names)}"
        )

    def _lr_find(self, cfg: Any, *, show: bool = True) -> Any:
        """Run the finder; the cell form displays the curve, the line form returns it."""
        from nbtrain.lr_finder import lr_find

        try:
            result = lr_find(cfg)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        if show:
            from IPython.display import display

            display(result)
        print(
            f"Suggested learning_rate: {result.suggestion:.3g} (set it in the config, or write "
            "learning_rate: find to have each run search for it)."
        )
        return result


def _identifier(name: str | None) -> bool:
    return bool(name) and name.isidentifier() and not keyword.iskeyword(name)


def _finished(cfg: Any) -> bool:
    if not cfg.name:
        return False
    from nbtrain.runs import run_status

    run_dir = Path(cfg.runs_dir).expanduser() / cfg.name
    return (run_dir / "final").is_dir() and run_status(run_dir).status == "finished"


def register(ipython: Any) -> None:
    """Register the magics on a running IPython (called by ``%load_ext nbtrain``)."""
    ipython.register_magics(NbtrainMagics)


__all__ = ["NbtrainMagics", "RunStopped", "View", "build_config", "register", "resolve_refs"]
