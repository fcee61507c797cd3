"""Numbers about the data a run trains on: token lengths, truncation, labels, duplicates, junk.

Pure functions over plain lists (no torch, no datasets), so each one is tested on small
generated data with known answers. :mod:`nbtrain.engine.report` feeds them the real tokenized
splits; the same summary goes into a run's ``env.json`` (``"data"``) when it trains.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: Rows named in a finding (duplicates, masked rows, junk): enough to find them, not a dump.
SHOW_ROWS = 10
#: Classes whose largest/smallest count ratio reaches this are called imbalanced.
IMBALANCE_RATIO = 3.0


def percentile(values: Sequence[int], q: float) -> int:
    """The nearest-rank ``q``-th percentile (0-100) of ``values``: a value that occurs."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return int(ordered[min(rank, len(ordered)) - 1])


@dataclass(frozen=True)
class Histogram:
    """Counts of values in equal-width bins ``[edges[i], edges[i+1])`` (the last bin closed)."""

    edges: tuple[int, ...]
    counts: tuple[int, ...]


def histogram(values: Sequence[int], bins: int = 20, *, upto: int | None = None) -> Histogram:
    """Integer-edged bins from 0 to the largest value, or to ``upto`` (the max_length line)
    when that is at most twice the largest value (a far max_length would squash the bars)."""
    if not values:
        return Histogram((0, 1), (0,))
    top = max(max(values), upto if upto and upto <= 2 * max(values) else 0, 1)
    width = max(1, math.ceil((top + 1) / bins))
    n = math.ceil((top + 1) / width)
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int(v) // width)] += 1
    return Histogram(tuple(i * width for i in range(n + 1)), tuple(counts))


@dataclass(frozen=True)
class LengthStats:
    """Token lengths of one split, before truncation, and what ``max_length`` cuts."""

    split: str
    count: int
    p50: int
    p90: int
    p99: int
    max: int
    mean: float
    max_length: int
    truncated_rows: int
    tokens: int
    tokens_lost: int
    histogram: Histogram

    @property
    def lost_share(self) -> float:
        return self.tokens_lost / self.tokens if self.tokens else 0.0


def length_stats(split: str, lengths: Sequence[int], max_length: int) -> LengthStats:
    """Stats of untruncated ``lengths`` against ``max_length``."""
    lengths = [int(n) for n in lengths]
    tokens = sum(lengths)
    lost = sum(n - max_length for n in lengths if n > max_length)
    return LengthStats(
        split=split,
        count=len(lengths),
        p50=percentile(lengths, 50),
        p90=percentile(lengths, 90),
        p99=percentile(lengths, 99),
        max=max(lengths, default=0),
        mean=tokens / len(lengths) if lengths else 0.0,
        max_length=max_length,
        truncated_rows=sum(1 for n in lengths if n > max_length),
        tokens=tokens,
        tokens_lost=lost,
        histogram=histogram(lengths, upto=max_length),
    )


@dataclass(frozen=True)
class MaxLengthAdvice:
    """A ``max_length`` covering 99 % of training rows, and what it changes."""

    suggested: int
    current: int
    rows_truncated: int
    #: Tokens per epoch the model sees (after truncation), now and with ``suggested``.
    tokens_now: int
    tokens_suggested: int
    #: Padded tokens of the longest batch, now and with ``suggested`` (what memory follows).
    longest_batch_now: int
    longest_batch_suggested: int

    @property
    def change(self) -> str:
        if self.suggested == self.current:
            return "keep"
        return "raise" if self.suggested > self.current else "lower"


#: Lowering max_length is only worth suggesting when it saves this share of tokens per epoch
#: (batches are padded to their longest row, so a max_length above every row costs nothing).
WORTH_LOWERING = 0.10


def suggest_max_length(
    lengths: Sequence[int], current: int, limit: int | None, *, multiple: int = 8
) -> MaxLengthAdvice:
    """The p99 length rounded up to ``multiple`` (capped at the model's ``limit``).

    Raising is suggested when more than 1 % of rows are cut; lowering only when it saves at
    least :data:`WORTH_LOWERING` of the tokens or halves the longest batch; else keep.
    """
    p99 = percentile(lengths, 99)
    suggested = max(multiple, math.ceil(p99 / multiple) * multiple)
    if limit:
        suggested = min(suggested, limit)
    longest = max(lengths, default=0)
    if suggested > current and current >= p99:
        suggested = current  # 99 % of rows already fit
    if suggested < current:
        now = sum(min(n, current) for n in lengths)
        saved = now - sum(min(n, suggested) for n in lengths)
        halves = min(longest, current) >= 2 * min(longest, suggested)
        if not (now and saved / now >= WORTH_LOWERING) and not halves:
            suggested = current  # it already covers 99 % without waste worth a change
    return MaxLengthAdvice(
        suggested=suggested,
        current=current,
        rows_truncated=sum(1 for n in lengths if n > suggested),
        tokens_now=sum(min(n, current) for n in lengths),
        tokens_suggested=sum(min(n, suggested) for n in lengths),
        longest_batch_now=min(longest, current),
        longest_batch_suggested=min(longest, suggested),
    )


