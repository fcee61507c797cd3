"""Sequence-to-sequence (T5, BART, ...): ``source`` -> ``target`` with generation at evaluation.

Each evaluation generates outputs for the eval rows (greedy, ``generation_max_new_tokens``) and
scores them with exact match and ROUGE-L, computed locally (``text_metrics``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from nbtrain.engine.data import RawData
from nbtrain.engine.tasks._shared import (
    check_model_can,
    check_strings,
    eval_callback,
    generate_texts,
    label_padding_collator,
    missing_columns,
    pick_column,
    with_eval,
)
from nbtrain.engine.tasks.base import Prepared, Task, map_tokens, register
from nbtrain.engine.tasks.text_metrics import generation_scores

SOURCE_COLUMNS = ("source", "document", "input")
TARGET_COLUMNS = ("target", "summary", "output")
#: Evaluation generates for at most this many eval rows (generation is slow).
MAX_GENERATED = 500


@register
class Seq2Seq(Task):
    """``AutoModelForSeq2SeqLM`` with exact match and ROUGE-L on generated outputs."""

    name: ClassVar[str] = "seq2seq"
    auto_model_class: ClassVar[str] = "AutoModelForSeq2SeqLM"
    best_metric: ClassVar[tuple[str, bool]] = ("rougeL", True)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.tokenizer: Any = None
        self.max_length: int | None = None

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        lower = {c.lower() for c in columns}
        if {"source", "target"} <= lower or {"document", "summary"} <= lower:
            return 3.0
        if lower & set(SOURCE_COLUMNS) and lower & set(TARGET_COLUMNS):
            if any("ConditionalGeneration" in a or "Seq2Seq" in a for a in architectures):
                return 3.5
        return 0.0

    def prepare(self, raw: RawData) -> Prepared:
        train = self._canonical(raw.train, "train")
        eval_ds = self._canonical(raw.eval, "eval") if raw.eval is not None else None
        self.prepared = with_eval(train, eval_ds, self.cfg)
        return self.prepared

    def _canonical(self, ds: Any, role: str) -> Any:
        s = pick_column(ds, SOURCE_COLUMNS)
        t = pick_column(ds, TARGET_COLUMNS)
        if s is None or t is None:
            raise missing_columns(
                "seq2seq",
                role,
                list(ds.column_names),
                "'source' and 'target' columns (or document/summary, input/output)",
                "source + target",
            )
        ds = ds.select_columns([s, t])
        ds = ds.rename_columns({s: "__s", t: "__t"}).rename_columns(
            {"__s": "source", "__t": "target"}
        )
        check_strings(ds, "source", role)
        check_strings(ds, "target", role)
        return ds

    def check_model_config(self, model_config: Any, model_name: str) -> None:
        check_model_can(self.name, model_config, model_name)

    def tokenize(self, ds: Any, tokenizer: Any, max_length: int) -> Any:
        self.tokenizer, self.max_length = tokenizer, max_length

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            enc = tokenizer(
                batch["source"],
                text_target=batch["target"],
                truncation=True,
                max_length=max_length,
            )
            out = dict(enc)
            out["length"] = [len(x) for x in enc["input_ids"]]
            return out

        return map_tokens(ds, encode)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        return label_padding_collator(tokenizer, pad_to_multiple_of)

    # -- evaluation ----------------------------------------------------------------------------
    def callbacks(self) -> list[Any]:
        return [eval_callback(self)]

    def on_evaluate(self, model: Any, tokenizer: Any, args: Any) -> dict[str, float]:
        ds = self.prepared.eval if self.prepared else None
        tokenizer = tokenizer or self.tokenizer
        if ds is None or tokenizer is None:
            return {}
        rows = ds.select(range(min(MAX_GENERATED, len(ds))))
        sources, targets = list(rows["source"]), list(rows["target"])
        outputs = self.generate(
            model,
            tokenizer,
            sources,
            max_new_tokens=self.cfg.generation_max_new_tokens,
            batch_size=max(1, int(args.per_device_eval_batch_size or 8)),
        )
        n = int(self.cfg.eval_samples or 0)
        self.last_details = {
            "samples": [
                {"prompt": s, "output": o, "reference": t}
                for s, o, t in list(zip(sources, outputs, targets))[:n]
            ]
        }
        return generation_scores(outputs, targets)

    # -- inference -----------------------------------------------------------------------------
    def generate(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Any,
        *,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        max_length: int | None = None,
        **kw: Any,
    ) -> list[str]:
        texts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        return generate_texts(
            model,
            tokenizer,
            texts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_length=max_length or self.max_length or 512,
            decoder_only=False,
            **kw,
        )

    def predict(
        self,
        model: Any,
        tokenizer: Any,
        inputs: Any,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[dict[str, Any]]:
        texts = [inputs] if isinstance(inputs, str) else [str(p) for p in inputs]
        new = max_new_tokens or getattr(self.cfg, "generation_max_new_tokens", 32)
        outs = self.generate(
            model,
            tokenizer,
            texts,
            max_new_tokens=new,
            batch_size=batch_size,
            max_length=max_length,
        )
        return [{"source": s, "generated": o} for s, o in zip(texts, outs)]
