"""What the data holds, computed from the real tokenized splits: the data part of a dry run.

:func:`data_summary` turns a :class:`~nbtrain.engine.prepare.Prepared` into plain numbers
(:class:`DataSummary`): token lengths before truncation, what ``max_length`` cuts and a
``max_length`` covering 99 % of rows, class counts and imbalance, duplicates and leakage, junk
rows, and for language-model tasks the first example as trained (template applied, which tokens
carry loss). The dry run shows it; a training run writes it to ``env.json``. No HTML, no text:
renderers live in :mod:`nbtrain.display.report`.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from nbtrain.engine.datastats import (
    Duplicates,
    Junk,
    LabelStats,
    LengthStats,
    MaxLengthAdvice,
    duplicates,
    junk_rows,
    label_stats,
    length_stats,
    suggest_max_length,
)

#: Tokens shown in the label-mask preview.
PREVIEW_TOKENS = 160
#: A length so large that tokenizing with it truncates nothing.
_NO_LIMIT = 10**8


@dataclass(frozen=True)
class MaskPreview:
    """The first training example as the model sees it, and which tokens carry the loss."""

    text: str  # the rendered example (chat template applied for chat data)
    tokens: tuple[str, ...]
    trained: tuple[bool, ...]
    n_tokens: int
    n_trained: int


@dataclass
class DataSummary:
    """Numbers about the data of a run (JSON-able with :meth:`to_dict`)."""

    task: str
    max_length: int
    model_limit: int | None
    lengths: list[LengthStats] = field(default_factory=list)
    advice: MaxLengthAdvice | None = None
    packed: bool = False
    labels: LabelStats | None = None
    duplicates: Duplicates | None = None
    junk: list[Junk] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    preview: MaskPreview | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_summary(prep: Any) -> DataSummary:
    """Compute the data report of a prepared run (tokenizes only rows that were truncated)."""
    task, tok = prep.task, prep.tokenizer
    canon = task.prepared
    summary = DataSummary(
        task=task.name, max_length=prep.max_length, model_limit=_model_limit(prep)
    )
    summary.dropped = {k: list(v) for k, v in (prep.dropped or {}).items()}
    raw = {"train": canon.train if canon else None, "eval": canon.eval if canon else None}
    for role in ("train", "eval"):
        full = _untruncated(prep, raw[role], role)
        if full is None:
            if role == "train" and prep.lengths.get("train") is not None:
                summary.packed = True  # blocks of max_length: nothing is cut
                summary.lengths.append(length_stats(role, prep.lengths["train"], prep.max_length))
            continue
        summary.lengths.append(length_stats(role, full, prep.max_length))
        if role == "train":
            summary.advice = suggest_max_length(
                full,
                prep.max_length,
                summary.model_limit,
                multiple=8,
            )
    texts = {r: _texts(ds) for r, ds in raw.items() if ds is not None}
    if "train" in texts:
        summary.duplicates = duplicates(texts["train"], texts.get("eval"))
        special = set(getattr(tok, "all_special_ids", None) or [])
        ids = _aligned_ids(prep, len(texts["train"]))
        summary.junk.append(junk_rows("train", texts["train"], ids, special))
    if "eval" in texts:
        summary.junk.append(junk_rows("eval", texts["eval"], [], set()))
    if prep.labels and canon is not None and "label" in canon.train.column_names:
        splits = {"train": canon.train["label"]}
        if canon.eval is not None and "label" in canon.eval.column_names:
            splits["eval"] = canon.eval["label"]
        if all(isinstance(v, int) for v in splits["train"][:100]):
            summary.labels = label_stats(prep.labels, splits)
    if task.name in ("causal-lm", "seq2seq") and len(prep.train):
        with contextlib.suppress(Exception):  # a preview never blocks a report
            summary.preview = _preview(prep)
    return summary


def summary_for_env(prep: Any) -> dict[str, Any] | None:
    """:func:`data_summary` as JSON-able data for ``env.json``; None if it cannot be made."""
    try:
        summary = data_summary(prep).to_dict()
    except Exception:  # a summary problem must never stop a run from training
        return None
    summary.pop("preview", None)  # the full example is in the data, not the record
    return summary


def _model_limit(prep: Any) -> int | None:
    limits = []
    tok_max = getattr(prep.tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    pos = getattr(prep.model_config, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limits.append(pos)
    return min(limits) if limits else None


def _untruncated(prep: Any, raw: Any, role: str) -> list[int] | None:
    """Token lengths of ``raw``'s rows without truncation (None when rows were packed)."""
    trunc = prep.lengths.get(role)
    if raw is None or trunc is None or len(trunc) != len(raw):
        return None
    long_rows = [i for i, n in enumerate(trunc) if n >= prep.max_length]
    out = [int(n) for n in trunc]
    if not long_rows:
        return out
    task = prep.task
    kept = getattr(task, "max_length", None)  # tokenize() records it; put it back after
    try:
        full = task.tokenize(raw.select(long_rows), prep.tokenizer, _NO_LIMIT)["length"]
    finally:
        if hasattr(task, "max_length"):
            task.max_length = kept
    for i, n in zip(long_rows, full):
        out[i] = int(n)
    return out


