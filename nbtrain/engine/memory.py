"""Will it fit? Parameter counts and a peak-memory estimate for a config on a device.

The estimate adds up what training holds at its peak:

- weights: every parameter in fp32 (mixed precision keeps fp32 master weights and caches a
  16-bit copy of the matmul weights for the step); a 4/8-bit base stores its Linear weights in
  0.5/1 byte;
- gradients: 4 bytes per trainable parameter;
- optimizer state: AdamW 8 bytes per trainable parameter, 8-bit AdamW 2, Adafactor its
  factored row/column statistics, SGD none;
- activations kept for the backward pass, per layer and token (Korthikanti et al. 2022,
  "Reducing Activation Recomputation in Large Transformer Models", counted for the Hugging
  Face layers): ``10h + 2i`` values plus ``2h`` bytes of dropout masks, and ``3a*s`` attention
  values per token where the attention matrix is materialised; with gradient checkpointing only each layer's input plus one layer;
- workspace: allocator slack and autograd scratch (10% + 64 MB on a GPU, 128 MB on a CPU);
- runtime: the CUDA context on a GPU; on a CPU the Python process with torch and transformers
  loaded (``model_bytes`` leaves it out: compare that with the memory a run *adds*).

Parameter counts are exact: the model is built on the ``meta`` device (no memory, no
download beyond its config) and LoRA adapters are counted layer by layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

GiB = 2**30

#: Optimizer state bytes per trainable parameter (Adafactor is computed from shapes).
_OPTIM_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "adamw_hf": 8,
    "adamw_8bit": 2,
    "adamw_bnb_8bit": 2,
    "paged_adamw_8bit": 2,
    "paged_adamw_32bit": 8,
    "lion_8bit": 1,
    "lion_32bit": 4,
    "paged_lion_8bit": 1,
    "sgd": 0,
    "adagrad": 4,
    "rmsprop": 4,
}
_CPU_RUNTIME = int(0.6 * GiB)  # python + torch + transformers + datasets, before the model
# What a CPU training step holds beyond tensors (autograd engine, oneDNN scratch, malloc
# arenas): measured at 125-135 MB over models of 11M and 41M parameters (bench/memory_cpu.py).
_CPU_WORKSPACE = 128 * 2**20
_CUDA_CONTEXT = int(0.5 * GiB)


@dataclass(frozen=True)
class Option:
    """One change to the config, with its estimated peak memory."""

    change: str
    overrides: dict[str, Any]
    total_bytes: int
    fits: bool


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory of a config on a device, by part (bytes)."""

    params_total: int
    params_trainable: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int
    overhead: int
    device: str
    device_kind: str
    device_bytes: int | None
    batch_size: int
    max_length: int
    precision: str
    notes: tuple[str, ...] = ()
    options: tuple[Option, ...] = field(default_factory=tuple)
    #: Where ``max_length`` (the activations' tokens per row) came from: "max_length" (every
    #: row that long) or "longest batch" (the longest batch the data gives).
    length_source: str = "max_length"

    @property
    def model_bytes(self) -> int:
        """What the training itself allocates (everything but the fixed overhead)."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.workspace

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.overhead

    @property
    def fits(self) -> bool | None:
        """True/False against the device's memory; None when that is unknown."""
        if not self.device_bytes:
            return None
        return self.total_bytes <= self.device_bytes

    @property
    def trainable_share(self) -> float:
        return self.params_trainable / self.params_total if self.params_total else 0.0

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer state", self.optimizer),
            (
                f"activations (batch {self.batch_size} x {self.max_length} tokens"
                + (", longest batch)" if self.length_source == "longest batch" else ")"),
                self.activations,
            ),
            ("workspace (allocator, autograd)", self.workspace),
            (
                "runtime (CUDA context)"
                if self.device_kind == "cuda"
                else "runtime (Python, torch)",
                self.overhead,
            ),
        ]


# -- parameters -------------------------------------------------------------------------------


@dataclass
class _Linear:
    name: str
    fan_in: int
    fan_out: int
    bias: int


@dataclass
class ParamInfo:
    """Shapes of a model that matter for the estimate."""

    total: int
    linears: list[_Linear]
    shapes: list[tuple[str, tuple[int, ...]]]
    heads: list[str]


