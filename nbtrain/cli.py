"""``nbtrain`` on the command line: the same engine, a plain-text progress line.

    nbtrain run CONFIG.yaml [--set key=value ...] [--runs-dir DIR] [--restart] [--dry-run [--json]]
    nbtrain runs [--runs-dir DIR]

Works under ``accelerate launch`` too: ``accelerate launch -m nbtrain run config.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from nbtrain.config.load import parse_set
from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed
from nbtrain.format import fmt_bytes

#: Sub-commands: name -> (help, add_arguments, handler), all registered below.
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {}


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
        help="report on the data (lengths, truncation, labels, duplicates), memory and time; "
        "do not train",
    )
    p.add_argument(
        "--json", action="store_true", help="with --dry-run: the report as JSON on stdout"
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
    if ns.json and not ns.dry_run:
        raise ConfigError(
            "--json goes with --dry-run (the report); a training run has no JSON output."
        )
    if ns.dry_run:
        from nbtrain.preflight import inspect

        report = inspect(cfg)
        print(report.to_json() if ns.json else report.text())
        return 2 if report.error else 0
    ended: list[str] = []
    try:
        result = finetune(
            cfg,
            restart=ns.restart,
            display="none" if ns.quiet else "text",
            on_event=lambda ev: ended.append(ev.type) if ev.type in ("error", "end") else None,
        )
    except (ConfigError, TrainingFailed, RunInterrupted) as e:
        if ns.quiet or not ended:
            raise  # nothing was shown yet: main() prints the message
        # The progress view has already printed what happened and what to do, once.
        return _exit_code(e)
    if ns.quiet:
        print(result)
    return 0 if result.status == "finished" else 3


def _exit_code(e: BaseException) -> int:
    if isinstance(e, RunInterrupted):
        return 130
    if isinstance(e, TrainingFailed):
        return 3
    return 2  # ConfigError, DataError: bad input


def _runs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")


def _cmd_runs(ns: argparse.Namespace) -> int:
    from nbtrain.runs import list_runs, list_sweeps

    runs = list_runs(ns.runs_dir)
    sweeps = list_sweeps(ns.runs_dir)
    if not runs and not sweeps:
        print(f"No runs in {ns.runs_dir}/")
        return 0
    dated: list[tuple[float, tuple[str, ...]]] = []
    for r in runs:
        metrics = "  ".join(
            f"{k.removeprefix('eval_')}={v:.4f}" for k, v in r.metrics.items() if _shown_metric(k)
        )
        steps = f"{r.steps}/{r.total_steps}" if r.total_steps else str(r.steps)
        row = (r.name, "run", r.status, steps, metrics or "-", fmt_bytes(r.size_bytes))
        dated.append((r.started or 0, row))
    for sw in sweeps:  # one row per sweep: its trials are runs inside its folder
        best = (
            f"best {sw.metric.removeprefix('eval_')}={sw.best_value:.4f} ({sw.best_run})"
            if sw.best_value is not None
            else "-"
        )
        trials = f"{sw.trials_done}/{sw.trials_total} trials"
        row = (sw.name, "sweep", sw.status, trials, best, fmt_bytes(sw.size_bytes))
        dated.append((sw.started or 0, row))
    rows = [("NAME", "KIND", "STATUS", "STEPS", "METRICS", "SIZE")]
    rows += [row for _, row in sorted(dated, key=lambda d: d[0])]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
    return 0


def _shown_metric(key: str) -> bool:
    if key.endswith(("runtime", "per_second")):
        return False
    return key.startswith("eval_") or ("_" not in key)


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run name or run folder")
    p.add_argument(
        "--merge",
        action="store_true",
        help="merge a LoRA adapter into the base model (loads with plain from_pretrained)",
    )
    p.add_argument("--out", help="target folder (default: <run>/merged or <run>/export)")
    p.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")


def _cmd_export(ns: argparse.Namespace) -> int:
    from nbtrain.export import export_run

    out = export_run(ns.run, ns.out, merge=ns.merge, runs_dir=ns.runs_dir)
    print(f"Exported to {out}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    from pathlib import Path

    p.add_argument(
        "--output",
        default=str(Path("nbtrain-demo") / "01_quickstart.ipynb"),
        help="where to write the executed notebook; runs go to runs/ beside it "
        "(default: nbtrain-demo/01_quickstart.ipynb)",
    )
    p.add_argument(
        "--timeout", type=int, default=1800, help="seconds one cell may run (default: 1800)"
    )


def _cmd_demo(ns: argparse.Namespace) -> int:
    from nbtrain.demo import run_demo

    return run_demo(ns.output, timeout=ns.timeout)


COMMANDS.update(
    {
        "run": ("fine-tune a model from a YAML config", _run_args, _cmd_run),
        "runs": ("list runs and sweeps with status and last metrics", _runs_args, _cmd_runs),
        "export": (
            "write a run's final model to a folder (--merge folds a LoRA adapter in)",
            _export_args,
            _cmd_export,
        ),
        "demo": (
            "run the quickstart notebook headless and write the executed copy",
            _demo_args,
            _cmd_demo,
        ),
    }
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbtrain", description="Fine-tune transformer models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def _version() -> str:
    from nbtrain.version import __version__

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