def _texts(ds: Any) -> list[str]:
    """One string per row from every column but the label (what duplicates compare)."""
    cols = [c for c in ds.column_names if c != "label"]
    columns = [ds[c] for c in cols]
    return ["\n".join(v if isinstance(v, str) else repr(v) for v in row) for row in zip(*columns)]


def _aligned_ids(prep: Any, n_raw: int) -> list[list[int]]:
    """Tokenized train ``input_ids`` lined up with the task's rows (dropped rows left empty)."""
    if "input_ids" not in prep.train.column_names:
        return []
    ids = prep.train["input_ids"]
    dropped = set(prep.dropped.get("train", []))
    if len(ids) + len(dropped) != n_raw:
        return []  # packed blocks: no row-to-row mapping
    out: list[list[int]] = []
    it = iter(ids)
    for i in range(n_raw):
        out.append([-1] if i in dropped else list(next(it)))
    return out


def _preview(prep: Any) -> MaskPreview:
    tok = prep.tokenizer
    row = prep.train[0]
    ids = list(row["input_ids"])
    labels = row.get("labels")
    canon = prep.task.prepared.train
    dropped = set(prep.dropped.get("train", []))
    first = next(i for i in range(len(canon)) if i not in dropped)
    raw = canon[first]
    if prep.task.name == "seq2seq":
        src = tok.convert_ids_to_tokens(ids)
        tgt = tok.convert_ids_to_tokens([t for t in labels if t != -100])
        tokens = list(src) + ["→"] + list(tgt)
        trained = [False] * (len(src) + 1) + [True] * len(tgt)
        text = f"{raw.get('source')}\n→ {raw.get('target')}"
    else:
        tokens = list(tok.convert_ids_to_tokens(ids))
        # The causal shift: label i is predicted from the tokens before it; the first never is.
        trained = [i > 0 and int(t) != -100 for i, t in enumerate(labels or ids)]
        if "messages" in raw:
            text = tok.apply_chat_template(raw["messages"], tokenize=False)
        elif "prompt" in raw:
            text = f"{raw['prompt']}{raw['response']}"
        else:
            text = tok.decode(ids)
    return MaskPreview(
        text=str(text)[:4000],
        tokens=tuple(str(t) for t in tokens[:PREVIEW_TOKENS]),
        trained=tuple(trained[:PREVIEW_TOKENS]),
        n_tokens=len(tokens),
        n_trained=sum(trained),
    )


def longest_batch(prep: Any, precision: str) -> int | None:
    """Padded tokens per row of the longest training batch the run will see.

    Every batch is padded to its longest row (rounded up to 8 in mixed precision), and the
    batch holding the longest row exists with any sampler: that batch sets the peak.
    """
    lengths = prep.lengths.get("train")
    if not lengths:
        return None
    dropped = set(prep.dropped.get("train", []))
    longest = max((n for i, n in enumerate(lengths) if i not in dropped), default=0)
    if precision != "fp32":
        longest = -(-longest // 8) * 8
    return longest or None


def process_rss() -> int | None:
    """This process's resident memory now (Linux /proc, else psutil when installed)."""
    try:
        import os

        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    import importlib.util

    if importlib.util.find_spec("psutil") is None:
        return None
    import psutil

    return int(psutil.Process().memory_info().rss)


__all__ = [
    "DataSummary",
    "MaskPreview",
    "data_summary",
    "longest_batch",
    "process_rss",
    "summary_for_env",
]
