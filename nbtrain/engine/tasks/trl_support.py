"""What the TRL tasks share: loading TRL lazily, checking ``trl_args``, and the trainer subclass
that fits a TRL trainer into an nbtrain run folder."""

from __future__ import annotations

import inspect
from typing import Any

from nbtrain.errors import ConfigError, did_you_mean

TRL_HINT = "Install TRL for the post-training tasks: pip install 'nbtrain[post-training]'."
# Evaluation metrics TRL reports that say little about the model: kept out of the events.
NOISE = (
    "logits/",
    "logps/",
    "entropy",
    "num_tokens",
    "mean_token_accuracy",
    "clip_ratio/",
    "step_time",
)
NOISE_EVAL = ("completions/min", "completions/max", "_terminated_", "frac_reward_zero_std")


def trl_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def require_trl(task: str) -> None:
    if not trl_available():
        raise ConfigError(f"task: {task} trains with TRL, which is not installed. {TRL_HINT}")


def load_trl(module: str, name: str) -> Any:
    import importlib

    quiet_trl_renames()
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ConfigError(f"{name} could not be imported from TRL ({e}). {TRL_HINT}") from None


# transformers 5 renamed gradient checkpointing to activation checkpointing; TRL still reads and
# toggles the old names (DPO at every step), so each TRL run put 3-4 FutureWarning boxes under
# the user's cell that are neither theirs nor nbtrain's. Process-wide, not catch_warnings:
# background runs train on a worker thread, and catch_warnings is not thread-safe.
_TRL_RENAMES = (
    r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated and will be removed"
)


def quiet_trl_renames() -> None:
    import warnings

    warnings.filterwarnings("ignore", message=_TRL_RENAMES, category=FutureWarning)


def check_trl_args(values: dict[str, Any], config_cls: Any, task: str) -> dict[str, Any]:
    """``trl_args`` checked against the fields of the task's TRL config class."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(config_cls)}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"trl_args: {key!r} is not a field of {config_cls.__name__} (task {task}) in "
                f"the installed TRL.{did_you_mean(key, known)}",
                field="trl_args",
            )
    return dict(values)


def accepted_kwargs(kwargs: dict[str, Any], trainer_cls: Any) -> dict[str, Any]:
    """The keyword arguments the trainer's ``__init__`` takes (TRL trainers take no
    ``compute_loss_func``; some no ``compute_metrics``)."""
    base = getattr(trainer_cls, "trl_base", trainer_cls)
    params = inspect.signature(base.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params and (v is not None or k == "model")}


def nbtrain_trainer(base: type) -> type:
    """``base`` (a TRL trainer) made to fit a run folder: no model card README written into
    it, and with LoRA the adapter-disabled model as the reference instead of TRL's copy of the
    adapter (a fresh adapter starts at zero, so both are the base model; one is free)."""
    cached = TRAINERS.get(base)
    if cached is not None:
        return cached

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        from nbtrain.engine.library_log import no_progress_bars

        with no_progress_bars("datasets"):  # TRL tokenizes with datasets.map: no bars in the view
            base.__init__(self, *args, **kwargs)
        inner = self.accelerator.unwrap_model(self.model)
        if "ref" in (getattr(inner, "peft_config", None) or {}):
            inner.delete_adapter("ref")
            inner.set_adapter("default")

    def create_model_card(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    attrs = {"__init__": __init__, "create_model_card": create_model_card, "trl_base": base}
    cls = type(base.__name__, (base,), attrs)
    cls.__module__ = __name__
    TRAINERS[base] = cls
    return cls


TRAINERS: dict[type, type] = {}


def metrics_filter() -> Any:
    """A callback that leaves TRL's diagnostic metrics (logits, entropy, token counts) out of
    the events, so the live view's tables show rewards, margins, accuracy and KL."""
    from transformers import TrainerCallback

    def noisy(key: str, is_eval: bool) -> bool:
        k = key[5:] if key.startswith("eval_") else key
        return k.startswith(NOISE) or (is_eval and any(n in k for n in NOISE_EVAL))

    class _Filter(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            for k in [k for k in (logs or {}) if noisy(k, False)]:
                del logs[k]

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any
        ) -> None:
            for k in [k for k in (metrics or {}) if noisy(k, True)]:
                del metrics[k]

    return _Filter()
