"""A throw-away model from a prepared config, for the LR finder and the time estimate."""

from __future__ import annotations

from typing import Any

from nbtrain.engine.cpu_speed import attention_kwargs
from nbtrain.engine.lora import apply_lora
from nbtrain.engine.model import load_model


def fresh_model(prep: Any, dev: Any = None) -> Any:
    """A model to train from a prepared config: loaded from its source, or a copy of the
    caller's object (never trained in place), embeddings frozen and LoRA applied as the config
    asks. The LR finder and the time estimate train these and throw them away.

    With ``dev`` (the device the run trains on), the model loads with the attention the run
    would choose there (``attn_implementation: auto``), so what is timed is what trains.
    """
    import copy

    from transformers import set_seed

    cfg, task = prep.cfg, prep.task
    set_seed(cfg.seed)
    if isinstance(prep.model_source, str):
        attn = attention_kwargs(cfg, dev, prep.model_config)[0] if dev is not None else {}
        model = load_model(
            task.auto_model_class, prep.model_source, cfg, {**task.model_kwargs(), **attn}
        )
    else:
        model = copy.deepcopy(prep.model_source)
    if cfg.freeze_embeddings and model.get_input_embeddings() is not None:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.lora is not None:
        model = apply_lora(model, cfg, task)
    return model