def param_info(model: Any, task_name: str | None = None) -> ParamInfo:
    """Counts and Linear-layer shapes of a real or meta-device model."""
    from nbtrain.engine.lora import head_modules, linear_layer_names

    modules = dict(model.named_modules())
    linears = []
    for name in linear_layer_names(model):
        w = modules[name].weight
        if type(modules[name]).__name__ == "Conv1D":  # GPT-2 stores (in, out)
            fan_in, fan_out = w.shape[0], w.shape[1]
        else:
            fan_in, fan_out = w.shape[1], w.shape[0]
        b = getattr(modules[name], "bias", None)
        linears.append(
            _Linear(name, int(fan_in), int(fan_out), int(b.numel()) if b is not None else 0)
        )
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    total = sum(math.prod(s) for _, s in shapes)
    return ParamInfo(total, linears, shapes, head_modules(model, task_name))


def meta_model(model_config: Any, auto_class: str = "AutoModel") -> Any:
    """The model built on the meta device: real shapes, no memory, no weights."""
    import torch
    import transformers

    from nbtrain.engine.library_log import quiet_transformers

    cls = getattr(transformers, auto_class)
    with quiet_transformers(), torch.device("meta"):
        return cls.from_config(model_config)


def _task_auto_class(task_name: str | None) -> str:
    from nbtrain.engine.tasks import registry

    reg = registry()
    return reg[task_name].auto_model_class if task_name in reg else "AutoModel"


def trainable_params(
    info: ParamInfo, model: Any, cfg: Any
) -> tuple[int, int, list[tuple[int, ...]]]:
    """(total, trainable, trainable shapes) after the config's LoRA wrapping, if any."""
    if cfg.lora is None:
        return info.total, info.total, [s for _, s in info.shapes]
    from nbtrain.engine.lora import module_matches, resolve_target_modules

    targets = resolve_target_modules(model, cfg.lora.target_modules)
    r = int(cfg.lora.r)
    shapes: list[tuple[int, ...]] = []
    for lin in info.linears:
        if lin.name.split(".", 1)[0] in info.heads:
            continue
        if any(module_matches(lin.name, t) for t in targets):
            shapes += [(r, lin.fan_in), (lin.fan_out, r)]
            if cfg.lora.bias == "lora_only" and lin.bias:
                shapes.append((lin.bias,))
    if cfg.lora.bias == "all":
        shapes += [s for n, s in info.shapes if n.endswith(".bias")]
    to_save = list(info.heads) + list(cfg.lora.modules_to_save or [])
    # modules_to_save are copied: the copy trains, the original stays (and counts in total).
    head_shapes = [
        s for n, s in info.shapes if any(n.startswith(m + ".") or f".{m}." in n for m in to_save)
    ]
    adapters = sum(math.prod(s) for s in shapes)
    heads = sum(math.prod(s) for s in head_shapes)
    return info.total + adapters + heads, adapters + heads, shapes + head_shapes


# -- the estimate -----------------------------------------------------------------------------


def _arch(model_config: Any) -> dict[str, Any]:
    def get(*names: str, default: Any = None) -> Any:
        for n in names:
            v = getattr(model_config, n, None)
            if isinstance(v, int) and v > 0:
                return v
        return default

    h = get("hidden_size", "n_embd", "d_model", "dim", default=768)
    enc = get("num_hidden_layers", "n_layer", "num_layers", "n_layers", default=12)
    dec = (
        get("num_decoder_layers", default=enc)
        if getattr(model_config, "is_encoder_decoder", False)
        else 0
    )
    return {
        "h": h,
        "layers": enc,
        "decoder_layers": dec,
        "heads": get("num_attention_heads", "n_head", "num_heads", "n_heads", default=12),
        "inter": get(
            "intermediate_size", "n_inner", "d_ff", "hidden_dim", "ffn_dim", default=4 * h
        ),
        "vocab": get("vocab_size", default=30000),
        "attn": getattr(model_config, "_attn_implementation", None) or "sdpa",
    }


