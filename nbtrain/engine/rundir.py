"""The run folder: its name, its identity (what makes two configs the same run), and the files
written beside the checkpoints (config.yaml, identity.json, env.json).

Under ``accelerate launch`` rank 0 owns the folder; the other ranks only read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from nbtrain.config import Config, config_to_dict, diff_configs
from nbtrain.config.refs import describe, fingerprint, unwrap
from nbtrain.errors import ConfigError

# where/how, not what: `processes` like `accelerate launch --num_processes`, so a run
# started in two processes resumes in one and vice versa; where to start from is not what
_IDENTITY_IGNORED = {
    "name",
    "runs_dir",
    "display",
    "parallel",
    "processes",
    "resume_from_checkpoint",
    "cpu_threads",  # a speed setting of this machine: the same run on another machine
}


def default_name(cfg: Config) -> str:
    """``<model>-<hash of the config>``: the same config gets the same name, so re-running an
    unnamed cell (or ``nbtrain run`` of a file without ``name:``) resumes its run, and every
    process of ``accelerate launch`` agrees on the folder."""
    model = cfg.model if isinstance(cfg.model, str) else describe(cfg.model).strip("{}<>")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model)).name).strip("-") or "run"
    digest = hashlib.sha1(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()
    return f"{base}-{digest[:8]}"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate (or a plain single process) owns the run folder."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def identity(cfg: Config) -> dict[str, Any]:
    """The parts of a config that define a run: same identity, same run (resume, reuse)."""
    d = config_to_dict(cfg)
    for key in _IDENTITY_IGNORED:
        d.pop(key, None)
    prints = {}
    for key, value in (
        ("data.train", cfg.data.train),
        ("data.eval", cfg.data.eval),
        ("model", cfg.model),
    ):
        fp = fingerprint(value) if not isinstance(unwrap(value), str) else None
        if fp:
            prints[key] = fp
    if prints:
        d["fingerprints"] = prints
    return json.loads(json.dumps(d, default=str))


# ---------------------------------------------------------------------------------------------


def locate_run(cfg: Config, *, restart: bool) -> tuple[Path, str, bool]:
    """Where the run lives and whether it is a run to continue. Creates and removes nothing.

    Returns (run_dir, name, existing). Same name and identity: existing (resume or reuse).
    Different identity: refused, naming the changed keys. ``restart``: not existing (the old
    folder is replaced by :func:`create_run`, so a config error found before training keeps it).
    """
    name = cfg.name or default_name(cfg)
    run_dir = Path(cfg.runs_dir).expanduser() / name
    if not is_main_process():
        # Other ranks only read: rank 0 checks, creates or cleans the folder.
        return run_dir, name, not restart and (run_dir / "identity.json").exists()
    if not run_dir.exists():
        return run_dir, name, False
    if not (run_dir / "config.yaml").exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"The folder {str(run_dir)!r} exists and is not an nbtrain run; choose another "
            "name or runs_dir.",
            field="name",
        )
    ident_file = run_dir / "identity.json"
    if restart or not ident_file.exists():
        return run_dir, name, False
    changed = diff_configs(json.loads(ident_file.read_text()), identity(cfg))
    if changed:
        raise ConfigError(
            f"A run named {name!r} already exists with a different config (changed: "
            f"{', '.join(changed[:8])}{', ...' if len(changed) > 8 else ''}). Re-run with "
            "--restart (restart=True) to start it over, or give the run a new name.",
            field="name",
        )
    return run_dir, name, True


def create_run(cfg: Config, run_dir: Path, name: str) -> None:
    """Write a new run folder (replacing an old one of the same name): config and identity."""
    if not is_main_process():
        return
    if run_dir.exists():
        from nbtrain.runs import remove_tree

        remove_tree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(_config_yaml(cfg, name), encoding="utf-8")
    (run_dir / "identity.json").write_text(json.dumps(identity(cfg), indent=1, sort_keys=True))


def _config_yaml(cfg: Config, name: str) -> str:
    d = config_to_dict(cfg)
    d["name"] = name
    header = "# nbtrain run config: re-run with `nbtrain run config.yaml`\n"
    refs = [
        f"{k}"
        for k, v in (
            ("data.train", cfg.data.train),
            ("data.eval", cfg.data.eval),
            ("model", cfg.model),
            ("tokenizer", cfg.tokenizer),
        )
        if v is not None and not isinstance(unwrap(v), str)
    ]
    if refs:
        header += (
            f"# {', '.join(refs)} came from notebook objects; replace them with files or "
            "hub names to run this outside the notebook.\n"
        )
    return header + _yaml_dump(d)


def _yaml_dump(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def write_env(
    run_dir: Path,
    cfg: Config,
    device: Any,
    precision: str,
    args: Any,
    data: dict[str, Any] | None = None,
    cpu_threads: int | None = None,
) -> None:
    from importlib import metadata

    versions = {}
    for pkg in ("nbtrain", "transformers", "torch", "datasets", "accelerate", "peft", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env = {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": {
            "kind": device.kind,
            "name": device.name,
            "count": device.count,
            "memory_bytes": device.memory_bytes,
        },
        "precision": precision,
        "seed": cfg.seed,
        "training_args": _safe_args(args),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cpu_threads is not None:
        # The torch threads it trained with: a resume reuses them (float sums depend on them).
        env["cpu_threads"] = cpu_threads
    if data is not None:
        env["data"] = data  # lengths, truncation, labels, duplicates: what it trained on
    (run_dir / "env.json").write_text(json.dumps(env, indent=1, default=str))


def _safe_args(args: Any) -> dict[str, Any]:
    d = args.to_dict() if hasattr(args, "to_dict") else {}
    return {k: v for k, v in d.items() if "token" not in k}
