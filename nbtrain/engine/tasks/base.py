"""The small interface every task recipe implements.

The engine calls these hooks in order and knows nothing task-specific:

1. ``prepare(raw)``: check columns and labels, hold out an eval split, fix label maps;
2. ``model_kwargs()`` / ``check_model_config(config)`` / ``auto_model_class``: build the model;
3. ``tokenize(ds, tokenizer, max_length)``: a ``datasets.map(batched=True)`` producing model
   inputs, ``labels`` and ``length`` (for length-grouped batches);
4. ``collator(tokenizer)``, ``compute_metrics()``, ``compute_loss_func()``, ``best_metric``;
5. ``predict(model, tokenizer, inputs)`` for ``RunResult.predict``: every task runs its batches
   through :func:`predict_batches`, truncating at the ``max_length`` the run was trained with.
6. ``training_args_class()`` / ``training_args(kwargs)`` / ``trainer_class()`` /
   ``trainer_kwargs(kwargs)``: the Trainer and its arguments (post-training tasks name TRL's
   trainer and config class here; the default is the stock ``Trainer``).

A new task subclasses :class:`Task` and registers itself with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nbtrain.engine.data import RawData

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task recipe to the registry."""
    _REGISTRY[cls.name] = cls
    return cls


def map_tokens(ds: Any, encode: Any) -> Any:
    """Run a task's batched ``encode`` over a dataset, keeping only what it returns (cached by
    ``datasets`` between runs for file-backed data)."""
    return ds.map(
        encode, batched=True, batch_size=1000, remove_columns=ds.column_names, desc="Tokenizing"
    )


def registry() -> dict[str, type[Task]]:
    return dict(_REGISTRY)


def unwrap_model(model: Any) -> Any:
    """The model inside DDP/accelerate wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def predict_batches(
    model: Any,
    items: Sequence[Any],
    *,
    encode: Callable[[list[Any]], Any],
    decode: Callable[[list[Any], Any, Any], list[Any]],
    batch_size: int = 32,
    run: Callable[[Any, Any], Any] | None = None,
    sort_key: Callable[[Any], Any] | None = None,
) -> list[Any]:
    """The one inference loop of every task: batches in eval mode without gradients.

    Args:
        model: the (possibly wrapped) model; its train/eval mode is restored afterwards.
        items: the inputs, one result each, returned in this order.
        encode: a chunk of items -> a ``BatchEncoding`` (moved to the model's device here).
        decode: (chunk, encoding, model output) -> one result per item of the chunk.
        run: (model, encoding) -> output; default ``model(**encoding)``, e.g. ``generate``.
        sort_key: batch similar items together (less padding); results keep the input order.
    """
    import torch

    model = unwrap_model(model)
    if not items:
        return []
    device = next(model.parameters()).device
    order = list(range(len(items)))
    if sort_key is not None:
        order.sort(key=lambda i: sort_key(items[i]))
    out: list[Any] = [None] * len(items)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                chunk = [items[i] for i in idx]
                enc = encode(chunk).to(device)
                result = run(model, enc) if run is not None else model(**enc)
                for i, r in zip(idx, decode(chunk, enc, result), strict=True):
                    out[i] = r
    finally:
        model.train(was_training)
    return out


@dataclass
class Prepared:
    """Data after the task's checks: canonical columns, label maps, the eval split."""

    train: Any
    eval: Any | None
    labels: list[str] | None = None
    problem_type: str | None = None
    notices: list[str] = field(default_factory=list)
    eval_from_split: bool = False


class Task:
    """Base of all task recipes."""

    name: ClassVar[str] = ""
    auto_model_class: ClassVar[str] = "AutoModel"
    #: metric that picks the best checkpoint, and whether larger is better
    best_metric: ClassVar[tuple[str, bool]] = ("loss", False)
    #: post-training tasks (TRL) evaluate before training unless eval_before_training: false
    post_training: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.prepared: Prepared | None = None
        #: Tokens per example the run trained with: ``predict`` truncates there too. Set when
        #: the data is tokenized, or from the run folder when a finished run is opened.
        self.max_length: int | None = None
        #: Non-scalar results of the latest evaluation (confusion matrix, per-class scores).
        self.last_details: dict[str, Any] = {}
        #: Row ``eval_order[i]`` of ``prepared.eval`` is the ``i``-th row evaluated (the engine
        #: sorts the tokenized eval set by length); None when evaluated in order.
        self.eval_order: list[int] | None = None

    @property
    def metric_for_best(self) -> tuple[str, bool]:
        """(metric name, greater is better) that picks the best checkpoint."""
        return self.best_metric

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        """How well data with these columns fits this task (0 = not at all)."""
        return 0.0

    def prepare(self, raw: RawData) -> Prepared:
        raise NotImplementedError

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def check_model_config(self, model_config: Any, model_name: str) -> None:
        """Raise a DataError when the model cannot take this task's labels."""

    def tokenize(self, ds: Any, tokenizer: Any, max_length: int) -> Any:
        raise NotImplementedError

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        raise NotImplementedError

    def compute_metrics(self) -> Any:
        return None

    def compute_loss_func(self) -> Any:
        return None

    def callbacks(self) -> list[Any]:
        """TrainerCallbacks run before nbtrain's event bridge (e.g. generation at eval)."""
        return []

    @property
    def eval_before_training(self) -> bool:
        """Evaluate at step 0 (the base model's score starts every curve)."""
        wanted = getattr(self.cfg, "eval_before_training", None)
        return self.post_training if wanted is None else bool(wanted)

    def training_args_class(self) -> Any:
        """The ``TrainingArguments`` subclass this task trains with (None: the stock one)."""
        return None

    def training_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments for :meth:`training_args_class`, from the translated config."""
        if self.eval_before_training and kwargs.get("eval_strategy", "no") != "no":
            kwargs = {**kwargs, "eval_on_start": True}
        return kwargs

    def trainer_class(self) -> Any:
        """The Trainer class this task trains with (None: ``transformers.Trainer``)."""
        return None

    def trainer_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the Trainer is built with (model, args, datasets, ...)."""
        return kwargs

    def predict(
        self,
        model: Any,
        tokenizer: Any,
        inputs: Any,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> list[dict[str, Any]]:
        raise NotImplementedError(f"predict is not available for task {self.name!r}")

    def generate(
        self, model: Any, tokenizer: Any, prompts: Any, *, max_new_tokens: int = 32, **kw: Any
    ) -> list[str]:
        """Generated text for each prompt (causal-lm, seq2seq)."""
        raise NotImplementedError(f"generate is not available for task {self.name!r}; use predict.")
