"""The fields of the installed transformers' ``TrainingArguments`` and peft's ``LoraConfig``,
without importing either.

An engine module reads them from the library once per version and caches them as JSON
(``nbtrain.engine.training_args``, ``nbtrain.engine.lora``); this module reads that cache, and
when there is none yet it asks the engine module in a subprocess, so ``config/`` never imports
torch, transformers or peft itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any


def cache_file(version: str, kind: str = "training_args") -> Path:
    root = Path(os.environ.get("NBTRAIN_CACHE", Path.home() / ".cache" / "nbtrain"))
    return root / f"{kind}-{version}.json"


def write_cache(path: Path, fields_: dict[str, Any]) -> None:
    """Write a field list atomically (engine side); a read-only home only costs time later."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fields_))
        tmp.replace(path)
    except OSError:
        pass


def cached_fields(package: str, kind: str, module: str) -> dict[str, dict[str, Any]]:
    """The field list of ``package`` (cached per version; else ``python -m module`` prints it).

    Empty when the package is not installed or cannot be read.
    """
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        return {}
    try:
        return json.loads(cache_file(version, kind).read_text())
    except (OSError, ValueError):
        pass
    try:
        out = subprocess.run(
            [sys.executable, "-m", module],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}


@lru_cache(maxsize=1)
def installed_training_fields() -> dict[str, dict[str, Any]]:
    """``{name: {"type", "default", "help", "choices"}}``; empty without transformers."""
    return cached_fields("transformers", "training_args", "nbtrain.engine.training_args")


@lru_cache(maxsize=1)
def installed_lora_fields() -> dict[str, dict[str, Any]]:
    """``{name: {"type", "default", "help"}}`` of peft's ``LoraConfig``; empty without peft."""
    return cached_fields("peft", "lora", "nbtrain.engine.lora")
