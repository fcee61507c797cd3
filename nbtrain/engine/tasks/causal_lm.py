"""Causal language modelling: continued pretraining on plain text, and SFT on instruction/chat data.

Data forms (columns, case-insensitive):

- ``messages``: chat conversations (lists of ``{"role", "content"}``), rendered with the
  tokenizer's chat template (or ``data.chat_template``);
- ``prompt`` + ``response`` (or ``instruction``, ``question``, ``input`` + ``completion``,
  ``answer``, ``output``): instruction pairs;
- ``data.text`` alone: plain text, packed into blocks of ``max_length`` (``data.packing``).

For instruction and chat data the loss covers the response tokens only (labels are -100
elsewhere) unless ``data.train_on: all``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nbtrain.engine.data import RawData
from nbtrain.engine.tasks._shared import (
    check_model_can,
    check_strings,
    ensure_pad_token,
    eval_callback,
    generate_texts,
    label_padding_collator,
    missing_columns,
    pick_column,
    with_eval,
)
from nbtrain.engine.tasks.base import Prepared, Task, map_tokens, register
from nbtrain.errors import DataError

PROMPT_COLUMNS = ("prompt", "instruction", "question", "input")
RESPONSE_COLUMNS = ("response", "completion", "answer", "output")
_CHAT, _INSTRUCTION, _TEXT = "chat", "instruction", "text"


def _columns_mode(columns: list[str], text: Any) -> str | None:
    lower = {c.lower() for c in columns}
    if "messages" in lower:
        return _CHAT
    if lower & set(PROMPT_COLUMNS) and lower & set(RESPONSE_COLUMNS):
        return _INSTRUCTION
    if isinstance(text, str) and text.lower() in lower:
        return _TEXT
    return None


@register
class CausalLM(Task):
    """``AutoModelForCausalLM`` with perplexity and generated samples at each evaluation."""

    name: ClassVar[str] = "causal-lm"
    auto_model_class: ClassVar[str] = "AutoModelForCausalLM"
    best_metric: ClassVar[tuple[str, bool]] = ("perplexity", False)
    reports_perplexity: ClassVar[bool] = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.mode: str | None = None
        self.tokenizer: Any = None
        self.max_length: int | None = None

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        mode = _columns_mode(columns, cfg.data.text)
        if mode in (_CHAT, _INSTRUCTION):
            return 3.0
        has_label = str(cfg.data.label).lower() in {c.lower() for c in columns}
        if mode == _TEXT and not has_label:
            if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
                return 2.0
        return 0.0

    # -- data ----------------------------------------------------------------------------------
    def prepare(self, raw: RawData) -> Prepared:
        self.mode = _columns_mode(list(raw.train.column_names), self.cfg.data.text)
        if self.mode is None:
            raise missing_columns(
                "causal-lm",
                "train",
                list(raw.train.column_names),
                "a 'messages' column (chat), 'prompt' and 'response' columns (instructions), "
                f"or a text column (data.text: {self.cfg.data.text!r})",
                "messages, prompt + response, or text",
            )
        train = self._canonical(raw.train, "train")
        eval_ds = self._canonical(raw.eval, "eval") if raw.eval is not None else None
        notices = [f"causal-lm data: {self._describe()}."]
        self.prepared = with_eval(train, eval_ds, self.cfg, notices)
        return self.prepared

    def _describe(self) -> str:
        if self.mode == _CHAT:
            return f"chat messages, loss on {self._train_on()} tokens"
        if self.mode == _INSTRUCTION:
            return f"prompt/response pairs, loss on {self._train_on()} tokens"
        return "plain text" + (", packed into blocks of max_length" if self._packing() else "")

    def _train_on(self) -> str:
        if self.cfg.data.train_on == "all":
            return "all"
        return "assistant" if self.mode == _CHAT else "response"

    def _packing(self) -> bool:
        return self.cfg.data.packing is not False

    def _canonical(self, ds: Any, role: str) -> Any:
        cols = list(ds.column_names)
        if self.mode == _CHAT:
            col = pick_column(ds, ("messages",))
            if col is None:
                raise missing_columns("causal-lm", role, cols, "a 'messages' column", "messages")
            ds = ds.select_columns([col]).rename_columns(
                {col: "messages"} if col != "messages" else {}
            )
            for i, conv in enumerate(ds["messages"][:1000]):
                if not isinstance(conv, list) or not all(
                    isinstance(m, dict) and "role" in m and "content" in m for m in conv
                ):
                    raise DataError(
                        f"{role} row {i}: 'messages' must be a list of {{'role', 'content'}} "
                        f"dicts (chat format); it is {str(conv)[:80]!r}."
                    )
            return ds
        if self.mode == _INSTRUCTION:
            p = pick_column(ds, PROMPT_COLUMNS)
            r = pick_column(ds, RESPONSE_COLUMNS)
            if p is None or r is None:
                raise missing_columns(
                    "causal-lm", role, cols, "'prompt' and 'response' columns", "prompt + response"
                )
            ds = ds.select_columns([p, r])
            tmp = {p: "__p", r: "__r"}
            ds = ds.rename_columns(tmp).rename_columns({"__p": "prompt", "__r": "response"})
            check_strings(ds, "prompt", role)
            check_strings(ds, "response", role)
            return ds
        col = pick_column(ds, (), self.cfg.data.text)
        if col is None:
            raise missing_columns(
                "causal-lm", role, cols, f"the text column {self.cfg.data.text!r}", "text"
            )
        ds = ds.select_columns([col])
        if col != "text":
            ds = ds.rename_columns({col: "text"})
        check_strings(ds, "text", role)
        return ds

    # -- model ---------------------------------------------------------------------------------
    def check_model_config(self, model_config: Any, model_name: str) -> None:
        check_model_can(self.name, model_config, model_name)

    # -- tokenization --------------------------------------------------------------------------
    def tokenize(self, ds: Any, tokenizer: Any, max_length: int) -> Any:
        self.tokenizer, self.max_length = tokenizer, max_length
        ensure_pad_token(tokenizer)
        if self.mode == _CHAT:
            self._check_template(tokenizer)
            fn = self._encode_chat
        elif self.mode == _INSTRUCTION:
            fn = self._encode_instruction
        else:
            fn = self._encode_packed if self._packing() else self._encode_text

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            out = fn(batch, tokenizer, max_length)
            out["length"] = [len(x) for x in out["input_ids"]]
            return out

        return map_tokens(ds, encode)

    def _check_template(self, tokenizer: Any) -> None:
        if self.cfg.data.chat_template:
            tokenizer.chat_template = self.cfg.data.chat_template
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                "The data has a 'messages' column (chat format), but the tokenizer has no chat "
                "template to turn conversations into text. Set data.chat_template: to a Jinja "
                "template, use the tokenizer of a chat/instruct model, or give 'prompt' and "
                "'response' columns instead."
            )

    def _encode_text(self, batch: dict[str, list[Any]], tok: Any, max_length: int) -> dict:
        enc = tok(batch["text"], truncation=True, max_length=max_length)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": [list(x) for x in enc["input_ids"]],
        }

    def _encode_packed(self, batch: dict[str, list[Any]], tok: Any, max_length: int) -> dict:
        eos = tok.eos_token_id
        stream: list[int] = []
        for ids in tok(batch["text"])["input_ids"]:
            stream.extend(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                stream.append(eos)  # documents stay apart inside a block
        blocks = [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
        blocks = [b for b in blocks if len(b) > 1]
        return {
            "input_ids": blocks,
            "attention_mask": [[1] * len(b) for b in blocks],
            "labels": [list(b) for b in blocks],
        }

    def _encode_instruction(self, batch: dict[str, list[Any]], tok: Any, max_length: int) -> dict:
        eos = tok.eos_token_id
        prompts = tok(batch["prompt"])["input_ids"]
        responses = tok(batch["response"], add_special_tokens=False)["input_ids"]
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for p, r in zip(prompts, responses):
            r = list(r) + ([eos] if eos is not None else [])
            if len(p) + len(r) > max_length:
                keep_r = min(len(r), max(max_length // 2, max_length - len(p)))
                r = r[:keep_r]
                p = p[len(p) - (max_length - keep_r) :] if max_length > keep_r else []
            ids = list(p) + r
            response_only = self.cfg.data.train_on == "response"
            labels = [-100] * len(p) + r if response_only else list(ids)
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
        return out

    def _encode_chat(self, batch: dict[str, list[Any]], tok: Any, max_length: int) -> dict:
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for conv in batch["messages"]:
            text, spans = self._render(conv, tok)
            enc = tok(
                text,
                add_special_tokens=False,  # the template writes its own special tokens
                return_offsets_mapping=True,
                truncation=True,
                max_length=max_length,
            )
            ids = enc["input_ids"]
            if self.cfg.data.train_on == "response":
                labels = [
                    t if any(s <= a < e for s, e in spans) else -100
                    for t, (a, _b) in zip(ids, enc["offset_mapping"])
                ]
            else:
                labels = list(ids)
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
        return out

    @staticmethod
    def _render(conv: list[dict[str, Any]], tok: Any) -> tuple[str, list[tuple[int, int]]]:
        """The conversation's text and the character spans of its assistant turns."""
        full = tok.apply_chat_template(conv, tokenize=False)
        spans = []
        for i, m in enumerate(conv):
            if m.get("role") != "assistant":
                continue
            try:
                before = (
                    tok.apply_chat_template(conv[:i], tokenize=False, add_generation_prompt=True)
                    if i
                    else ""
                )
            except Exception:
                before = ""
            upto = tok.apply_chat_template(conv[: i + 1], tokenize=False)
            if not (full.startswith(upto) and upto.startswith(before)):
                raise DataError(
                    "The chat template renders a conversation differently from its beginning, "
                    "so nbtrain cannot find the assistant turns to train on. Set "
                    "data.train_on: all, or use another chat template."
                )
            spans.append((len(before), len(upto)))
        return full, spans

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        return label_padding_collator(tokenizer, pad_to_multiple_of)

    # -- evaluation ----------------------------------------------------------------------------
    def callbacks(self) -> list[Any]:
        return [eval_callback(self)]

    def sample_prompts(self) -> tuple[list[Any], list[str]]:
        """(prompts, references) from the first eval rows, for the samples at each eval."""
        n = int(self.cfg.eval_samples or 0)
        ds = self.prepared.eval if self.prepared else None
        if not n or ds is None:
            return [], []
        rows = ds.select(range(min(n, len(ds))))
        if self.mode == _CHAT:
            prompts, refs = [], []
            for conv in rows["messages"]:
                last = max(
                    (i for i, m in enumerate(conv) if m["role"] == "assistant"), default=None
                )
                if last is None:
                    continue
                prompts.append(conv[:last])
                refs.append(conv[last]["content"])
            return prompts, refs
        if self.mode == _INSTRUCTION:
            return list(rows["prompt"]), list(rows["response"])
        prompts, refs = [], []
        for text in rows["text"]:
            words = text.split()
            cut = max(1, min(16, len(words) // 2))
            prompts.append(" ".join(words[:cut]))
            refs.append(" ".join(words[cut:]))
        return prompts, refs

    def on_evaluate(self, model: Any, tokenizer: Any, args: Any) -> dict[str, float]:
        prompts, refs = self.sample_prompts()
        tokenizer = tokenizer or self.tokenizer
        if not prompts or tokenizer is None:
            return {}
        outputs = self.generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=self.cfg.generation_max_new_tokens,
            batch_size=max(1, int(args.per_device_eval_batch_size or 8)),
        )
        self.last_details = {
            "samples": [
                {"prompt": _show(p), "output": o, "reference": r}
                | ({"messages": list(p)} if isinstance(p, list) else {})  # for the arena
                for p, o, r in zip(prompts, outputs, refs)
            ]
        }
        return {}

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
        """Greedy continuations; a prompt may be text or a list of chat messages."""
        items = [prompts] if isinstance(prompts, str) else list(prompts)
        if items and isinstance(items[0], dict):  # one conversation
            items = [items]
        chat = [isinstance(p, list) for p in items]
        if any(chat) and not getattr(tokenizer, "chat_template", None):
            raise DataError(
                "Chat messages need a tokenizer with a chat template; pass plain text prompts."
            )
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            if is_chat
            else str(p)
            for p, is_chat in zip(items, chat)
        ]
        ensure_pad_token(tokenizer)
        out: list[str] = [""] * len(texts)
        for flag in (False, True):  # templates carry their own special tokens
            idx = [i for i, c in enumerate(chat) if c == flag]
            gen = generate_texts(
                model,
                tokenizer,
                [texts[i] for i in idx],
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                max_length=max_length or self.max_length,
                decoder_only=True,
                add_special_tokens=not flag,
                **kw,
            )
            for i, g in zip(idx, gen):
                out[i] = g
        return out

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
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        if items and isinstance(items[0], dict):  # one conversation
            items = [items]
        new = max_new_tokens or getattr(self.cfg, "generation_max_new_tokens", 32)
        outs = self.generate(
            model,
            tokenizer,
            items,
            max_new_tokens=new,
            batch_size=batch_size,
            max_length=max_length,
        )
        return [{"prompt": _show(p), "generated": o} for p, o in zip(items, outs)]


def _show(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)
    return str(prompt)
