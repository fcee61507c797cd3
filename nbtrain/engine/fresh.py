"""A throw-away model from a prepared config, for the LR finder and the time estimate."""

from __future__ import annotations

from typing import Any

from nbtrain.engine.lora import apply_lora
from nbtrain.engine.model import load_model


def fresh_model(prep: Any) -> Any:
    """A model to train from a prepared config: loaded from its source, or a copy of the
    caller's object (never trained in place), embeddings frozen and LoRA applied as the config
    asks. The LR finder and the time estimate train these and throw them away."""
    import copy

    from transformers import set_seed

    cfg, task = prep.cfg, prep.task
    set_seed(cfg.seed)
    if isinstance(prep.model_source, str):
        model = load_model(task.auto_model_class, prep.model_source, cfg, task.model_kwargs())
    else:
        model = copy.deepcopy(prep.model_source)
    if cfg.freeze_embeddings and model.get_input_embeddings() is not None:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.lora is not None:
        model = apply_lora(model, cfg, task)
    return model
