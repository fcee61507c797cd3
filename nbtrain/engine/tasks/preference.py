"""Post-training on TRL: preference tuning (``dpo``, ``orpo``, ``kto``); ``grpo`` lives in grpo.py.

TRL (``pip install 'nbtrain[post-training]'``) brings the trainers: each task names its Trainer and
config class (``DPOConfig`` etc. subclass ``TrainingArguments``), and the runner builds them through
the task hooks ``trainer_class`` / ``training_args_class`` / ``training_args`` /
``trainer_kwargs``. TRL tokenizes the text itself; :meth:`tokenize` here only measures lengths and
shows tokens for the dry run.

Data forms (columns, case-insensitive):

- dpo / orpo: ``prompt`` + ``chosen`` + ``rejected`` (text), or conversational (``chosen`` and
  ``rejected`` lists of ``{"role", "content"}`` messages, ``prompt`` optional), rendered with the
  tokenizer's chat template (or ``data.chat_template``);
- kto: ``prompt`` + ``completion`` + ``label`` (true: a desirable completion).

The reference model: with LoRA, the model with its adapter disabled (no second copy); without
LoRA, a frozen copy made once from the loaded model (ORPO needs none).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from nbtrain.engine.data import RawData
from nbtrain.engine.tasks._shared import (
    check_model_can,
    ensure_pad_token,
    eval_callback,
    missing_columns,
    pick_column,
    with_eval,
)
from nbtrain.engine.tasks.base import Prepared, map_tokens, register
from nbtrain.engine.tasks.causal_lm import CausalLM
from nbtrain.engine.tasks.trl_support import (
    accepted_kwargs,
    check_trl_args,
    load_trl,
    metrics_filter,
    nbtrain_trainer,
    require_trl,
)
from nbtrain.errors import DataError

PROMPT = ("prompt", "instruction", "question", "input")
COMPLETION = ("completion", "response", "answer", "output")


def show_prompt(prompt: Any) -> str:
    """A prompt as one text: chat turns as "role: content" lines."""
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)
    return str(prompt)


def with_messages(sample: dict[str, Any], prompt: Any) -> dict[str, Any]:
    """A sample with its chat prompt as messages too (``messages``), so the arena can give the
    same conversation to other models through their chat templates; ``prompt`` is for reading."""
    return {**sample, "messages": list(prompt)} if isinstance(prompt, list) else sample


def is_chat(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


class PostTraining(CausalLM):
    """Shared by the TRL tasks: a causal LM, TRL's trainer and config, samples at each eval."""

    post_training: ClassVar[bool] = True
    reports_perplexity: ClassVar[bool] = False
    best_metric: ClassVar[tuple[str, bool]] = ("loss", False)
    #: (module, class) of the TRL trainer and config
    trl_trainer: ClassVar[tuple[str, str]] = ("trl", "DPOTrainer")
    trl_config: ClassVar[tuple[str, str]] = ("trl", "DPOConfig")
    #: the task uses a reference model (DPO, KTO; ORPO does not)
    uses_reference: ClassVar[bool] = True
    #: canonical text columns handed to TRL
    columns: ClassVar[tuple[str, ...]] = ("prompt", "chosen", "rejected")
    #: train_sampling_strategy (KTO pairs each example with its neighbour for the KL estimate)
    sampling: ClassVar[str] = "random"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.chat = False

    # -- model ---------------------------------------------------------------------------------
    def check_model_config(self, model_config: Any, model_name: str) -> None:
        check_model_can("causal-lm", model_config, model_name)

    # -- data ----------------------------------------------------------------------------------
    def prepare(self, raw: RawData) -> Prepared:
        require_trl(self.name)
        train = self._canonical(raw.train, "train")
        eval_ds = self._canonical(raw.eval, "eval") if raw.eval is not None else None
        form = "conversations (chat template)" if self.chat else "text"
        notices = [f"{self.name} data: {', '.join(self.columns)} as {form}."]
        self.prepared = with_eval(train, eval_ds, self.cfg, notices)
        return self.prepared

    def _canonical(self, ds: Any, role: str) -> Any:
        cols = list(ds.column_names)
        picked = {}
        for name in self.columns:
            col = pick_column(ds, self._candidates(name), self._configured(name))
            if col is None and not (name == "prompt" and self._prompt_optional(ds)):
                raise missing_columns(
                    self.name, role, cols, self._wanted(), ", ".join(self.columns)
                )
            if col is not None:
                picked[col] = name
        ds = ds.select_columns(list(picked))
        tmp = {c: f"__{n}" for c, n in picked.items()}
        ds = ds.rename_columns(tmp).rename_columns({f"__{n}": n for n in picked.values()})
        self._check_values(ds, role)
        return ds

    def _candidates(self, name: str) -> tuple[str, ...]:
        return PROMPT if name == "prompt" else (name,)

    def _configured(self, name: str) -> Any:
        return None

    def _wanted(self) -> str:
        return (
            "'prompt', 'chosen' and 'rejected' columns (text, or chosen/rejected as chat messages)"
        )

    def _prompt_optional(self, ds: Any) -> bool:
        """Conversational preference data may carry the prompt inside chosen/rejected."""
        col = pick_column(ds, ("chosen",))
        return col is not None and len(ds) > 0 and is_chat(ds[0][col])

    def _check_values(self, ds: Any, role: str) -> None:
        sample = ds[0] if len(ds) else {}
        text_cols = [c for c in self.columns if c in ds.column_names and c != "label"]
        self.chat = any(is_chat(sample.get(c)) for c in text_cols)
        for c in text_cols:
            for i, v in enumerate(ds[c][:1000]):
                ok = is_chat(v) or (c == "prompt" and isinstance(v, list) and not v)
                if not (ok if self.chat else isinstance(v, str)):
                    want = "chat messages ({'role', 'content'} dicts)" if self.chat else "text"
                    raise DataError(
                        f"{role} row {i}: {c!r} must be {want} like the other rows; it is "
                        f"{str(v)[:80]!r}. Fill or drop such rows."
                    )

    # -- tokenization: for the dry run's report; TRL tokenizes the text itself -----------------
    def tokenize(self, ds: Any, tokenizer: Any, max_length: int) -> Any:
        self.tokenizer, self.max_length = tokenizer, max_length
        ensure_pad_token(tokenizer)
        if self.chat:
            self._check_template(tokenizer)

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            texts = [self._text(dict(zip(batch, row))) for row in zip(*batch.values())]
            ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
            out = {c: batch[c] for c in batch}
            out["input_ids"] = ids
            out["length"] = [len(x) for x in ids]
            return out

        return map_tokens(ds, encode)

    def _check_template(self, tokenizer: Any) -> None:
        if self.cfg.data.chat_template:
            tokenizer.chat_template = self.cfg.data.chat_template
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                f"The {self.name} data holds chat messages, but the tokenizer has no chat "
                "template to turn them into text. Set data.chat_template: to a Jinja template, "
                "use the tokenizer of a chat/instruct model, or give the columns as text."
            )

    def _text(self, row: dict[str, Any]) -> str:
        """Prompt and preferred completion as the model reads them."""
        second = row.get("chosen", row.get("completion"))
        if self.chat:
            conv = list(row.get("prompt") or []) + list(second or [])
            return self.tokenizer.apply_chat_template(conv, tokenize=False)
        return str(row.get("prompt") or "") + str(second or "")

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        return None  # TRL's trainers bring their own collators

    # -- the hooks the runner calls -------------------------------------------------------------
    def training_args_class(self) -> Any:
        return load_trl(*self.trl_config)

    def trainer_class(self) -> Any:
        return nbtrain_trainer(load_trl(*self.trl_trainer))

    def training_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().training_args(kwargs)
        kwargs.pop("remove_unused_columns", None)  # TRL picks the columns its collator reads
        kwargs.pop("length_column_name", None)
        if "train_sampling_strategy" in kwargs:
            kwargs["train_sampling_strategy"] = self.sampling  # TRL's datasets carry no lengths
        kwargs.pop("group_by_length", None)
        if self.max_length:
            kwargs["max_length"] = self.max_length
        if self.cfg.beta is not None:
            kwargs["beta"] = self.cfg.beta
        kwargs.update(self._task_args())
        if self.cfg.trl_args:  # the user's word last; checked against the installed TRL
            cls = self.training_args_class()
            kwargs.update(check_trl_args(self.cfg.trl_args, cls, self.name))
        return kwargs

    def _task_args(self) -> dict[str, Any]:
        return {}

    def trainer_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        for key in ("train_dataset", "eval_dataset"):
            ds = kwargs.get(key)
            if ds is not None:
                kwargs[key] = ds.select_columns(
                    [c for c in ds.column_names if c not in ("input_ids", "length")]
                )
        model = kwargs["model"]
        precompute = bool(self.cfg.trl_args.get("precompute_ref_log_probs"))
        if self.uses_reference and not hasattr(model, "peft_config") and not precompute:
            # Full fine-tuning: the reference is the model as loaded, frozen (TRL would load it
            # again from model.name_or_path, which an in-memory model does not have).
            ref = copy.deepcopy(model).eval()
            ref.requires_grad_(False)
            kwargs["ref_model"] = ref
        return accepted_kwargs(kwargs, self.trainer_class())

    # -- evaluation ------------------------------------------------------------------------------
    def callbacks(self) -> list[Any]:
        return [metrics_filter(), eval_callback(self)]

    def sample_prompts(self) -> tuple[list[Any], list[str]]:
        n = int(self.cfg.eval_samples or 0)
        ds = self.prepared.eval if self.prepared else None
        if not n or ds is None:
            return [], []
        self._sample_rows = rows = [ds[i] for i in range(min(n, len(ds)))]
        prompts = [self._prompt_of(r) for r in rows]
        return prompts, [self._shown(r.get("chosen", r.get("completion"))) for r in rows]

    def _prompt_of(self, row: dict[str, Any]) -> Any:
        prompt = row.get("prompt")
        if self.chat:
            if prompt:
                return list(prompt)
            conv = list(row.get("chosen") or [])  # implicit prompt: all but the last turn
            return conv[:-1]
        return str(prompt or "")

    def _shown(self, value: Any) -> str:
        if is_chat(value):
            return "\n".join(str(m.get("content")) for m in value if m.get("role") == "assistant")
        return str(value or "")

    def on_evaluate(self, model: Any, tokenizer: Any, args: Any) -> dict[str, float]:
        prompts, _refs = self.sample_prompts()
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
                with_messages(self._sample(row, prompt, out), prompt)
                for row, prompt, out in zip(self._sample_rows, prompts, outputs)
            ]
        }
        return {}

    def _sample(self, row: dict[str, Any], prompt: Any, output: str) -> dict[str, Any]:
        return {
            "prompt": show_prompt(prompt),
            "output": output,
            "chosen": self._shown(row.get("chosen")),
            "rejected": self._shown(row.get("rejected")),
        }


