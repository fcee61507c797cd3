"""Trainer code written for transformers 4.x, run as written on the installed transformers.

Two things break the usual tutorial's ``CustomTrainer`` on transformers 5:

- ``Trainer.training_step`` calls ``compute_loss(model, inputs, num_items_in_batch=...)``; an
  override with the 4.x signature ``compute_loss(self, model, inputs, return_outputs=False)``
  raises ``TypeError``. :func:`adapt_compute_loss` makes the call match what the override
  accepts.
- The Trainer decides whether a loss is "already scaled for gradient accumulation" from whether
  the model's ``forward`` takes ``**kwargs``. On transformers 5 every model does, but only some
  (causal and masked LM heads, via ``self.loss_function``) actually divide by
  ``num_items_in_batch``; a classification head still returns a per-batch mean, which is then
  summed over the accumulated micro-batches: the gradient and the reported ``train_loss`` come
  out ``gradient_accumulation_steps`` times too big. :func:`fix_loss_scaling` tells the
  Trainer the truth.
"""

from __future__ import annotations

import inspect
import types
from typing import Any


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: call it the way the Trainer does
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def adapt_compute_loss(trainer: Any) -> None:
    """Make ``trainer.compute_loss`` take the Trainer's call when the user's override has the
    transformers-4 signature: the arguments it does not take (``num_items_in_batch``, and
    ``return_outputs`` if missing) are dropped.

    Done on the instance, so ``type(trainer)`` stays the user's class. Such an override
    returns its own per-batch loss without seeing ``num_items_in_batch``, so the trainer also
    says that loss is *not* scaled for gradient accumulation (unless the class sets
    ``loss_is_scaled_for_ga`` itself): the Trainer divides it by the accumulation steps, as
    transformers 4 did.
    """
    from transformers import Trainer

    fn = getattr(type(trainer), "compute_loss", None)
    if fn is None or fn is Trainer.compute_loss or _accepts(fn, "num_items_in_batch"):
        return
    takes_return_outputs = _accepts(fn, "return_outputs")

    def compute_loss(
        self: Any,
        model: Any,
        inputs: Any,
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if takes_return_outputs:
            return fn(self, model, inputs, return_outputs=return_outputs)
        return fn(self, model, inputs)

    trainer.compute_loss = types.MethodType(compute_loss, trainer)
    if getattr(type(trainer), "loss_is_scaled_for_ga", None) is None:
        trainer.loss_is_scaled_for_ga = False


def model_scales_loss(model: Any) -> bool | None:
    """Whether ``model``'s own loss divides by ``num_items_in_batch`` (None: cannot tell)."""
    base = model
    for _ in range(4):  # PeftModel -> LoraModel -> the transformers model
        inner = getattr(base, "get_base_model", None)
        if inner is None:
            break
        nxt = inner()
        if nxt is base:
            break
        base = nxt
    explicit = type(base).__dict__.get("accepts_loss_kwargs")
    if explicit is not None:
        return bool(explicit)
    try:
        source = inspect.getsource(type(base).forward)
    except (OSError, TypeError):
        return None
    if "num_items_in_batch" in source:
        return True
    if "self.loss_function" not in source:
        return False  # a CrossEntropyLoss() of its own: a per-batch mean
    try:
        loss_fn = base.loss_function
    except Exception:
        return None
    try:
        return "num_items_in_batch" in inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        return None


def fix_loss_scaling(trainer: Any) -> None:
    """Set ``trainer.model_accepts_loss_kwargs`` from what the model's loss really does."""
    if not getattr(trainer, "model_accepts_loss_kwargs", False):
        return
    scales = model_scales_loss(trainer.model)
    if scales is False:
        trainer.model_accepts_loss_kwargs = False


def call_model_init(fn: Any) -> Any:
    """The model from a Trainer-style ``model_init``: ``model_init()`` or ``model_init(trial)``
    (called with ``trial=None``: a sweep's trial values are already in the run's config)."""
    try:
        n = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n = 0
    model = fn(None) if n >= 1 else fn()
    if model is None or not hasattr(model, "parameters"):
        from nbtrain.errors import ConfigError

        raise ConfigError(
            f"model_init returned {type(model).__name__}, not a model; it must return e.g. "
            "AutoModelForSequenceClassification.from_pretrained(...).",
            field="model_init",
        )
    return model
