"""The fields of the installed transformers' ``TrainingArguments``, without importing it.

The engine (``nbtrain.engine.training_args``) reads them from transformers once per version and
caches them as JSON; this module reads that cache, and when there is none yet it asks the engine
in a subprocess, so ``config/`` never imports torch or transformers itself.
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


def cache_file(version: str) -> Path:
    root = Path(os.environ.get("NBTRAIN_CACHE", Path.home() / ".cache" / "nbtrain"))
    return root / f"training_args-{version}.json"


@lru_cache(maxsize=1)
def installed_training_fields() -> dict[str, dict[str, Any]]:
    """``{name: {"type", "default", "help", "choices"}}``; empty without transformers."""
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return {}
    try:
        return json.loads(cache_file(version).read_text())
    except (OSError, ValueError):
        pass
    try:
        out = subprocess.run(
            [sys.executable, "-m", "nbtrain.engine.training_args"],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}
