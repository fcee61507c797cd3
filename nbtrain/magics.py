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
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Unicode

from nbtrain.config.refs import resolve_refs, user_names
from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed, did_you_mean
from nbtrain.runviews import View, config_view, runs_view, show_view, version_view

DISPLAY_CHOICES = ("auto", "html", "widgets", "text", "none")


class RunStopped(Exception):
    """A run was interrupted: shown as its message alone, and it stops "Run All" there."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


# ---------------------------------------------------------------------------------------------
# {name} references


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


def strip_comment(line: str) -> str:
    """A magic line without its trailing ``# comment``, as a shell reads it.

    IPython hands a line magic everything after its name, comment included. A ``#`` starts a
    comment at the start of a word and outside quotes, so ``--set x='#1'`` and ``a#b`` keep it.
    """
    quote = ""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


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
    "attach": "NAME: the run's live view in this cell (curves so far, then live)",
    "stop": "NAME: stop a background run after this step, with a checkpoint",
    "compare": "A B [C ...] [--x step|epoch|samples]: curves overlaid, metrics, config diff",
    "checkpoints": "[NAME]: browse checkpoints",
    "arena": "MODEL [MODEL ...] [--prompts VAR] [--max-new-tokens N]: generate side by side",
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
        "--dry-run",
        action="store_true",
        help="report on the data, memory and time of the run; no training",
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
    @argument(
        "--background",
        action="store_true",
        help="train on a worker thread: the cell returns at once, NAME holds a RunHandle",
    )
    @argument(
        "--parallel",
        action="store_true",
        help="with --background: start now instead of queueing behind this kernel's other run",
    )
    @argument(
        "--processes",
        type=int,
        metavar="N",
        help="train in N processes (DDP via accelerate's notebook_launcher); the config's "
        "processes: key",
    )
    @no_var_expand  # {name} in --set is ours to resolve, not IPython's string expansion
    @cell_magic
    def finetune(self, line: str, cell: str) -> None:
        """Fine-tune the model the YAML body describes; ``{name}`` refers to notebook variables.

        Re-running the cell with the same name and config resumes an unfinished run or shows the
        finished one; a changed config is refused unless ``--restart`` is given.
        """
        args = self.parse_line(line)
        out = args.out or (args.name if _identifier(args.name) else "run")
        if not _identifier(out):
            raise UsageError(f"--out {out!r} is not a Python variable name; try --out result.")
        overrides = list(args.overrides)
        if args.processes is not None:
            overrides.append(f"processes={args.processes}")
        try:
            cfg = build_config(cell, self.shell.user_ns, name=args.name, overrides=overrides)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        self._last_runs_dir = cfg.runs_dir

        if args.dry_run:
            from IPython.display import display

            from nbtrain.preflight import inspect

            try:
                report = inspect(cfg)
            except ConfigError as e:
                raise UsageError(str(e)) from None
            display(report)
            return
        if args.lr_find:
            self.shell.user_ns[out if args.out else "lr"] = self._lr_find(cfg)
            return

        if args.background:
            self._background(cfg, args, out)
            return
        # resume_from_checkpoint trains a finished run again from the checkpoint it names
        reused = not args.restart and _finished(cfg) and not cfg.resume_from_checkpoint
        message = self._train(cfg, args, out, reused)
        if message is not None:
            # Raised outside the except block so no traceback (and no tensor) is kept alive.
            raise RunStopped(message)

    def _mode(self, cfg: Any, args: Any) -> str:
        # --display, then the cell's `display:` key, then %config NbtrainMagics.display.
        return args.display or (cfg.display if cfg.display != "auto" else self.display)

    def _background(self, cfg: Any, args: Any, out: str) -> None:
        from nbtrain.api import finetune

        try:
            handle = finetune(
                cfg,
                restart=args.restart,
                display=self._mode(cfg, args),
                background=True,
                parallel=args.parallel,
            )
        except ConfigError as e:
            raise UsageError(str(e)) from None
        self.shell.user_ns[out] = handle
        print(
            f"{out} = {handle!r}: training in the background. {out}.wait() returns the result; "
            f"%nbtrain attach {handle.name} shows the view in any cell; "
            f"%nbtrain stop {handle.name} stops it with a checkpoint."
        )

    @classmethod
    def parse_line(cls, line: str) -> Any:
        """The ``%%finetune`` line's flags (a trailing ``# comment`` allowed); UsageError if bad."""
        return parse_argstring(cls.finetune, strip_comment(line))

    def _train(self, cfg: Any, args: Any, out: str, reused: bool) -> str | None:
        from nbtrain.api import finetune, load_run
        from nbtrain.display import resolve_mode

        # --display, then the cell's `display:` key, then %config NbtrainMagics.display.
        mode = args.display or (cfg.display if cfg.display != "auto" else self.display)
        errors: list[Any] = []
        try:
            result = finetune(
                cfg,
                restart=args.restart,
                display=mode,
                on_event=lambda ev: errors.append(ev) if ev.type == "error" else None,
            )
        except RunInterrupted as e:
            if e.run_dir and (Path(e.run_dir) / "config.yaml").exists():
                self.shell.user_ns[out] = load_run(e.run_dir)  # from disk: holds no tensors
            return f"{e} (`{out}` holds the interrupted run.)"
        except (TrainingFailed, ConfigError) as e:
            if errors and resolve_mode(mode) != "none":
                # The view showed the error paragraph; the cell still fails ("Run All" stops)
                # but says so in one line instead of printing the paragraph a second time.
                return "The run failed: see the message above."
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
        """``%nbtrain runs|show NAME|config NAME|version|attach NAME|stop NAME|compare A B ...|
        checkpoints [NAME]``
        (``--runs-dir DIR`` to look elsewhere than the last run's folder)."""
        try:
            words = shlex.split(strip_comment(line))
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
        if cmd == "compare":
            return self._compare(rest, self._runs_dir(runs_dir))
        if cmd == "arena":
            return self._arena(rest, runs_dir)
        needs_name = cmd in ("show", "config", "attach", "stop", "lr_find")
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
                from nbtrain.api import attach

                attach(rest[0], runs_dir=folder, mode=self.display)
                return None
            if cmd == "stop":
                return _stop(rest[0])
            fn = _plugin("nbtrain.ui", "browse")
            if fn is None:
                return View("%nbtrain checkpoints is not available in this version of nbtrain.")
            return fn(rest[0] if rest else None, runs_dir=folder)
        except ConfigError as e:
            raise UsageError(str(e)) from None

    def _compare(self, words: list[str], folder: str) -> Any:
        """``%nbtrain compare A B [C ...] [--x step|epoch|samples]``."""
        x = "step"
        names = []
        i = 0
        while i < len(words):
            w = words[i]
            if w == "--x" or w.startswith("--x="):
                value = w.split("=", 1)[1] if "=" in w else None
                if value is None:
                    if i + 1 >= len(words):
                        raise UsageError("%nbtrain compare: --x needs step, epoch or samples.")
                    value, i = words[i + 1], i + 1
                x = value
            elif w.startswith("-"):
                raise UsageError(
                    f"%nbtrain compare: unknown option {w!r}.{did_you_mean(w, ['--x'])} "
                    f"Usage: %nbtrain compare {_SUBCOMMANDS['compare']}"
                )
            else:
                names.append(w)
            i += 1
        from nbtrain.comparison import compare

        try:
            return compare(names, runs_dir=folder, x=x)
        except ConfigError as e:
            raise UsageError(str(e)) from None

    def _arena(self, words: list[str], runs_dir: str | None) -> Any:
        """``%nbtrain arena A B --prompts VAR --max-new-tokens N``: parse, then ``nbtrain.arena``."""
        from nbtrain.api import arena

        usage = f"Usage: %nbtrain arena {_SUBCOMMANDS['arena'].split(':')[0]}"
        models, opts = [], {}
        it = iter(words)
        for w in it:
            if w in ("--prompts", "--max-new-tokens"):
                value = next(it, None)
                if value is None:
                    raise UsageError(f"%nbtrain arena: {w} needs a value. {usage}")
                opts[w] = value
            elif w.startswith("--"):
                flags = ["--prompts", "--max-new-tokens", "--runs-dir"]
                raise UsageError(
                    f"%nbtrain arena: unknown flag {w!r}.{did_you_mean(w, flags)} {usage}"
                )
            else:
                models.append(w)
        if not models:
            raise UsageError(f"%nbtrain arena needs at least one run or model. {usage}")
        kwargs: dict[str, Any] = {"runs_dir": self._runs_dir(runs_dir)}
        if "--prompts" in opts:
            name = opts["--prompts"].strip("{}")
            ns = self.shell.user_ns if self.shell is not None else {}
            if name not in ns:
                hint = did_you_mean(name, user_names(ns))
                raise UsageError(f"%nbtrain arena: no notebook variable {name!r}.{hint}")
            kwargs["prompts"] = ns[name]
        if "--max-new-tokens" in opts:
            try:
                kwargs["max_new_tokens"] = int(opts["--max-new-tokens"])
            except ValueError:
                raise UsageError("%nbtrain arena: --max-new-tokens needs a whole number.") from None
        try:
            return arena(models, **kwargs)
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


