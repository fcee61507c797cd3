"""Helpers the language-modelling and token-level task recipes share."""

from __future__ import annotations

import math
from typing import Any

from nbtrain.engine.tasks.base import predict_batches
from nbtrain.errors import DataError

# nbtrain task -> the transformers auto-mapping whose model types can do it
_MAPPINGS = {
    "text-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "masked-lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
}
_EXAMPLES = {
    "causal-lm": "gpt2, Qwen/Qwen2.5-0.5B, meta-llama/Llama-3.2-1B",
    "masked-lm": "bert-base-uncased, roberta-base, distilbert-base-uncased",
    "seq2seq": "t5-small, google/flan-t5-small, facebook/bart-base",
    "token-classification": "bert-base-cased, roberta-base, distilbert-base-cased",
    "text-classification": "bert-base-uncased, roberta-base",
}


def tasks_for(model_type: str) -> list[str]:
    """The nbtrain tasks a model type has a transformers head for."""
    from transformers.models.auto import modeling_auto

    return [
        task
        for task, mapping in _MAPPINGS.items()
        if model_type in getattr(modeling_auto, mapping, {})
    ]


def check_model_can(task: str, model_config: Any, model_name: str) -> None:
    """A clear DataError when the model's architecture has no head for ``task``."""
    model_type = getattr(model_config, "model_type", None)
    if not model_type:
        return
    can = tasks_for(model_type)
    if task in can:
        return
    other = f" It can do: {', '.join(can)}." if can else ""
    raise DataError(
        f"The model {model_name!r} ({model_type}) cannot do {task}: transformers has no "
        f"{task} head for {model_type} models.{other} Use a model such as {_EXAMPLES[task]}, "
        "or set task: to one it can do."
    )


def pick_column(ds: Any, candidates: tuple[str, ...], configured: Any = None) -> str | None:
    """The first column present among ``configured`` and ``candidates`` (case-insensitive)."""
    lower = {c.lower(): c for c in ds.column_names}
    for name in ((configured,) if isinstance(configured, str) else ()) + candidates:
        if name in ds.column_names:
            return name
        if str(name).lower() in lower:
            return lower[str(name).lower()]
    return None


def missing_columns(task: str, role: str, columns: list[str], wanted: str, works: str) -> DataError:
    return DataError(
        f"{task} needs {wanted}; the {role} data has {', '.join(columns) or 'no columns'}. "
        f"Rename the columns, or use data that has {works}."
    )


def split_eval(train: Any, cfg: Any) -> tuple[Any, Any, str | None]:
    """Hold out ``data.eval_split`` of train (seeded) when there is no eval data."""
    frac = cfg.data.eval_split
    if frac <= 0:
        return train, None, None
    n_eval = max(1, round(len(train) * frac))
    if len(train) - n_eval < 1:
        raise DataError(
            f"Only {len(train)} training rows: too few to hold out an eval split. Give "
            "data.eval, or set data.eval_split: 0 to train without evaluation."
        )
    parts = train.train_test_split(test_size=n_eval, seed=cfg.seed)
    notice = (
        f"No eval data given: held out {n_eval} of {len(train)} training rows "
        f"({frac:.0%}, seed {cfg.seed})."
    )
    return parts["train"], parts["test"], notice


def with_eval(
    train: Any, eval_ds: Any, cfg: Any, notices: list[str] | None = None, **extra: Any
) -> Any:
    """Package a task's prepared data, holding out a seeded eval split when none was given."""
    from nbtrain.engine.tasks.base import Prepared

    notices = list(notices or [])
    from_split = False
    if eval_ds is None:
        train, eval_ds, notice = split_eval(train, cfg)
        if notice:
            notices.append(notice)
            from_split = True
    return Prepared(train=train, eval=eval_ds, notices=notices, eval_from_split=from_split, **extra)


def label_padding_collator(tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
    """Pads input_ids with the pad token and labels with -100 (no loss on padding)."""
    from transformers import DataCollatorForSeq2Seq

    from nbtrain.engine.tasks.classification import DropLength

    return DropLength(
        DataCollatorForSeq2Seq(
            tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of
        )
    )


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def check_strings(ds: Any, col: str, role: str) -> None:
    values = ds[col]
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise DataError(
            f"{len(bad)} {role} rows have no text in {col!r} (rows "
            f"{', '.join(map(str, bad[:5]))}; e.g. {values[bad[0]]!r}); fill or drop them."
        )


def ensure_pad_token(tokenizer: Any) -> None:
    """Decoder-only tokenizers often lack a pad token: pad with EOS (labels mask it out)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise DataError(
                "The tokenizer has neither a pad nor an end-of-sequence token, so batches cannot "
                "be padded; give a tokenizer with an eos_token (or pad_token)."
            )
        tokenizer.pad_token = tokenizer.eos_token


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    max_length: int | None = None,
    decoder_only: bool,
    add_special_tokens: bool = True,
    **generate_kwargs: Any,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only), in the prompts' order."""
    if not prompts:
        return []
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    }
    kwargs.update(generate_kwargs)
    limit = max_length
    if decoder_only and max_length:
        limit = max(1, max_length - max_new_tokens)  # prompt + new tokens fit what it trained on

    def encode(chunk: list[str]) -> Any:
        enc = tokenizer(
            chunk,
            return_tensors="pt",
            padding=True,
            truncation=limit is not None,
            max_length=limit,
            add_special_tokens=add_special_tokens,
        )
        enc.pop("token_type_ids", None)
        return enc

    def decode(chunk: list[str], enc: Any, ids: Any) -> list[str]:
        if decoder_only:
            ids = ids[:, enc["input_ids"].shape[1] :]
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    side = tokenizer.padding_side
    try:
        if decoder_only:
            tokenizer.padding_side = "left"  # generation continues from the right end
        return predict_batches(
            model,
            prompts,
            encode=encode,
            decode=decode,
            batch_size=batch_size,
            run=lambda m, enc: m.generate(**enc, **kwargs),
        )
    finally:
        tokenizer.padding_side = side


def eval_callback(task: Any) -> Any:
    """A TrainerCallback that runs before nbtrain's event bridge at each evaluation.

    It adds perplexity (from ``eval_loss``) and whatever ``task.on_evaluate(model, metrics)``
    computes (generated samples, generation metrics) to the metrics dict the Trainer returns,
    so they reach the events and can pick the best checkpoint.
    """
    from transformers import TrainerCallback

    class _TaskEval(TrainerCallback):
        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any
        ) -> None:
            if metrics is None:
                return
            loss = metrics.get("eval_loss")
            if isinstance(loss, (int, float)) and getattr(task, "reports_perplexity", False):
                metrics["eval_perplexity"] = perplexity(float(loss))
            model = kw.get("model")
            if model is not None:
                extra = task.on_evaluate(model, kw.get("processing_class"), args) or {}
                metrics.update({f"eval_{k}": v for k, v in extra.items()})

    return _TaskEval()
