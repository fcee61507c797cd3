"""CPU training defaults measured in docs/performance.md: the thread count from what other
processes leave free, eager attention for BERT-family encoders, row-wise word-embedding updates.

Each choice comes back with the sentence the run's view shows (a ``Notice`` of kind ``speed``),
and each has a config field that turns it off (``cpu_threads``, ``attn_implementation``,
``sparse_embeddings``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

NOTICE_KIND = "speed"

#: Encoders whose attention is BERT's own code (transformers' "Copied from" BertSelfAttention):
#: eager attention measured ~6 % faster than sdpa for the whole CPU training step at SST-2
#: lengths (MiniLM-L6, docs/performance.md). Other models keep transformers' choice.
EAGER_ON_CPU = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})

#: Optimizers RowAdamW stands in for (same maths on the rows a step uses).
ROW_OPTIMIZERS = frozenset({"adamw_torch", "adamw_torch_fused"})


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads this run uses, and why."""

    threads: int
    before: int
    message: str | None  # None: nothing changed, nothing to say


def choose_threads(
    setting: int | None, *, current: int, cores: int | None, load: float | None
) -> ThreadChoice:
    """``cpu_threads`` resolved: a number is kept; None picks the cores others leave free.

    ``load`` is how many cores other processes keep busy (:func:`machine_load`). OpenMP
    threads that wait for a core another process holds stall every op of the step (measured:
    2 threads at load average ~4-9 on 2 cores, 3.5 s a step vs 0.8 s with 1), so with
    ``load`` above ``cores - current + 0.5`` the run takes ``round(cores - load)`` threads, at
    least 1. It never raises the count (an ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` the
    user chose stays the ceiling).
    """
    if setting is not None:
        msg = (
            None if setting == current else f"cpu_threads: {setting} torch threads (was {current})."
        )
        return ThreadChoice(setting, current, msg)
    if load is None or not cores or current <= 1:
        return ThreadChoice(current, current, None)
    free = max(1, round(cores - load))
    if free >= current:
        return ThreadChoice(current, current, None)
    return ThreadChoice(
        free,
        current,
        f"The machine is busy (other processes use {load:.1f} of its {cores} cores): "
        f"training with {free} torch thread{'s' if free != 1 else ''} instead of {current}, "
        "because threads that wait for a busy core slow every step several times over. Set "
        "cpu_threads to choose.",
    )


#: How long :func:`machine_load` watches the CPU counters (seconds): 40 clock ticks a core.
LOAD_WINDOW_S = 0.2


def machine_load(window: float = LOAD_WINDOW_S) -> tuple[int | None, float | None]:
    """(cores, cores other processes keep busy), None where the platform does not say.

    Measured over ``window`` seconds from the kernel's CPU counters minus this process's own
    CPU time. The 1-minute load average is not the measure: it counts this process too, so a
    run started right after another one in the same kernel, or after its own tokenization,
    would see itself as contention and train on half the cores. Where ``/proc/stat`` is
    missing (macOS, Windows) it falls back to the load average.
    """
    import time

    cores = os.cpu_count()
    try:
        t0, own0, busy0 = time.monotonic(), _own_cpu(), _busy_cpu()
        time.sleep(window)
        t1, own1, busy1 = time.monotonic(), _own_cpu(), _busy_cpu()
        return cores, max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        return cores, float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return cores, None


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _busy_cpu() -> float:
    """CPU seconds all cores spent not idle since boot (Linux ``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def attention_kwargs(cfg: Any, dev: Any, model_config: Any) -> tuple[dict[str, Any], str | None]:
    """``from_pretrained`` keyword arguments for ``attn_implementation`` and the notice to show.

    ``auto`` is eager attention on CPU for the BERT family, transformers' choice elsewhere.
    """
    setting = getattr(cfg, "attn_implementation", "auto") or "auto"
    if setting != "auto":
        return {"attn_implementation": setting}, None
    model_type = getattr(model_config, "model_type", None)
    if dev.kind == "cpu" and model_type in EAGER_ON_CPU:
        return {"attn_implementation": "eager"}, (
            f"Eager attention on CPU for {model_type}: faster than sdpa at these lengths "
            "(attn_implementation: sdpa to change)."
        )
    return {}, None


def wants_sparse_embeddings(cfg: Any, dev: Any, model: Any, *, world: int) -> tuple[bool, str]:
    """Whether this run updates word-embedding rows only, and why (or why not)."""
    setting = getattr(cfg, "sparse_embeddings", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    blocker = None
    if emb is None or type(emb).__name__ != "Embedding" or not emb.weight.requires_grad:
        blocker = "the model has no trainable nn.Embedding input embeddings"
    elif cfg.lora is not None:
        blocker = "LoRA trains adapters, not the embeddings"
    elif str(cfg.optim) not in ROW_OPTIMIZERS:
        blocker = f"optim: {cfg.optim} is not AdamW"
    elif world > 1 or cfg.processes > 1:
        blocker = "training runs in several processes"
    elif _tied(model, emb):
        blocker = "the word embeddings are tied to the output layer (dense gradient anyway)"
    elif cfg.gradient_checkpointing:
        blocker = "gradient_checkpointing is on"
    if setting is False:
        return False, "sparse_embeddings: false"
    if blocker is not None:
        if setting:
            from nbtrain.errors import ConfigError

            raise ConfigError(
                f"sparse_embeddings: true cannot apply here: {blocker}. Leave it unset (auto).",
                field="sparse_embeddings",
            )
        return False, blocker
    if dev.kind != "cpu":  # the clip above skips mixed-precision unscaling: CPU (fp32) only
        if setting:
            from nbtrain.errors import ConfigError

            raise ConfigError(
                f"sparse_embeddings: true is for CPU training; on {dev.kind} the dense update "
                "is cheap. Leave it unset.",
                field="sparse_embeddings",
            )
        return False, f"on {dev.kind} the dense update is cheap"
    return True, (
        "Row-wise word-embedding updates (sparse_embeddings): each step's gradient and AdamW "
        "update cover only the embedding rows its batch uses, not all "
        f"{emb.weight.shape[0]:,} (sparse_embeddings: false for the dense update)."
    )


def _tied(model: Any, emb: Any) -> bool:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return out is not None and getattr(out, "weight", None) is emb.weight


def enable_sparse_embeddings(trainer: Any, model: Any) -> bool:
    """Sparse word-embedding gradients, :class:`RowAdamW` in place of AdamW, and a gradient
    clip that reads sparse gradients; False (nothing changed) where the Trainer would not build
    torch's AdamW. :func:`disable_sparse_embeddings` undoes the model part."""
    import torch

    from nbtrain.engine.row_adamw import RowAdamW, clip_grad_norm

    if trainer.optimizer is not None or trainer.optimizer_cls_and_kwargs is not None:
        return False  # the caller chose the optimizer
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
    if cls is not torch.optim.AdamW:
        return False
    model.get_input_embeddings().sparse = True
    trainer.optimizer_cls_and_kwargs = (RowAdamW, dict(kwargs))
    trainer.accelerator.clip_grad_norm_ = clip_grad_norm
    return True


def disable_sparse_embeddings(model: Any) -> None:
    """The model a run hands back trains with any optimizer again (dense gradients)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "sparse"):
        emb.sparse = False
