"""Before the Trainer exists: read the data, pick the task, load the tokenizer, tokenize.

Also what a dry run shows. Raises ConfigError/DataError; emits ``stage`` events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nbtrain.config import Config
from nbtrain.config.refs import describe, unwrap
from nbtrain.engine.library_log import no_progress_bars
from nbtrain.errors import ConfigError
from nbtrain.events import EventBus, Stage


@dataclass
class Prepared:
    """Everything needed to train, before the Trainer exists (also what a dry run shows)."""

    cfg: Config
    task: Any
    tokenizer: Any
    model_source: Any
    model_config: Any
    train: Any
    eval: Any
    max_length: int
    labels: list[str] | None
    notices: list[str]
    raw_train_rows: int
    #: Tokens per row as tokenized (truncated), in the order of the task's prepared rows.
    lengths: dict[str, list[int]] = field(default_factory=dict)
    #: Rows (of the task's prepared rows) dropped because no label token is left to train.
    dropped: dict[str, list[int]] = field(default_factory=dict)


def prepare(cfg: Config, bus: EventBus) -> Prepared:
    """Load data and tokenizer, pick the task, tokenize. Raises ConfigError/DataError."""
    from nbtrain.engine.data import load_raw
    from nbtrain.engine.model import load_pretrained_config, load_tokenizer, resolve_model_name
    from nbtrain.engine.tasks import get_task, infer_task

    with no_progress_bars("datasets"):
        bus.emit(Stage(name="load_data", status="start", detail=describe_source(cfg)))
        raw = load_raw(cfg.data, seed=cfg.seed)
        bus.emit(
            Stage(
                name="load_data",
                status="done",
                done=len(raw.train),
                total=len(raw.train),
                detail=f"{len(raw.train)} train rows"
                + (f", {len(raw.eval)} eval rows" if raw.eval is not None else ""),
            )
        )

        model_obj = unwrap(cfg.model)
        model_source = resolve_model_name(model_obj) if isinstance(model_obj, str) else model_obj
        if isinstance(model_source, str):
            model_config = load_pretrained_config(model_source, cfg)
        else:
            model_config = getattr(model_source, "config", None)
        archs = list(getattr(model_config, "architectures", None) or [])

        task_name = cfg.task or infer_task(list(raw.train.column_names), cfg, archs)
        task = get_task(task_name, cfg)
        prepared = task.prepare(raw)
        notices = list(prepared.notices)
        if cfg.task is None:
            notices.insert(0, f"Task inferred from the data: {task_name} (set task: to change).")
        if model_config is not None:
            task.check_model_config(model_config, str(describe_model(cfg)))

        tokenizer = load_tokenizer(cfg, model_source)
        max_length = _max_length(cfg, tokenizer, model_config)
        task.max_length = max_length  # predict truncates where training did
        total = len(prepared.train) + (len(prepared.eval) if prepared.eval is not None else 0)
        bus.emit(
            Stage(name="tokenize", status="start", total=total, detail=f"max_length {max_length}")
        )
        train_tok = task.tokenize(prepared.train, tokenizer, max_length)
        eval_tok = (
            task.tokenize(prepared.eval, tokenizer, max_length)
            if prepared.eval is not None
            else None
        )
        lengths = {
            role: list(ds["length"])
            for role, ds in (("train", train_tok), ("eval", eval_tok))
            if ds is not None and "length" in ds.column_names
        }
        dropped: dict[str, list[int]] = {}
        train_tok = _drop_untrained(train_tok, task.name, "train", dropped, notices, max_length)
        if eval_tok is not None:
            eval_tok = _drop_untrained(eval_tok, task.name, "eval", dropped, notices, max_length)
        if eval_tok is not None and "length" in eval_tok.column_names:
            # Sorted by length, evaluation batches carry almost no padding. The task keeps the
            # order so it can show the raw text of an evaluated row (example predictions).
            import numpy as np

            order = np.argsort(-np.asarray(eval_tok["length"]), kind="stable")
            eval_tok = eval_tok.select(order.tolist())
            task.eval_order = order.tolist()
        bus.emit(
            Stage(
                name="tokenize",
                status="done",
                done=total,
                total=total,
                detail=f"{_token_count(train_tok)} train tokens",
            )
        )
    return Prepared(
        cfg=cfg,
        task=task,
        tokenizer=tokenizer,
        model_source=model_source,
        model_config=model_config,
        train=train_tok,
        eval=eval_tok,
        max_length=max_length,
        labels=prepared.labels,
        notices=notices,
        raw_train_rows=len(raw.train),
        lengths=lengths,
        dropped=dropped,
    )


def _drop_untrained(
    ds: Any, task: str, role: str, dropped: dict[str, list[int]], notices: list[str], n: int
) -> Any:
    """Drop rows whose labels are all -100 (nothing to learn), saying so; refuse when none stay.

    Truncation can cut a chat's assistant turns or a response away entirely; such a row would
    add a loss of nothing (or NaN for a batch of them) and train silently on no tokens.
    """
    from nbtrain.engine.datastats import SHOW_ROWS, untrained_rows
    from nbtrain.errors import DataError

    if "labels" not in ds.column_names or not _is_list_feature(ds.features["labels"]):
        return ds
    rows = untrained_rows(ds["labels"], shift=task == "causal-lm")
    if not rows:
        return ds
    dropped[role] = rows
    named = ", ".join(map(str, rows[:SHOW_ROWS])) + (", ..." if len(rows) > SHOW_ROWS else "")
    if len(rows) == len(ds):
        raise DataError(
            f"Every {role} row has no token left to train on after truncation to max_length {n} "
            f"(all labels are -100; rows {named}). Raise data.max_length, shorten the prompts, "
            "or set data.train_on: all."
        )
    keep = sorted(set(range(len(ds))) - set(rows))
    notices.append(
        f"Dropped {len(rows)} {role} rows with no token left to train on after truncation to "
        f"max_length {n} (all labels -100): rows {named}. Raise data.max_length to keep them."
    )
    return ds.select(keep)


def _is_list_feature(feature: Any) -> bool:
    return type(feature).__name__ in ("Sequence", "List", "LargeList")


def describe_source(cfg: Config) -> str:
    from nbtrain.engine.data import describe_source as ds

    return ds(cfg.data.train)


def describe_model(cfg: Config) -> str:
    return cfg.model if isinstance(cfg.model, str) else describe(cfg.model)


def _max_length(cfg: Config, tokenizer: Any, model_config: Any) -> int:
    limits = [512]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    pos = getattr(model_config, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limits.append(pos)
    model_limit = min(limits[1:]) if len(limits) > 1 else None
    if cfg.data.max_length:
        if model_limit and cfg.data.max_length > model_limit:
            raise ConfigError(
                f"max_length: {cfg.data.max_length} is longer than the model takes "
                f"({model_limit} tokens); use at most {model_limit}.",
                field="data.max_length",
            )
        return cfg.data.max_length
    return min(limits)


def _token_count(ds: Any) -> int:
    if ds is None or "length" not in ds.column_names:
        return 0
    return int(sum(ds["length"]))


def steps_per_epoch(n_rows: int, cfg: Config, world_size: int = 1) -> int:
    batches = math.ceil(n_rows / (cfg.per_device_train_batch_size * world_size))
    return max(1, math.ceil(batches / cfg.gradient_accumulation_steps))


def total_steps(n_rows: int, cfg: Config, world_size: int = 1) -> int:
    if cfg.max_steps and cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(steps_per_epoch(n_rows, cfg, world_size) * cfg.num_train_epochs))


# ---------------------------------------------------------------------------------------------