# -- labels -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelStats:
    """Class counts per split, imbalance and the weights ``class_weights: auto`` would use."""

    names: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> rows
    imbalance: float  # largest / smallest training class
    weights: tuple[float, ...]  # balanced weights, one per class (n / (k * count))
    unseen_in_train: dict[str, int] = field(default_factory=dict)  # eval label -> rows
    missing: dict[str, list[int]] = field(default_factory=dict)  # split -> rows without label

    @property
    def imbalanced(self) -> bool:
        return self.imbalance >= IMBALANCE_RATIO


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """sklearn's "balanced" weights: ``n / (k * count)``; a class never seen weighs 0."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts]


def label_stats(
    names: Sequence[str],
    splits: dict[str, Sequence[Any]],
    missing: dict[str, list[int]] | None = None,
) -> LabelStats:
    """Counts of each class name in each split (``splits`` holds label names or ids)."""

    def name(v: Any) -> str:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
            return names[v]
        return str(v)

    counts = {s: dict(Counter(name(v) for v in values)) for s, values in splits.items()}
    train = counts.get("train", {})
    per_class = [train.get(n, 0) for n in names]
    present = [c for c in per_class if c]
    imbalance = max(present) / min(present) if present else 1.0
    unseen = {label: c for label, c in counts.get("eval", {}).items() if label not in train}
    return LabelStats(
        names=tuple(names),
        counts={s: {n: c.get(n, 0) for n in names} | _extra(c, names) for s, c in counts.items()},
        imbalance=round(imbalance, 3),
        weights=tuple(balanced_weights(per_class)),
        unseen_in_train=unseen,
        missing={s: rows for s, rows in (missing or {}).items() if rows},
    )


def _extra(counts: dict[str, int], names: Sequence[str]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k not in names}


# -- duplicates and junk ----------------------------------------------------------------------


@dataclass(frozen=True)
class Duplicates:
    """Exact duplicate texts within train, and texts of eval rows that are also in train."""

    within_train: int  # rows that repeat an earlier training row
    within_train_examples: tuple[tuple[str, tuple[int, ...]], ...]
    train_eval: int  # eval rows whose text is in train
    train_eval_examples: tuple[tuple[str, int, int], ...]  # (text, train row, eval row)


def _key(text: Any) -> str:
    return text if isinstance(text, str) else repr(text)


def duplicates(train: Sequence[Any], eval_texts: Sequence[Any] | None = None) -> Duplicates:
    """Exact duplicates (the texts as they are: case and spaces count)."""
    first: dict[str, int] = {}
    groups: dict[str, list[int]] = {}
    repeats = 0
    for i, t in enumerate(train):
        k = _key(t)
        if k in first:
            repeats += 1
            groups.setdefault(k, [first[k]]).append(i)
        else:
            first[k] = i
    examples = tuple(
        (k, tuple(rows[:SHOW_ROWS]))
        for k, rows in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    )[:SHOW_ROWS]
    leaked = []
    for j, t in enumerate(eval_texts or ()):
        k = _key(t)
        if k in first:
            leaked.append((k, first[k], j))
    return Duplicates(
        within_train=repeats,
        within_train_examples=examples,
        train_eval=len(leaked),
        train_eval_examples=tuple(leaked[:SHOW_ROWS]),
    )


@dataclass(frozen=True)
class Junk:
    """Rows that teach nothing: empty or whitespace-only text, or only special tokens."""

    split: str
    empty: tuple[int, ...]
    special_only: tuple[int, ...]


def junk_rows(
    split: str, texts: Sequence[Any], token_ids: Sequence[Sequence[int]], special: set[int]
) -> Junk:
    """Empty/whitespace texts, and rows (aligned with ``texts``) whose tokens are all special."""
    empty = tuple(i for i, t in enumerate(texts) if isinstance(t, str) and not t.strip())
    empty_set = set(empty)
    special_only = tuple(
        i
        for i, ids in enumerate(token_ids)
        if i not in empty_set and all(int(t) in special for t in ids)
    )
    return Junk(split, empty, special_only)


# -- language-model labels --------------------------------------------------------------------


def untrained_rows(labels: Sequence[Sequence[int]], *, shift: bool) -> list[int]:
    """Rows whose labels train nothing: all -100 (after the causal shift when ``shift``)."""
    out = []
    for i, row in enumerate(labels):
        part = list(row)[1:] if shift else list(row)
        if all(int(x) == -100 for x in part):
            out.append(i)
    return out


def as_dict(obj: Any) -> Any:
    """A stats dataclass as JSON-able data."""
    return asdict(obj)


__all__ = [
    "Duplicates",
    "Histogram",
    "Junk",
    "LabelStats",
    "LengthStats",
    "MaxLengthAdvice",
    "balanced_weights",
    "duplicates",
    "histogram",
    "junk_rows",
    "label_stats",
    "length_stats",
    "percentile",
    "suggest_max_length",
    "untrained_rows",
]
