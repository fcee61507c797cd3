"""Token classification (NER, POS): word-level tags aligned to sub-tokens, entity F1.

Data: a ``tokens`` column (lists of words) and a ``tags`` (or ``ner_tags``) column with one tag
per word, as strings (``B-PER``) or integer ids (names from a ``ClassLabel`` feature or
``data.label_names``). Only the first sub-token of each word carries its tag; continuation
pieces and special tokens get -100. Metrics are seqeval-style entity precision/recall/F1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from nbtrain.engine.data import RawData
from nbtrain.engine.tasks._shared import (
    check_model_can,
    missing_columns,
    pick_column,
    with_eval,
)
from nbtrain.engine.tasks.base import (
    Prepared,
    Task,
    map_tokens,
    predict_batches,
    register,
    unwrap_model,
)
from nbtrain.engine.tasks.classification import DropLength
from nbtrain.engine.tasks.text_metrics import entities, entity_scores
from nbtrain.errors import DataError

TOKEN_COLUMNS = ("tokens", "words")
TAG_COLUMNS = ("tags", "ner_tags", "pos_tags", "labels")


def _tag_order(tag: str) -> tuple[int, str, str]:
    if tag == "O":
        return (0, "", "")
    prefix, _, kind = tag.partition("-")
    return (1, kind, prefix) if kind else (1, tag, "")


@register
class TokenClassification(Task):
    """``AutoModelForTokenClassification`` with entity F1 (and token accuracy)."""

    name: ClassVar[str] = "token-classification"
    auto_model_class: ClassVar[str] = "AutoModelForTokenClassification"
    best_metric: ClassVar[tuple[str, bool]] = ("f1", True)

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        lower = {c.lower() for c in columns}
        if lower & set(TOKEN_COLUMNS) and lower & set(TAG_COLUMNS):
            return 3.0
        return 0.0

    # -- data ----------------------------------------------------------------------------------
    def prepare(self, raw: RawData) -> Prepared:
        train, names = self._canonical(raw.train, "train")
        labels = sorted({t for row in train["tags"] for t in row}, key=_tag_order)
        eval_ds = None
        if raw.eval is not None:
            eval_ds, _ = self._canonical(raw.eval, "eval", names)
            unknown = sorted({t for row in eval_ds["tags"] for t in row} - set(labels))
            if unknown:
                raise DataError(
                    f"The eval data has tags the training data does not: {', '.join(unknown)}. "
                    f"Known tags: {', '.join(labels)}."
                )
        notices = [
            f"{len(labels)} tags: {', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''}."
        ]
        self.prepared = with_eval(train, eval_ds, self.cfg, notices, labels=labels)
        return self.prepared

    def _canonical(self, ds: Any, role: str, names: list[str] | None = None) -> tuple[Any, Any]:
        tok_col = pick_column(ds, TOKEN_COLUMNS)
        tag_col = pick_column(ds, TAG_COLUMNS)
        if tok_col is None or tag_col is None:
            raise missing_columns(
                "token-classification",
                role,
                list(ds.column_names),
                "a 'tokens' column (lists of words) and a 'tags' column (one tag per word)",
                "tokens + tags (or ner_tags)",
            )
        if names is None:
            feature = ds.features[tag_col]
            inner = getattr(feature, "feature", None)
            names = list(getattr(inner, "names", None) or self.cfg.data.label_names or []) or None
        tokens, tags = ds[tok_col], ds[tag_col]
        out_tags = []
        for i, (words, row) in enumerate(zip(tokens, tags)):
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise DataError(
                    f"{role} row {i}: '{tok_col}' must be a list of words; it is {str(words)[:60]!r}."
                )
            if not isinstance(row, list) or len(row) != len(words):
                raise DataError(
                    f"{role} row {i} has {len(words)} words but "
                    f"{len(row) if isinstance(row, list) else 'no list of'} tags; give one tag "
                    "per word."
                )
            out_tags.append([self._name(t, names) for t in row])
        import datasets

        clean = datasets.Dataset.from_dict({"tokens": list(tokens), "tags": out_tags})
        return clean, names

    @staticmethod
    def _name(tag: Any, names: list[str] | None) -> str:
        if isinstance(tag, (int, np.integer)) and not isinstance(tag, bool) and names:
            if not 0 <= int(tag) < len(names):
                raise DataError(
                    f"Tag id {int(tag)} is out of range for the {len(names)} tag names "
                    f"({', '.join(names)})."
                )
            return names[int(tag)]
        return str(tag)

    # -- model ---------------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        labels = self.prepared.labels if self.prepared else []
        return {
            "num_labels": len(labels or []),
            "id2label": dict(enumerate(labels or [])),
            "label2id": {n: i for i, n in enumerate(labels or [])},
        }

    def check_model_config(self, model_config: Any, model_name: str) -> None:
        check_model_can(self.name, model_config, model_name)
        archs = getattr(model_config, "architectures", None) or []
        have = getattr(model_config, "num_labels", None)
        want = len(self.prepared.labels or []) if self.prepared else None
        if (
            any("ForTokenClassification" in a for a in archs)
            and have not in (None, want)
            and not self.cfg.ignore_mismatched_sizes
        ):
            raise DataError(
                f"The model {model_name!r} already has a token-classification head with {have} "
                f"tags; your data has {want}. Set ignore_mismatched_sizes: true to train a new "
                "head, or use a base model."
            )

    # -- tokenization --------------------------------------------------------------------------
    def tokenize(self, ds: Any, tokenizer: Any, max_length: int) -> Any:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(
                "token-classification needs a fast tokenizer (it maps sub-tokens back to words); "
                "this model only has a slow one."
            )
        ids = {n: i for i, n in enumerate(self.prepared.labels or [])}

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            enc = tokenizer(
                batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length
            )
            all_labels = []
            for i, tags in enumerate(batch["tags"]):
                labels, prev = [], None
                for w in enc.word_ids(i):
                    labels.append(-100 if w is None or w == prev else ids[tags[w]])
                    prev = w
                all_labels.append(labels)
            out = dict(enc)
            out["labels"] = all_labels
            out["length"] = [len(x) for x in enc["input_ids"]]
            return out

        return map_tokens(ds, encode)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DropLength(
            DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        )

    # -- metrics -------------------------------------------------------------------------------
    def compute_metrics(self) -> Any:
        names = list(self.prepared.labels or []) if self.prepared else []

        def metrics(eval_pred: Any) -> dict[str, float]:
            logits = eval_pred.predictions
            if isinstance(logits, tuple):
                logits = logits[0]
            preds = np.asarray(logits).argmax(-1)
            labels = np.asarray(eval_pred.label_ids)
            true, pred = [], []
            for p_row, l_row in zip(preds, labels):
                keep = l_row != -100
                true.append([names[i] for i in l_row[keep]])
                pred.append([names[i] for i in p_row[keep]])
            scores, details = entity_scores(true, pred)
            self.last_details = details
            return scores

        return metrics

    # -- inference -----------------------------------------------------------------------------
    def predict(
        self,
        model: Any,
        tokenizer: Any,
        inputs: Any,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> list[dict[str, Any]]:
        """Per-word tags and entity spans for texts (split on whitespace) or lists of words."""
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        # a text is split on whitespace; a list of words is taken as it is
        words_list = [t.split() if isinstance(t, str) else [str(w) for w in t] for t in items]
        id2label = {int(k): v for k, v in (unwrap_model(model).config.id2label or {}).items()}
        limit = max_length or self.max_length or 512

        def encode(chunk: list[list[str]]) -> Any:
            return tokenizer(
                chunk,
                is_split_into_words=True,
                truncation=True,
                max_length=limit,
                padding=True,
                return_tensors="pt",
            )

        def decode(chunk: list[list[str]], enc: Any, out: Any) -> list[dict[str, Any]]:
            probs = out.logits.float().cpu().softmax(-1)
            results = []
            for j, words in enumerate(chunk):
                tags: list[str] = ["O"] * len(words)
                scores: list[float] = [0.0] * len(words)
                seen = set()
                for pos, w in enumerate(enc.word_ids(j)):
                    if w is None or w in seen:
                        continue
                    seen.add(w)
                    best = int(probs[j, pos].argmax())
                    tags[w] = id2label.get(best, str(best))
                    scores[w] = float(probs[j, pos, best])
                ents = [
                    {"type": k, "text": " ".join(words[s:e]), "start": s, "end": e}
                    for k, s, e in entities(tags)
                ]
                results.append({"tokens": words, "tags": tags, "scores": scores, "entities": ents})
            return results

        return predict_batches(
            model, words_list, encode=encode, decode=decode, batch_size=batch_size
        )
