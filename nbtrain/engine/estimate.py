"""``nbtrain.estimate_memory(config, device=...)``: the memory estimate from a config alone.

A thin public entry point over :func:`nbtrain.engine.memory.estimate_memory`: it loads only the
model's ``config.json`` (no weights, no data) and picks the task from the config or the model's
architecture, so it works offline for any local or packaged model.
"""

from __future__ import annotations

from typing import Any

from nbtrain.config import Config, load_config
from nbtrain.config.refs import unwrap
from nbtrain.engine.memory import MemoryEstimate
from nbtrain.errors import ConfigError, did_you_mean

# The estimate reads no data; a config written only to ask "will it fit?" may leave it out.
_NO_DATA = "(not read by estimate_memory)"


def estimate_memory(
    config: Config | dict[str, Any] | str | None = None,
    /,
    device: Any = None,
    **overrides: Any,
) -> MemoryEstimate:
    """Estimate the peak training memory of ``config`` on ``device``, without loading weights.

    Args:
        config: a :class:`~nbtrain.Config`, a dict, a YAML path or YAML text (what ``finetune``
            takes; ``data`` may be left out, it is not read).
        device: ``None`` for this machine, a simulated one by name (``"cpu"``, ``"t4"``,
            ``"a100"``, ...: the keys of ``nbtrain.engine.model.SIMULATED``) or a ``DeviceInfo``.
        **overrides: config fields, e.g. ``lora={"r": 8}`` or ``batch_size=4``.

    Returns:
        A :class:`~nbtrain.engine.memory.MemoryEstimate` (``total_bytes``, ``fits``,
        ``options``, ``text()``; shown as a table in a notebook).

    Raises:
        ConfigError: a bad config, a model whose ``config.json`` cannot be found (offline and not
            cached), an unknown device name.
    """
    from nbtrain.engine import memory
    from nbtrain.engine.model import SIMULATED, load_pretrained_config, resolve_model_name

    cfg = _load(config, overrides)
    if isinstance(device, str):
        key = device.strip().lower()
        if key not in SIMULATED:
            raise ConfigError(
                f"device: {device!r} is not a known device.{did_you_mean(key, SIMULATED)} "
                f"Use one of {', '.join(SIMULATED)}, or None for this machine.",
                field="device",
            )
        device = SIMULATED[key]
    model = unwrap(cfg.model)
    if isinstance(model, str):
        model_obj = None
        model_config = load_pretrained_config(resolve_model_name(model), cfg)
    else:
        model_obj, model_config = model, getattr(model, "config", None)
    task = cfg.task or _task_of(model_config)
    return memory.estimate_memory(
        cfg,
        model_config,
        device,
        task=task,
        max_length=cfg.data.max_length or _model_limit(model_config),
        model=model_obj,
    )


def _load(config: Any, overrides: dict[str, Any]) -> Config:
    try:
        return load_config(config, **overrides)
    except ConfigError as e:
        if e.field != "data.train":
            raise
        return load_config(config, **{**overrides, "data.train": _NO_DATA})


def _task_of(model_config: Any) -> str:
    """The task a run of this model would most likely be, from its architecture alone."""
    archs = " ".join(getattr(model_config, "architectures", None) or [])
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return "causal-lm"
    if "ConditionalGeneration" in archs or "Seq2SeqLM" in archs:
        return "seq2seq"
    if "TokenClassification" in archs:
        return "token-classification"
    if "MaskedLM" in archs and "SequenceClassification" not in archs:
        return "masked-lm"
    return "text-classification"


def _model_limit(model_config: Any) -> int:
    pos = getattr(model_config, "max_position_embeddings", None)
    return min(512, pos) if isinstance(pos, int) and pos > 0 else 512


__all__ = ["estimate_memory"]
