"""The small interface every task recipe implements.

The engine calls these hooks in order and knows nothing task-specific:

1. ``prepare(raw)``: check columns and labels, hold out an eval split, fix label maps;
2. ``model_kwargs()`` / ``check_model_config(config)`` / ``auto_model_class``: build the model;
3. ``tokenize(ds, tokenizer, max_length)``: a ``datasets.map(batched=True)`` producing model
   inputs, ``labels`` and ``length`` (for length-grouped batches);
4. ``collator(tokenizer)``, ``compute_metrics()``, ``compute_loss_func()``, ``best_metric``;
5. ``predict(model, tokenizer, inputs)`` for ``RunResult.predict``;
6. ``training_args_class()`` / ``training_args(kwargs)`` / ``trainer_class()`` /
   ``trainer_kwargs(kwargs)``: the Trainer and its arguments (post-training tasks name TRL's
   trainer and config class here; the default is the stock ``Trainer``).

A new task subclasses :class:`Task` and registers itself with :func:`register`.
"""

from __future__ import annotations

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
        #: Non-scalar results of the latest evaluation (confusion matrix, per-class scores).
        self.last_details: dict[str, Any] = {}

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