@register
class DPO(PostTraining):
    """Direct Preference Optimization (TRL ``DPOTrainer``): prompt, chosen, rejected."""

    name: ClassVar[str] = "dpo"

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        lower = {c.lower() for c in columns}
        return 4.0 if {"chosen", "rejected"} <= lower else 0.0


@register
class ORPO(PostTraining):
    """Odds-Ratio Preference Optimization (TRL ``ORPOTrainer``): SFT and preference in one loss,
    no reference model. Same data as dpo; chosen by ``task: orpo``."""

    name: ClassVar[str] = "orpo"
    trl_trainer: ClassVar[tuple[str, str]] = ("trl.experimental.orpo", "ORPOTrainer")
    trl_config: ClassVar[tuple[str, str]] = ("trl.experimental.orpo", "ORPOConfig")
    uses_reference: ClassVar[bool] = False


@register
class KTO(PostTraining):
    """Kahneman-Tversky Optimization (TRL ``KTOTrainer``): prompt, completion, label (good/bad)."""

    name: ClassVar[str] = "kto"
    trl_trainer: ClassVar[tuple[str, str]] = ("trl", "KTOTrainer")
    trl_config: ClassVar[tuple[str, str]] = ("trl", "KTOConfig")
    columns: ClassVar[tuple[str, ...]] = ("prompt", "completion", "label")
    sampling: ClassVar[str] = "sequential"

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        lower = {c.lower() for c in columns}
        label = str(cfg.data.label).lower()
        has_completion = bool(lower & set(COMPLETION))
        return 4.0 if "prompt" in lower and has_completion and label in lower else 0.0

    def _candidates(self, name: str) -> tuple[str, ...]:
        if name == "completion":
            return COMPLETION
        return super()._candidates(name)

    def _configured(self, name: str) -> Any:
        return self.cfg.data.label if name == "label" else None

    def _wanted(self) -> str:
        return f"'prompt', 'completion' and label ({self.cfg.data.label!r}) columns"

    def _prompt_optional(self, ds: Any) -> bool:
        return False

    def _check_values(self, ds: Any, role: str) -> None:
        super()._check_values(ds, role)
        labels = [_as_bool(v) for v in ds["label"]]
        bad = [i for i, v in enumerate(labels) if v is None]
        if bad:
            raise DataError(
                f"{role} row {bad[0]}: the kto label must say whether the completion is "
                f"desirable (true/false, 1/0, good/bad); it is {ds['label'][bad[0]]!r}."
            )
        if role == "train" and len(set(labels)) < 2:
            raise DataError(
                "kto needs both desirable (label true) and undesirable (label false) examples "
                f"in the train data; all {len(labels)} rows are {labels[0]}."
            )

    def _canonical(self, ds: Any, role: str) -> Any:
        ds = super()._canonical(ds, role)
        labels = [_as_bool(v) for v in ds["label"]]
        return ds.remove_columns("label").add_column("label", labels)

    def _sample(self, row: dict[str, Any], prompt: Any, output: str) -> dict[str, Any]:
        good = bool(row.get("label"))
        return {
            "prompt": show_prompt(prompt),
            "output": output,
            ("chosen" if good else "rejected"): self._shown(row.get("completion")),
        }


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1", "yes", "good", "desirable", "chosen"):
            return True
        if v in ("false", "0", "no", "bad", "undesirable", "rejected"):
            return False
    return None
