"""What the installed transformers' ``TrainingArguments`` takes, and the translation to it.

The field list is read once per transformers version and cached as JSON
(``nbtrain.config.training_fields`` reads that cache, so checking a config imports neither
torch nor transformers). ``python -m nbtrain.engine.training_args`` writes the cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import lru_cache
from importlib import metadata
from typing import Any

from nbtrain.config.training_fields import cache_file as _cache_file


@lru_cache(maxsize=1)
def installed_training_fields() -> dict[str, dict[str, Any]]:
    """``{name: {"type", "default", "help", "choices"}}`` for every TrainingArguments field."""
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return {}
    cache = _cache_file(version)
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    from transformers import TrainingArguments
    from transformers.training_args import OptimizerNames

    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(TrainingArguments):
        if not f.init or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        try:
            json.dumps(default)
        except TypeError:
            default = str(default)
        choices = f.metadata.get("choices")
        out[f.name] = {
            "type": str(f.type),
            "default": default,
            "help": f.metadata.get("help", ""),
            "choices": list(choices) if choices else None,
        }
    out["optim"]["choices"] = [o.value for o in OptimizerNames]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only home only costs the import next time
    return out


def translate(
    cfg: Any,
    *,
    output_dir: str,
    has_eval: bool,
    metric_for_best_model: str | None,
    greater_is_better: bool | None,
    precision: str,
    logging_steps: float,
) -> dict[str, Any]:
    """Keyword arguments for the installed ``TrainingArguments`` from a resolved config.

    Version differences live here and nowhere else: ``warmup_ratio`` became a float
    ``warmup_steps``, ``evaluation_strategy`` became ``eval_strategy``, ``group_by_length``
    became ``train_sampling_strategy``, ``logging_dir`` became an environment variable.
    """
    fields_ = installed_training_fields()
    eval_strategy = cfg.eval_strategy
    if eval_strategy == "auto":
        eval_strategy = "epoch" if has_eval else "no"
    if not has_eval:
        eval_strategy = "no"
    save_strategy = cfg.save_strategy
    if save_strategy == "auto":
        save_strategy = eval_strategy if eval_strategy != "no" else "epoch"
    load_best = cfg.load_best_model_at_end
    if load_best is None:
        load_best = eval_strategy != "no" and save_strategy in (eval_strategy, "best")

    kw: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": cfg.num_train_epochs,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_eval_batch_size
        or 2 * cfg.per_device_train_batch_size,
        "learning_rate": cfg.learning_rate,
        "weight_decay": cfg.weight_decay,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "max_steps": cfg.max_steps,
        "optim": cfg.optim,
        "max_grad_norm": cfg.max_grad_norm,
        "label_smoothing_factor": cfg.label_smoothing_factor,
        "seed": cfg.seed,
        "eval_strategy": eval_strategy,
        "save_strategy": save_strategy,
        "save_total_limit": cfg.save_total_limit,
        "load_best_model_at_end": bool(load_best),
        "metric_for_best_model": metric_for_best_model
        if load_best or eval_strategy != "no"
        else None,
        "greater_is_better": greater_is_better,
        "logging_strategy": "steps",
        "logging_steps": logging_steps,
        "logging_first_step": True,
        "report_to": _report_to(cfg.report_to),
        "auto_find_batch_size": cfg.auto_find_batch_size,
        "torch_compile": cfg.torch_compile,
        "disable_tqdm": True,  # nbtrain's own views show progress
        "save_safetensors": True,
    }
    if cfg.eval_steps is not None:
        kw["eval_steps"] = cfg.eval_steps
    if cfg.save_steps is not None:
        kw["save_steps"] = cfg.save_steps
    elif save_strategy == "steps" and cfg.eval_steps is not None:
        kw["save_steps"] = cfg.eval_steps

    # warmup: a ratio is its own field on 4.x; on 5.x warmup_steps takes a float < 1 as ratio.
    if cfg.warmup_steps > 0:
        kw["warmup_steps"] = cfg.warmup_steps
    elif cfg.warmup_ratio > 0:
        if "warmup_ratio" in fields_:
            kw["warmup_ratio"] = cfg.warmup_ratio
        else:
            kw["warmup_steps"] = float(cfg.warmup_ratio)

    if "train_sampling_strategy" in fields_:
        kw["train_sampling_strategy"] = "group_by_length" if cfg.group_by_length else "random"
    else:
        kw["group_by_length"] = cfg.group_by_length

    if cfg.gradient_checkpointing:
        name = (
            "activation_checkpointing"
            if "activation_checkpointing" in fields_
            else "gradient_checkpointing"
        )
        kw[name] = True
        kwargs_name = f"{name}_kwargs"
        if kwargs_name in fields_:
            # Non-reentrant checkpointing works with frozen embeddings (LoRA) and warns less.
            kw[kwargs_name] = {"use_reentrant": False}

    if precision == "fp16":
        kw["fp16"] = True
    elif precision == "bf16":
        kw["bf16"] = True

    if cfg.logging_dir and "logging_dir" in fields_:
        kw["logging_dir"] = cfg.logging_dir

    # Pass-through fields last: the user's explicit word wins.
    for key, value in cfg.training_args.items():
        kw[key] = value
    cap = max_steps_override()
    if cap:
        given = kw.get("max_steps") or -1
        kw["max_steps"] = min(cap, given) if given > 0 else cap
    return {k: v for k, v in kw.items() if k in fields_}


MAX_STEPS_ENV = "NBTRAIN_DOCS_MAX_STEPS"


def max_steps_override() -> int | None:
    """``NBTRAIN_DOCS_MAX_STEPS=N`` caps every run at N optimizer steps (None when unset).

    The docs' examples train for whole epochs; their test (tests/test_docs.py) sets it so each
    example still trains, evaluates and saves, in seconds. It is not part of a run's config.
    """
    raw = os.environ.get(MAX_STEPS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        from nbtrain.errors import ConfigError

        raise ConfigError(f"{MAX_STEPS_ENV}={raw!r}: expected a whole number of steps, 1 or more.")
    return int(raw)


def _report_to(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    items = [i for i in items if i != "none"]
    return items or ["none"]


if __name__ == "__main__":
    import sys

    sys.stdout.write(json.dumps(installed_training_fields()) + "\n")
