"""Export a run's final model: ``nbtrain export RUN --merge [--out PATH]``.

A LoRA run's ``final/`` holds an adapter; ``--merge`` folds it into the base model so the result
loads with plain ``from_pretrained`` (no peft needed). A full fine-tune is copied as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nbtrain.errors import ConfigError
from nbtrain.runs import find_run, run_task

MARKER = "nbtrain_export.json"
_SKIP = ("adapter_config.json", "adapter_model.safetensors", "training_args.bin", "README.md")


def export_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    merge: bool = True,
    task: str | None = None,
    runs_dir: str | Path = "runs",
) -> Path:
    """Write a run's final model (adapter merged when ``merge``) to ``out``; returns ``out``.

    Args:
        run: a run name (looked up in ``runs_dir``) or a run folder.
        out: target folder (default: ``<run>/merged``, or ``<run>/export`` without merging).
            A folder that exists must be empty or an earlier export.
        merge: fold a LoRA adapter into its base model.
        task: the run's task (default: read from its events).

    Raises:
        ConfigError: no such run, no final model yet, or ``out`` holds something else.
    """
    run_dir = find_run(run, runs_dir)
    final = run_dir / "final"
    if not final.is_dir():
        raise ConfigError(
            f"Run {run_dir.name!r} has no final model yet (it did not finish); resume it first."
        )
    from nbtrain.engine.lora import is_adapter_dir

    adapter = is_adapter_dir(final)
    out = Path(out) if out is not None else run_dir / ("merged" if merge and adapter else "export")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ConfigError(
            f"{str(out)!r} exists and is not an earlier nbtrain export; choose another path "
            "(--out) or remove it.",
        )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if adapter and merge:
        from nbtrain.engine.lora import merge_adapter
        from nbtrain.engine.tasks import registry

        task = task or run_task(run_dir)
        reg = registry()
        auto_class = reg[task].auto_model_class if task in reg else "AutoModel"
        merge_adapter(final, tmp, auto_class)
        for f in final.iterdir():  # the tokenizer files
            if f.is_file() and f.name not in _SKIP and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
    else:
        shutil.copytree(final, tmp)
    (tmp / MARKER).write_text(
        json.dumps({"run": run_dir.name, "merged": bool(adapter and merge), "adapter": adapter})
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