def _activations(
    cfg: Any, arch: dict[str, Any], b: int, s: int, dtype_bytes: int, lm: bool, device_kind: str
) -> int:
    h, i, a = arch["h"], arch["inter"], arch["heads"]
    tokens = b * s
    per_layer = tokens * ((10 * h + 2 * i) * dtype_bytes + 2 * h)
    # The attention matrix (softmax output, its dropout output and mask) is kept where it is
    # materialised: eager attention, or sdpa's math path, which CPU training takes.
    if arch["attn"] == "eager" or device_kind != "cuda":
        per_layer += b * a * s * s * (3 * dtype_bytes + 1)  # scores, probs, dropout
    if cfg.lora is not None and float(cfg.lora.dropout) > 0:
        per_layer += tokens * h * (dtype_bytes + 1) * 2  # dropout on two adapted inputs
    layers = arch["layers"] + 1.5 * arch["decoder_layers"]  # + cross-attention
    if cfg.gradient_checkpointing:
        # Layer inputs, plus, while one layer runs backward: its recomputed activations, their
        # gradients and (on CPU, where malloc keeps them) the previous layer's freed buffers.
        held = 3 if device_kind != "cuda" else 2
        acts = layers * tokens * h * dtype_bytes + held * per_layer
    else:
        acts = layers * per_layer
    acts += tokens * h * (3 * dtype_bytes + 1)  # embeddings, their LayerNorm and dropout
    if lm:  # logits, their fp32 upcast for the loss, and its gradient
        acts += tokens * arch["vocab"] * (dtype_bytes + 8)
    return int(acts)


def _optimizer_bytes(optim: str, trainable: int, shapes: list[tuple[int, ...]]) -> int:
    if optim == "adafactor":
        return sum(4 * (s[0] + s[1]) if len(s) == 2 else 4 * math.prod(s) for s in shapes)
    return _OPTIM_BYTES.get(optim, 8) * trainable


def estimate_memory(
    cfg: Any,
    model_config: Any = None,
    device: Any = None,
    *,
    task: str | None = None,
    max_length: int | None = None,
    model: Any = None,
    suggest: bool = True,
    longest_batch: int | None = None,
    runtime_bytes: int | None = None,
) -> MemoryEstimate:
    """Estimate the peak memory of training ``cfg`` on ``device``.

    Args:
        cfg: the resolved :class:`~nbtrain.config.Config`.
        model_config: the model's ``PretrainedConfig`` (used to build a meta-device copy).
        device: a :class:`~nbtrain.engine.model.DeviceInfo` (default: this machine's).
        task: the task name (picks the model class; default ``cfg.task``).
        max_length: tokens per example (default ``cfg.data.max_length`` or 512).
        model: a real model instead of ``model_config`` (parameters counted from it).
        suggest: add the cheapest changes that make it fit (or use less memory).
        longest_batch: tokens per row of the longest batch the data gives (padded); used for
            the activations instead of ``max_length`` for every row.
        runtime_bytes: on a CPU, the process's memory before the model loads (measured by the
            caller) instead of the typical 0.6 GiB.
    """
    from nbtrain.engine.model import device_info, resolve_precision

    if model is None and model_config is None:
        from nbtrain.errors import ConfigError

        raise ConfigError(
            "estimate_memory needs the model's config (model_config=) or the model (model=); "
            "nbtrain.estimate_memory(config, device) loads it from the config's model: key."
        )
    dev = device or device_info()
    task = task or getattr(cfg, "task", None) or "text-classification"
    if model is None:
        model = meta_model(model_config, _task_auto_class(task))
    if model_config is None:
        model_config = getattr(model, "config", None)
    info = param_info(model, task)
    est = _estimate(
        cfg,
        info,
        model,
        model_config,
        dev,
        task,
        longest_batch or max_length,
        suggest,
        resolve_precision,
        runtime_bytes,
    )
    if longest_batch:
        note = (
            f"Activations at the longest batch the data gives ({est.batch_size} rows x "
            f"{est.max_length} tokens, padded), not max_length for every row."
        )
        est = dataclasses.replace(est, length_source="longest batch", notes=(note, *est.notes[1:]))
    return est