def _stop(name: str) -> View:
    from nbtrain.background import RUNS, running

    handle = RUNS.get(name)
    if handle is None or handle.done:
        live = [h.name for h in running()]
        raise UsageError(
            f"%nbtrain stop: no background run named {name!r} is training in this kernel."
            + did_you_mean(name, live)
            + (f" Running: {', '.join(live)}." if live else " None is running.")
            + " A run in the foreground stops with the kernel's interrupt (■)."
        )
    handle.stop()
    if handle.kind == "sweep":
        return View(
            f"Stopping sweep {name!r} after this step of its current trial; the trial's "
            "checkpoint is saved and it resumes when the sweep runs again."
        )
    return View(f"Stopping {name!r} after this step; a checkpoint is saved.")


def _identifier(name: str | None) -> bool:
    return bool(name) and name.isidentifier() and not keyword.iskeyword(name)


def _finished(cfg: Any) -> bool:
    if not cfg.name:
        return False
    from nbtrain.runs import final_dir, run_status

    run_dir = Path(cfg.runs_dir).expanduser() / cfg.name
    return final_dir(run_dir) is not None and run_status(run_dir).status == "finished"


def register(ipython: Any) -> None:
    """Register the magics on a running IPython (called by ``%load_ext nbtrain``)."""
    ipython.register_magics(NbtrainMagics)


__all__ = [
    "NbtrainMagics",
    "RunStopped",
    "View",
    "build_config",
    "register",
    "resolve_refs",
    "strip_comment",
]
