"""Masked language modelling (domain adaptation of BERT-style encoders) with perplexity.

Texts come from ``data.text``; each is truncated to ``max_length`` or, with ``data.packing:
true``, all are concatenated and cut into blocks of ``max_length``. Masking happens in the
collator (``DataCollatorForLanguageModeling``), so every epoch masks different tokens.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nbtrain.engine.data import RawData
from nbtrain.engine.tasks._shared import (
    check_model_can,
    check_strings,
    eval_callback,
    missing_columns,
    pick_column,
    with_eval,
)
from nbtrain.engine.tasks.base import Prepared, Task, map_tokens, predict_batches, register
from nbtrain.engine.tasks.classification import DropLength
from nbtrain.errors import DataError


@register
class MaskedLM(Task):
    """``AutoModelForMaskedLM``; ``predict`` fills ``[MASK]`` tokens."""

    name: ClassVar[str] = "masked-lm"
    auto_model_class: ClassVar[str] = "AutoModelForMaskedLM"
    best_metric: ClassVar[tuple[str, bool]] = ("perplexity", False)
    reports_perplexity: ClassVar[bool] = True

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        lower = {c.lower() for c in columns}
        text = str(cfg.data.text).lower()
        if text not in lower or str(cfg.data.label).lower() in lower:
            return 0.0
        return 2.0 if any(a.endswith("ForMaskedLM") for a in architectures) else 0.0

    def prepare(self, raw: RawData) -> Prepared:
        train = self._canonical(raw.train, "train")
        eval_ds = self._canonical(raw.eval, "eval") if raw.eval is not None else None
        self.prepared = with_eval(train, eval_ds, self.cfg)
        return self.prepared

    def _canonical(self, ds: Any, role: str) -> Any:
        col = pick_column(ds, (), self.cfg.data.text)
        if col is None:
            raise missing_columns(
                "masked-lm",
                role,
                list(ds.column_names),
                f"a text column (data.text: {self.cfg.data.text!r})",
                "a text column, or set data.text to the column holding it",
            )
        ds = ds.select_columns([col])
        if col != "text":
            ds = ds.rename_columns({col: "text"})
        check_strings(ds, "text", role)
        return ds

    def check_model_config(self, model_config: Any, model_name: str) -> None:
        check_model_can(self.name, model_config, model_name)

    def tokenize(self, ds: Any, tokenizer: Any, max_length: int) -> Any:
        if tokenizer.mask_token_id is None:
            raise DataError(
                "masked-lm needs a tokenizer with a mask token (like BERT's [MASK]); this one "
                "has none. Use a masked-LM model's tokenizer, or task: causal-lm."
            )
        packing = bool(self.cfg.data.packing)

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            enc = tokenizer(
                batch["text"],
                truncation=not packing,
                max_length=None if packing else max_length,
                return_special_tokens_mask=True,
            )
            if packing:
                # Concatenate whole encodings (with their [CLS]/[SEP]) and cut into blocks.
                packed = {}
                for key, rows in enc.items():
                    flat = [t for row in rows for t in row]
                    packed[key] = [
                        flat[i : i + max_length] for i in range(0, len(flat), max_length)
                    ]
                enc = packed
            out = dict(enc)
            out["length"] = [len(x) for x in enc["input_ids"]]
            return out

        return map_tokens(ds, encode)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        from transformers import DataCollatorForLanguageModeling

        return DropLength(
            DataCollatorForLanguageModeling(
                tokenizer,
                mlm=True,
                mlm_probability=self.cfg.data.mlm_probability,
                pad_to_multiple_of=pad_to_multiple_of,
            )
        )

    def callbacks(self) -> list[Any]:
        return [eval_callback(self)]

    def on_evaluate(self, model: Any, tokenizer: Any, args: Any) -> dict[str, float]:
        return {}

    def predict(
        self,
        model: Any,
        tokenizer: Any,
        inputs: Any,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        top_k: int = 5,
    ) -> list[dict[str, Any]]:
        """For each text, the top-k tokens at every mask position (``[MASK]`` in the text)."""
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
        mask = tokenizer.mask_token
        if any(mask not in t for t in texts):
            raise DataError(f"Each text needs at least one {mask} token to fill in.")
        limit = max_length or self.max_length or 512

        def encode(chunk: list[str]) -> Any:
            return tokenizer(
                chunk, return_tensors="pt", padding=True, truncation=True, max_length=limit
            )

        def decode(chunk: list[str], enc: Any, out: Any) -> list[dict[str, Any]]:
            probs = out.logits.float().softmax(-1).cpu()
            results = []
            for row, text, ids in zip(probs, chunk, enc["input_ids"].cpu()):
                masks = []
                for pos in (ids == tokenizer.mask_token_id).nonzero().flatten().tolist():
                    p, idx = row[pos].topk(top_k)
                    masks.append(
                        [
                            {"token": tokenizer.decode([int(i)]).strip(), "score": float(s)}
                            for s, i in zip(p, idx)
                        ]
                    )
                results.append({"text": text, "masks": masks})
            return results

        return predict_batches(model, texts, encode=encode, decode=decode, batch_size=batch_size)
