"""``nbtrain`` on the command line: the same engine, a plain-text progress line.

    nbtrain run CONFIG.yaml [--set key=value ...] [--runs-dir DIR] [--restart] [--dry-run]
    nbtrain runs [--runs-dir DIR]

Works under ``accelerate launch`` too: ``accelerate launch -m nbtrain run config.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed

#: Sub-commands: name -> (help, add_arguments, handler). Modules in _load_plugins add theirs.
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {}


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars (``1e-5``, ``true``, ``[a, b]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set epochs=1.")
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set epochs=1 --set data.eval_split=0.2",
    )
    p.add_argument("--runs-dir", help="folder of run folders (default: the config's runs_dir)")
    p.add_argument("--name", help="run name (default: the config's name)")
    p.add_argument("--restart", action="store_true", help="start a run of the same name over")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check config and data, show steps and examples, do not train",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _cmd_run(ns: argparse.Namespace) -> int:
    from nbtrain.api import finetune
    from nbtrain.config import load_config

    overrides = parse_set(ns.overrides)
    if ns.runs_dir:
        overrides["runs_dir"] = ns.runs_dir
    if ns.name:
        overrides["name"] = ns.name
    cfg = load_config(ns.config, **overrides)
    if ns.dry_run:
        from nbtrain.engine.dryrun import dry_run

        print(dry_run(cfg).text())
        return 0
    result = finetune(cfg, restart=ns.restart, display="none" if ns.quiet else "text")
    if ns.quiet:
        print(result)
    return 0 if result.status == "finished" else 3


def _runs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")


def _cmd_runs(ns: argparse.Namespace) -> int:
    from nbtrain.checkpoints import list_runs

    runs = list_runs(ns.runs_dir)
    if not runs:
        print(f"No runs in {ns.runs_dir}/")
        return 0
    rows = [("NAME", "STATUS", "STEPS", "METRICS", "SIZE")]
    for r in runs:
        metrics = "  ".join(
            f"{k.removeprefix('eval_')}={v:.4f}" for k, v in r.metrics.items() if _shown_metric(k)
        )
        steps = f"{r.steps}/{r.total_steps}" if r.total_steps else str(r.steps)
        rows.append((r.name, r.status, steps, metrics or "-", _size(r.size_bytes)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    return 0


def _shown_metric(key: str) -> bool:
    if key.endswith(("runtime", "per_second")):
        return False
    return key.startswith("eval_") or ("_" not in key)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


COMMANDS["run"] = ("fine-tune a model from a YAML config", _run_args, _cmd_run)
COMMANDS["runs"] = ("list runs with status and last metrics", _runs_args, _cmd_runs)


def _load_plugins() -> None:
    """Modules that add sub-commands register them on import."""
    import importlib

    for module in ("nbtrain.demo", "nbtrain.export"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="nbtrain", description="Fine-tune transformer models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def _version() -> str:
    from nbtrain import __version__

    return f"nbtrain {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(ns.handler(ns) or 0)
    except ConfigError as e:
        print(f"nbtrain: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:
        print(f"nbtrain: {e}", file=sys.stderr)
        return 130
    except TrainingFailed as e:
        print(f"nbtrain: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
