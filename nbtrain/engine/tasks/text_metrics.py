"""Metrics computed locally, with no downloads: exact match, ROUGE-L and entity F1.

ROUGE-L follows the ``rouge-score`` package (lower-cased alphanumeric tokens, F-measure of the
longest common subsequence) and entity F1 follows ``seqeval``'s default mode (IOB1/IOB2 chunks,
micro-averaged); the tests cross-check both against those packages when they are installed.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_TOKEN = re.compile(r"[a-z0-9]+")


def _rouge_tokens(text: str) -> list[str]:
    return _TOKEN.findall(re.sub(r"[^a-z0-9]+", " ", str(text).lower()))


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one prediction against one reference (0..1)."""
    pred, ref = _rouge_tokens(prediction), _rouge_tokens(reference)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return 2 * p * r / (p + r)


def _normalize(text: str) -> str:
    return " ".join(str(text).split()).lower()


def generation_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (whitespace- and case-insensitive) and mean ROUGE-L, both 0..1."""
    if not predictions:
        return {"exact_match": 0.0, "rougeL": 0.0}
    n = len(predictions)
    em = sum(_normalize(p) == _normalize(r) for p, r in zip(predictions, references)) / n
    rl = sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n
    return {"exact_match": float(em), "rougeL": float(rl)}


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end-exclusive) chunks of an IOB1/IOB2/IOBES tag sequence, seqeval-style."""
    out: list[tuple[str, int, int]] = []
    kind: str | None = None
    start = 0
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate([*tags, "O"]):
        tag = str(tag)
        prefix, _, typ = tag.partition("-") if "-" in tag else (tag, "", "")
        if tag in ("O", ""):
            prefix, typ = "O", ""
        ends = kind is not None and (
            prefix in ("O", "B", "S") or typ != prev_type or prev_prefix in ("E", "S")
        )
        if ends:
            out.append((kind, start, i))  # type: ignore[arg-type]
            kind = None
        begins = prefix in ("B", "S") or (
            prefix in ("I", "E") and (kind is None or typ != prev_type)
        )
        if prefix != "O" and begins:
            kind, start = typ, i
        prev_prefix, prev_type = prefix, typ
    return out


def entity_scores(
    true: list[list[str]], pred: list[list[str]]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Micro precision/recall/F1 over entity chunks, token accuracy, and per-type scores."""
    gold: set[tuple[int, str, int, int]] = set()
    found: set[tuple[int, str, int, int]] = set()
    correct_tokens = total_tokens = 0
    for n, (t, p) in enumerate(zip(true, pred)):
        gold.update((n, *e) for e in entities(t))
        found.update((n, *e) for e in entities(p))
        correct_tokens += sum(a == b for a, b in zip(t, p))
        total_tokens += len(t)
    hit = gold & found
    precision = len(hit) / len(found) if found else 0.0
    recall = len(hit) / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_type: dict[str, dict[str, float]] = {}
    g_by, f_by, h_by = (Counter(e[1] for e in s) for s in (gold, found, hit))
    for typ in sorted(set(g_by) | set(f_by)):
        tp_p = h_by[typ] / f_by[typ] if f_by[typ] else 0.0
        tp_r = h_by[typ] / g_by[typ] if g_by[typ] else 0.0
        per_type[typ] = {
            "precision": tp_p,
            "recall": tp_r,
            "f1": 2 * tp_p * tp_r / (tp_p + tp_r) if tp_p + tp_r else 0.0,
            "support": int(g_by[typ]),
        }
    scores = {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(correct_tokens / total_tokens) if total_tokens else 0.0,
    }
    return scores, {"per_entity": per_type}