def _estimate(
    cfg, info, model, model_config, dev, task, max_length, suggest, resolve_precision, runtime=None
) -> MemoryEstimate:
    try:
        precision = resolve_precision(cfg.precision, dev, model_config)
    except Exception:  # an impossible precision is its own error; estimate as auto would
        precision = resolve_precision("auto", dev, model_config)
    half = precision in ("fp16", "bf16")
    dtype_bytes = 2 if half else 4
    total, trainable, train_shapes = trainable_params(info, model, cfg)
    notes: list[str] = []

    quant = getattr(cfg, "quantization", "none") or "none"
    linear_w = sum(
        lin.fan_in * lin.fan_out
        for lin in info.linears
        if lin.name.split(".", 1)[0] not in info.heads
    )
    if quant != "none" and cfg.lora is not None:
        per = 0.5 + 0.03 if quant == "4bit" else 1.0 + 0.03  # + quantization constants
        frozen_other = info.total - linear_w
        weights = int(linear_w * per + frozen_other * 2 + (total - info.total) * 4)
    else:
        weights = total * 4
        if half:
            weights += linear_w * 2  # autocast's 16-bit copy of the matmul weights
    gradients = trainable * 4
    optimizer = _optimizer_bytes(cfg.optim, trainable, train_shapes)
    b = int(cfg.per_device_train_batch_size)
    s = int(
        max_length
        or cfg.data.max_length
        or min(512, getattr(model_config, "max_position_embeddings", 512) or 512)
    )
    arch = _arch(model_config)
    lm = task in ("causal-lm", "masked-lm", "seq2seq", "dpo", "orpo", "kto", "grpo")
    activations = _activations(cfg, arch, b, s, dtype_bytes, lm, dev.kind)
    if dev.kind == "cuda":  # the caching allocator's fragmentation, cuBLAS workspaces
        workspace = int(0.1 * (weights + gradients + optimizer + activations)) + 64 * 2**20
        overhead = _CUDA_CONTEXT
    else:
        workspace, overhead = _CPU_WORKSPACE, int(runtime or _CPU_RUNTIME)
    notes.append(
        "Activations assume every example is max_length tokens (batches are padded only to their "
        "longest example, so typical use is lower)."
    )
    if dev.kind != "cuda":
        notes.append(
            "On CPU the runtime is the Python process itself (torch, transformers"
            + (", measured now)." if runtime else ").")
        )
    est = MemoryEstimate(
        params_total=total,
        params_trainable=trainable,
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        workspace=workspace,
        overhead=overhead,
        device=dev.label,
        device_kind=dev.kind,
        device_bytes=dev.memory_bytes,
        batch_size=b,
        max_length=s,
        precision=precision,
        notes=tuple(notes),
    )
    if suggest:
        est = dataclasses.replace(
            est,
            options=tuple(
                _options(
                    cfg, est, info, model, model_config, dev, task, s, resolve_precision, runtime
                )
            ),
        )
    return est


def _options(
    cfg, est, info, model, model_config, dev, task, s, resolve_precision, runtime=None
) -> list[Option]:
    """Cheaper configs, cheapest change first: same result slower, then approximations."""
    from nbtrain.config.schema import LoraConfig

    cands: list[tuple[str, dict[str, Any]]] = []
    if not cfg.gradient_checkpointing:
        cands.append(("gradient_checkpointing: true", {"gradient_checkpointing": True}))
    bsz, acc = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    k = 2
    while bsz // k >= 1 and k <= 64:
        cands.append(
            (
                f"batch_size: {bsz // k}, gradient_accumulation_steps: {acc * k}",
                {"per_device_train_batch_size": bsz // k, "gradient_accumulation_steps": acc * k},
            )
        )
        k *= 2
    if cfg.optim not in ("adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd") and cfg.lora is None:
        if dev.kind == "cuda":
            cands.append(("optim: adamw_8bit", {"optim": "adamw_8bit"}))
        cands.append(("optim: adafactor", {"optim": "adafactor"}))
    if cfg.lora is None:
        cands.append(("lora: {r: 8}", {"lora": LoraConfig()}))
        cands.append(
            (
                "lora: {r: 8} + gradient_checkpointing: true",
                {"lora": LoraConfig(), "gradient_checkpointing": True},
            )
        )
        if dev.kind == "cuda":
            cands.append(
                (
                    "lora: {r: 8} + quantization: 4bit + gradient_checkpointing: true",
                    {"lora": LoraConfig(), "quantization": "4bit", "gradient_checkpointing": True},
                )
            )
    out: list[Option] = []
    for change, overrides in cands:
        alt = dataclasses.replace(cfg, **overrides)
        try:
            e = _estimate(
                alt, info, model, model_config, dev, task, s, False, resolve_precision, runtime
            )
        except Exception:
            continue
        out.append(
            Option(change, {k: v for k, v in overrides.items()}, e.total_bytes, bool(e.fits))
        )
    if est.fits is False:
        chosen: list[Option] = []
        batch_seen = False
        for o in out:  # candidate order is cost order; one batch option (the largest) is enough
            if not o.fits:
                continue
            if o.change.startswith("batch_size"):
                if batch_seen:
                    continue
                batch_seen = True
            chosen.append(o)
        return chosen[:4] or sorted(out, key=lambda o: o.total_bytes)[:3]
    return [o for o in out if not o.change.startswith("batch_size")][:3]
