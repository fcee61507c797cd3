"""LoRA adapters via peft: wrap a loaded model from the ``lora:`` config section.

Only the adapters (and, for classification, the new head) train; the rest of the model stays
frozen. ``final/`` then holds the adapter (``adapter_config.json`` + ``adapter_model.safetensors``)
plus the base model's ``config.json`` (so the label maps survive), and :func:`load_adapter_model`
/ :func:`merge_adapter` turn it back into a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from nbtrain.config.training_fields import cache_file, write_cache
from nbtrain.errors import ConfigError

#: peft task type for each nbtrain task (masked-lm has none: a plain PeftModel).
TASK_TYPES = {
    "text-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "causal-lm": "CAUSAL_LM",
    "seq2seq": "SEQ_2_SEQ_LM",
    "masked-lm": None,
    "dpo": "CAUSAL_LM",
    "orpo": "CAUSAL_LM",
    "kto": "CAUSAL_LM",
    "grpo": "CAUSAL_LM",
}

#: ``target_modules: auto`` per ``config.model_type``: the attention projections.
AUTO_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "albert": ["query", "value"],
    "ernie": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "mpnet": ["q", "v"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "bloom": ["query_key_value"],
    "falcon": ["query_key_value"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "mbart": ["q_proj", "v_proj"],
    "marian": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "modernbert": ["Wqkv"],
}
_LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj"]
for _name in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "olmo"):
    AUTO_TARGETS[_name] = _LLAMA_STYLE

# Looked for in this order when the model type is unknown.
_FALLBACK_PATTERNS = (
    _LLAMA_STYLE,
    ["query", "value"],
    ["q_proj", "v_proj"],
    ["q", "v"],
    ["c_attn"],
    ["query_key_value"],
    ["qkv_proj"],
)

#: Head modules a classification model initialises fresh: they must train in full.
HEAD_NAMES = ("pre_classifier", "classifier", "score", "classification_head", "qa_outputs")


@lru_cache(maxsize=1)
def installed_lora_fields() -> dict[str, dict[str, Any]]:
    """``{name: {"type", "default", "help"}}`` for every field of peft's ``LoraConfig``, cached
    per peft version (``nbtrain.config.training_fields.installed_lora_fields`` reads the cache)."""
    try:
        version = metadata.version("peft")
    except metadata.PackageNotFoundError:
        return {}
    cache = cache_file(version, "lora")
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    from peft import LoraConfig

    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(LoraConfig):
        if not f.init or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        try:
            json.dumps(default)
        except TypeError:
            default = str(default)
        out[f.name] = {"type": str(f.type), "default": default, "help": f.metadata.get("help", "")}
    write_cache(cache, out)
    return out


def _peft_value(value: Any) -> Any:
    """peft enums (TaskType) as their names; YAML has no enums."""
    return getattr(value, "value", value)


def linear_layer_names(model: Any) -> list[str]:
    """Full names of the model's Linear layers (GPT-2's Conv1D counts as one)."""
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:  # pragma: no cover - every supported transformers has it
        pass
    return [name for name, mod in model.named_modules() if name and isinstance(mod, kinds)]


def short_linear_names(model: Any) -> list[str]:
    """The distinct last parts of the Linear layer names (what ``target_modules`` takes)."""
    return sorted({n.rsplit(".", 1)[-1] for n in linear_layer_names(model)})


def module_matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def resolve_target_modules(model: Any, target: Any) -> list[str]:
    """``auto`` -> the architecture's attention projections; a list -> checked against the model.

    Raises:
        ConfigError: a name matches no Linear layer, or ``auto`` knows nothing for this model.
    """
    linear = linear_layer_names(model)
    heads = set(head_modules(model))
    # The head trains in full; adapters inside it would be wrapped twice.
    body = [n for n in linear if n.split(".", 1)[0] not in heads]
    if target in (None, "auto", ["auto"]):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        candidates = [AUTO_TARGETS[model_type]] if model_type in AUTO_TARGETS else []
        candidates += list(_FALLBACK_PATTERNS)
        for names in candidates:
            found = [t for t in names if any(module_matches(n, t) for n in body)]
            if found:
                return found
        raise ConfigError(
            f"lora.target_modules: auto does not know the {model_type or 'this'} architecture. "
            f"List the layers to adapt, e.g. target_modules: [...]; its Linear layers are: "
            f"{', '.join(short_linear_names(model)) or 'none'}.",
            field="lora.target_modules",
        )
    names = [target] if isinstance(target, str) else list(target)
    missing = [t for t in names if not any(module_matches(n, t) for n in linear)]
    if missing:
        from nbtrain.errors import did_you_mean

        short = short_linear_names(model)
        raise ConfigError(
            f"lora.target_modules: {', '.join(repr(m) for m in missing)} matches no Linear layer "
            f"of this model.{did_you_mean(missing[0], short)} Its Linear layers are: "
            f"{', '.join(short)} (or use target_modules: auto).",
            field="lora.target_modules",
        )
    return names


def head_modules(model: Any, task_name: str | None = None) -> list[str]:
    """Top-level head modules of a classification model (``classifier``, ``score``, ...)."""
    if task_name is not None and TASK_TYPES.get(task_name) not in ("SEQ_CLS", "TOKEN_CLS"):
        return []
    children = dict(model.named_children())
    return [n for n in HEAD_NAMES if n in children]


def lora_config(model: Any, cfg: Any, task_name: str) -> Any:
    """The peft ``LoraConfig`` for ``model`` from ``cfg.lora``."""
    from peft import LoraConfig

    lc = cfg.lora
    targets = resolve_target_modules(model, lc.target_modules)
    to_save = list(lc.modules_to_save or [])
    for head in head_modules(model, task_name):
        if head not in to_save:
            to_save.append(head)
    children = dict(model.named_modules())
    unknown = [m for m in to_save if not any(module_matches(n, m) for n in children if n)]
    if unknown:
        raise ConfigError(
            f"lora.modules_to_save: {', '.join(repr(m) for m in unknown)} is not a module of "
            f"this model. Top-level modules: {', '.join(dict(model.named_children()))}.",
            field="lora.modules_to_save",
        )
    modules = dict(model.named_modules())
    conv1d = any(
        type(modules[n]).__name__ == "Conv1D"
        for n in modules
        if n and any(module_matches(n, t) for t in targets)
    )
    ours = TASK_TYPES.get(task_name)
    extra = dict(getattr(lc, "peft_args", None) or {})
    theirs = extra.pop("task_type", None)
    if theirs is not None and str(_peft_value(theirs)).upper() != ours:
        raise ConfigError(
            f"lora.task_type: {_peft_value(theirs)!r} does not fit the task {task_name!r}, which "
            f"uses {ours or 'no peft task type'}. Leave task_type out: nbtrain sets it from "
            "the task.",
            field="lora.task_type",
        )
    extra.setdefault("fan_in_fan_out", conv1d)  # GPT-2's Conv1D stores its weight transposed
    try:
        return LoraConfig(
            task_type=ours,
            r=int(lc.r),
            lora_alpha=int(lc.alpha) if float(lc.alpha).is_integer() else lc.alpha,
            lora_dropout=float(lc.dropout),
            target_modules=targets,
            bias=lc.bias,
            modules_to_save=to_save or None,
            **extra,
        )
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"peft's LoraConfig refused the lora: settings: {first}",
            field="lora",
        ) from None


def apply_lora(model: Any, cfg: Any, task: Any) -> Any:
    """Wrap ``model`` in LoRA adapters as ``cfg.lora`` says; returns the ``PeftModel``.

    Handles what peft needs around it: a k-bit base is prepared for training (QLoRA), and with
    gradient checkpointing the input embeddings' outputs require grad, so the checkpointed
    blocks see a tensor that needs a gradient although the embeddings are frozen.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if isinstance(model, PeftModel):
        raise ConfigError(
            "The model already carries peft adapters; leave out lora: to train them as they are, "
            "or pass the base model.",
            field="lora",
        )
    task_name = getattr(task, "name", task)
    peft_cfg = lora_config(model, cfg, task_name)
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(
        model, "is_loaded_in_8bit", False
    )
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=bool(cfg.gradient_checkpointing),
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    with _peft_quietly():
        return get_peft_model(model, peft_cfg)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def save_base_config(model: Any, folder: str | Path) -> None:
    """Write the base model's ``config.json`` (label maps, problem type) beside the adapter."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is not None:
        config.save_pretrained(str(folder))


def load_adapter_model(path: str | Path, auto_class: str = "AutoModel") -> Any:
    """Base model + the adapter in ``path`` (a ``PeftModel``), with the run's label maps."""
    import json

    import transformers
    from peft import PeftModel

    from nbtrain.engine.library_log import quiet_transformers
    from nbtrain.engine.model import resolve_model_name

    path = Path(path)
    base_name = json.loads((path / "adapter_config.json").read_text()).get(
        "base_model_name_or_path"
    )
    if not base_name:
        raise ConfigError(
            f"The adapter in {str(path)!r} does not name its base model; load the base model "
            "yourself and use peft.PeftModel.from_pretrained(base, path).",
        )
    source = resolve_model_name(base_name)
    cls = getattr(transformers, auto_class)
    kwargs: dict[str, Any] = {}
    if (path / "config.json").is_file():
        kwargs["config"] = transformers.AutoConfig.from_pretrained(str(path))
    try:
        with quiet_transformers():
            base = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"The adapter in {str(path)!r} needs its base model {base_name!r}, which could not "
            f"be loaded: {first[:200]}",
        ) from None
    with _peft_quietly():
        return PeftModel.from_pretrained(base, str(path))


@contextlib.contextmanager
def _peft_quietly() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` whenever it wraps a
    model: a FutureWarning in the user's cell on every LoRA run that is neither theirs nor ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        yield


def merge_adapter(path: str | Path, out: str | Path, auto_class: str = "AutoModel") -> Path:
    """Write base + adapter merged into one plain model (``from_pretrained`` loads it)."""
    out = Path(out)
    model = load_adapter_model(path, auto_class)
    merged = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    import sys

    sys.stdout.write(json.dumps(installed_lora_fields()) + "\n")
