"""The LR range test: an exponential learning-rate ramp from the model's starting weights.

A copy of the model trains for about 100 steps while the learning rate grows from ``start_lr`` to
``end_lr`` by the same factor each step; the loss is recorded per step and smoothed. The
suggestion is read off the smoothed curve (see :func:`suggest`). The user's model is never
touched: a model given as an object is deep-copied, a model given by name is loaded fresh, and
nothing is written to disk. Never prints; emits ``stage`` events like a run's preparation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nbtrain.config import Config
from nbtrain.errors import ConfigError
from nbtrain.events import EventBus, Stage

METHODS = ("valley", "steep", "minimum")


@dataclass
class LRCurve:
    """The range test's data: learning rate and loss per step, and the suggestion."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    method: str
    start_lr: float
    end_lr: float
    steps: int  # steps asked for; ``len(lrs)`` is how many ran before the loss diverged
    batch_size: int
    diverged: bool = False
    candidates: dict[str, float] = field(default_factory=dict)  # the suggestion of each method

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Debiased exponential moving average (the range test's usual smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def trim(n: int, steps: int | None = None, skip_end: int = 5) -> tuple[int, int]:
    """The slice ``[lo, hi)`` of the curve the rules read, as fastai's ``lr_find`` reads it:
    without the first tenth of the steps asked for (the smoothing's warm-up, where the debiased
    average of a handful of batches is mostly one batch's noise, at learning rates too small to
    move the weights) and without the last ``skip_end`` points (the divergence that ended the
    ramp, or its final, least smoothed steps). A curve too short for that is read whole."""
    lo, hi = (steps if steps is not None else n) // 10, n - skip_end
    return (lo, hi) if hi - lo >= 5 else (0, n)


def suggest(
    lrs: list[float],
    smoothed: list[float],
    method: str = "valley",
    *,
    steps: int | None = None,
    skip: bool = True,
) -> float:
    """The suggested learning rate from a smoothed loss curve.

    Every rule reads the curve without its first tenth and its last five points (see
    :func:`trim`; ``steps`` is the number of steps the ramp was asked for, default ``len(lrs)``;
    ``skip=False`` reads it whole).

    - ``valley`` (default): the longest stretch where the smoothed loss keeps falling; the LR
      two thirds of the way down it (fastai's ``valley``). Robust to a noisy start and to a late
      cliff.
    - ``steep``: where the smoothed loss falls fastest per decade of LR (steepest descent),
      searched before the loss minimum.
    - ``minimum``: a tenth of the LR at the loss minimum (the classic rule of thumb).
    """
    if len(lrs) < 5:
        raise ValueError("The LR range test needs at least 5 steps to suggest a learning rate.")
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    lo, hi = trim(len(lrs), steps) if skip else (0, len(lrs))
    lrs, smoothed = lrs[lo:hi], smoothed[lo:hi]
    n = len(lrs)
    if method == "minimum":
        i = min(range(n), key=lambda k: smoothed[k])
        return lrs[i] / 10
    if method == "steep":
        hi = max(3, min(range(n), key=lambda k: smoothed[k]))
        logs = [math.log10(x) for x in lrs]
        best, slope = 1, float("inf")
        for k in range(1, min(hi, n - 1)):
            d = (smoothed[k + 1] - smoothed[k - 1]) / (logs[k + 1] - logs[k - 1])
            if d < slope:
                best, slope = k, d
        return lrs[best]
    # valley: the longest decreasing subsequence ending at each point (O(n^2), n ~ 100).
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    section = (max_end - max_start) / 3
    idx = max(0, min(n - 1, max_start + int(section) + int(section / 2)))
    return lrs[idx]


def find_lr(
    cfg: Config,
    *,
    steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    method: str = "valley",
    bus: EventBus | None = None,
) -> LRCurve:
    """Run the LR range test for ``cfg`` and return the curve with its suggestion.

    Uses the config's data, model, batch size, weight decay, gradient clipping, LoRA and frozen
    embeddings; one batch per step (no gradient accumulation), in bf16 autocast where the run
    would train in bf16 (fp32 otherwise: fp16 would need a loss scaler).

    Raises:
        ConfigError: bad arguments, or data/model problems (as a run would raise them).
    """
    if method not in METHODS:
        raise ConfigError(
            f"lr_find method: {method!r} is not valid; expected one of {', '.join(METHODS)}.",
            field="learning_rate",
        )
    if not (0 < start_lr < end_lr):
        raise ConfigError(
            f"lr_find: start_lr ({start_lr}) must be positive and below end_lr ({end_lr}).",
            field="learning_rate",
        )
    if steps < 10:
        raise ConfigError("lr_find: steps must be at least 10.", field="learning_rate")
    import dataclasses

    import torch

    from nbtrain.engine.fresh import fresh_model
    from nbtrain.engine.model import autocast, device_info, resolve_precision
    from nbtrain.engine.prepare import describe_model, prepare

    bus = bus or EventBus()
    # The finder's own copy of the config: any LR works for preparing data.
    cfg = dataclasses.replace(cfg, learning_rate=start_lr, sweep=None)
    prep = prepare(cfg, bus)
    task = prep.task
    bus.emit(Stage(name="load_model", status="start", detail=describe_model(cfg)))
    dev = device_info()
    precision = resolve_precision(cfg.precision, dev, prep.model_config)
    model = fresh_model(prep, dev)  # the user's object keeps its weights
    bus.emit(Stage(name="load_model", status="done", detail=type(model).__name__))

    device = torch.device("cuda" if dev.kind == "cuda" else "cpu")
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases and norms, as the Trainer does
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=start_lr,
    )
    collate = task.collator(prep.tokenizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        prep.train,
        batch_size=cfg.per_device_train_batch_size,
        shuffle=True,
        generator=gen,
        collate_fn=collate,
    )
    loss_fn = task.compute_loss_func()
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    diverged = False
    best = float("inf")
    batches = iter(loader)
    bus.emit(Stage(name="lr_find", status="start", total=steps, done=0, detail=f"{steps} steps"))
    for i in range(steps):
        lr = start_lr * factor**i
        for g in opt.param_groups:
            g["lr"] = lr
        try:
            batch = next(batches)
        except StopIteration:  # a small dataset: start another pass
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device) for k, v in batch.items() if hasattr(v, "to")}
        with autocast(dev, "bf16" if precision == "bf16" else "fp32"):
            outputs = model(**batch)
            if loss_fn is not None and "labels" in batch:
                loss = loss_fn(outputs, batch["labels"], num_items_in_batch=None)
            else:
                loss = outputs.loss
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        lrs.append(lr)
        losses.append(value)
        sm = smooth(losses)[-1]
        best = min(best, sm)
        if i % 10 == 0:
            bus.emit(Stage(name="lr_find", status="progress", done=i + 1, total=steps))
        if i >= 10 and sm > 4 * best:
            diverged = True  # the loss exploded: higher LRs only say the same
            break
    bus.emit(Stage(name="lr_find", status="done", done=len(lrs), total=steps))
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if len(lrs) < 5:
        raise ConfigError(
            f"lr_find: the loss was not finite from the first steps (start_lr {start_lr:g}); "
            "check the data and the model, or lower start_lr.",
            field="learning_rate",
        )
    smoothed = smooth(losses)
    candidates = {m: suggest(lrs, smoothed, m, steps=steps) for m in METHODS}
    return LRCurve(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        suggestion=candidates[method],
        method=method,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        batch_size=cfg.per_device_train_batch_size,
        diverged=diverged,
        candidates=candidates,
    )
