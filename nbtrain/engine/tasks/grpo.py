"""GRPO (TRL ``GRPOTrainer``): sample ``num_generations`` completions per prompt, score them with
the reward functions from the notebook, and push the policy toward the better ones.

Data: a ``prompt`` column (text, or chat messages); every other column reaches the reward
functions as a keyword argument (e.g. an ``answer`` to check against). ``reward:`` lists the
functions, each called as ``f(completions, prompts=..., **columns)`` (it may take only the
arguments it names) and returning one number per completion.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

from nbtrain.config.refs import unwrap
from nbtrain.engine.data import RawData
from nbtrain.engine.tasks._shared import missing_columns, pick_column
from nbtrain.engine.tasks.base import Prepared, register
from nbtrain.engine.tasks.preference import PROMPT, PostTraining, is_chat, show_prompt
from nbtrain.errors import ConfigError, DataError


@register
class GRPO(PostTraining):
    """Group Relative Policy Optimization with rule-based rewards."""

    name: ClassVar[str] = "grpo"
    trl_trainer: ClassVar[tuple[str, str]] = ("trl", "GRPOTrainer")
    trl_config: ClassVar[tuple[str, str]] = ("trl", "GRPOConfig")
    best_metric: ClassVar[tuple[str, bool]] = ("reward", True)
    columns: ClassVar[tuple[str, ...]] = ("prompt",)
    uses_reference: ClassVar[bool] = False  # beta is 0 by default; with beta > 0 TRL loads one

    @classmethod
    def detect(cls, columns: list[str], cfg: Any, architectures: list[str]) -> float:
        lower = {c.lower() for c in columns}
        return 5.0 if cfg.reward and lower & set(PROMPT) else 0.0

    def prepare(self, raw: RawData) -> Prepared:
        self.funcs = reward_functions(self.cfg.reward)
        return super().prepare(raw)

    def _canonical(self, ds: Any, role: str) -> Any:
        col = pick_column(ds, PROMPT)
        if col is None:
            raise missing_columns(
                "grpo", role, list(ds.column_names), "a 'prompt' column", "prompt"
            )
        if col != "prompt":
            ds = ds.rename_columns({col: "prompt"})  # other columns go to the rewards
        self._check_values(ds, role)
        return ds

    def _check_values(self, ds: Any, role: str) -> None:
        self.chat = len(ds) > 0 and is_chat(ds[0]["prompt"])
        for i, v in enumerate(ds["prompt"][:1000]):
            if not (is_chat(v) if self.chat else isinstance(v, str)):
                raise DataError(
                    f"{role} row {i}: 'prompt' must be {'chat messages' if self.chat else 'text'}"
                    f" like the other rows; it is {str(v)[:80]!r}."
                )

    def _text(self, row: dict[str, Any]) -> str:
        p = row.get("prompt")
        if self.chat:
            return self.tokenizer.apply_chat_template(
                list(p), tokenize=False, add_generation_prompt=True
            )
        return str(p)

    def _task_args(self) -> dict[str, Any]:
        cfg = self.cfg
        n = cfg.num_generations
        per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        if per_step % n:
            raise ConfigError(
                f"grpo: batch_size x gradient_accumulation_steps ({per_step}) must be a multiple "
                f"of num_generations ({n}): each prompt's {n} completions are compared in one "
                f"batch. Use e.g. batch_size: {max(n, per_step - per_step % n)}.",
                field="num_generations",
            )
        out: dict[str, Any] = {
            "num_generations": n,
            "max_completion_length": cfg.max_completion_length,
            "temperature": cfg.temperature,
        }
        eval_batch = cfg.per_device_eval_batch_size or 2 * cfg.per_device_train_batch_size
        if eval_batch % n:
            if cfg.per_device_eval_batch_size:
                raise ConfigError(
                    f"grpo: eval_batch_size ({eval_batch}) must be a multiple of num_generations "
                    f"({n}).",
                    field="per_device_eval_batch_size",
                )
            out["per_device_eval_batch_size"] = (eval_batch // n + 1) * n
        if cfg.reward_weights is not None:
            if len(cfg.reward_weights) != len(self.funcs):
                raise ConfigError(
                    f"reward_weights has {len(cfg.reward_weights)} numbers for "
                    f"{len(self.funcs)} reward functions; give one weight per function.",
                    field="reward_weights",
                )
            out["reward_weights"] = list(cfg.reward_weights)
        return out

    def trainer_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().trainer_kwargs(kwargs)
        kwargs["reward_funcs"] = list(self.funcs)
        return kwargs

    def training_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().training_args(kwargs)
        kwargs.pop("max_length", None)  # GRPO bounds the completion, not the whole text
        return kwargs

    def sample_prompts(self) -> tuple[list[Any], list[str]]:
        prompts, _ = super().sample_prompts()
        return prompts, [""] * len(prompts)

    def _prompt_of(self, row: dict[str, Any]) -> Any:
        return list(row["prompt"]) if self.chat else str(row["prompt"])

    def _sample(self, row: dict[str, Any], prompt: Any, output: str) -> dict[str, Any]:
        extra = {k: [v] for k, v in row.items() if k not in ("prompt", "input_ids", "length")}
        completion = [{"role": "assistant", "content": output}] if self.chat else output
        scores = {}
        for fn in self.funcs:
            try:
                value = fn(completions=[completion], prompts=[prompt], **extra)[0]
                scores[fn.__name__] = float(value) if value is not None else float("nan")
            except Exception as e:  # a sample's score is a view; training reports real errors
                scores[fn.__name__] = f"error: {type(e).__name__}"
        numbers = [v for v in scores.values() if isinstance(v, float)]
        return {
            "prompt": show_prompt(prompt),
            "output": output,
            "reward": sum(numbers) if numbers else None,
            "rewards": scores,
        }


def reward_functions(value: Any) -> list[Any]:
    """The configured reward functions, resolved and wrapped so each receives only the arguments
    it names (TRL passes prompts, completions, completion_ids, every column, trainer_state)."""
    items = [] if value is None else list(value)
    if not items:
        raise ConfigError(
            "task: grpo needs reward functions: reward: [{my_reward}] with "
            "def my_reward(completions, **kw): return [1.0 if ... else 0.0 for c in completions]",
            field="reward",
        )
    return [_only_named_args(_resolve(item)) for item in items]


def _resolve(item: Any) -> Any:
    fn = unwrap(item)
    if isinstance(fn, str):
        import importlib

        module, _, attr = fn.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(
                f"reward: cannot import {item!r} ({e}); write 'module:function' for a function "
                "Python can import, or {my_reward} for one defined in the notebook.",
                field="reward",
            ) from None
    if not callable(fn):
        raise ConfigError(f"reward: {item!r} is not a function.", field="reward")
    return fn


def _only_named_args(fn: Any) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn
    names = set(params)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **{k: v for k, v in kwargs.items() if k in names})

    return call
