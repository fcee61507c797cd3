"""How long will it take? Time a few real training steps, then add up the run's batches.

The run's batches are laid out as its sampler will draw them (transformers' length-grouped
order seeded per epoch, as :mod:`nbtrain.engine.resume` seeds it, or a random order), each padded
to its longest row. A fresh copy of the model (never the caller's object) runs forward+backward
on the longest batch and on a typical one; the optimizer step (gradient clipping, the configured
optimizer, zeroing) is timed apart, since it costs the same at every length. The step time is a
straight line through the two measured lengths; evaluation is one timed forward pass scaled by
each eval batch's tokens. Checkpoint saving and model loading are not counted.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

#: Timed repetitions per measured batch (after one warm-up step); the median counts.
REPEATS = 3


@dataclass(frozen=True)
class StepTiming:
    """One measured batch: rows x padded tokens, forward+backward seconds (wall and CPU)."""

    rows: int
    tokens: int
    seconds: float
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class TimeEstimate:
    """Estimated wall time of the training loop, from timed steps and the run's batches."""

    optimizer_steps: int
    micro_batches: int
    measured: tuple[StepTiming, ...]
    optimizer_s: float
    train_s: float
    evals: int
    eval_batches: int
    eval_s: float
    batch_p50_tokens: int
    batch_max_tokens: int
    timing_s: float  # what the measurement itself took
    #: The same estimate in CPU seconds of this process: what a busier or idler machine does
    #: not change (the wall time does), so a run can be checked against it on a shared CPU.
    cpu_s: float = 0.0
    load: float | None = None  # 1-minute load average while timing (None where unknown)
    cpus: int | None = None
    threads: int = 1

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s

    @property
    def seconds_per_step(self) -> float:
        return self.train_s / self.optimizer_steps if self.optimizer_steps else 0.0


def _load() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def pad_to(n: int, multiple: int | None) -> int:
    return int(math.ceil(n / multiple) * multiple) if multiple else int(n)


def batch_plan(
    lengths: list[int],
    batch_size: int,
    micro_batches: int,
    *,
    grouped: bool,
    seed: int,
    multiple: int | None = None,
) -> list[int]:
    """Padded tokens per row of each of the run's first ``micro_batches`` training batches."""
    import torch

    n = len(lengths)
    if n == 0 or micro_batches <= 0:
        return []
    out: list[int] = []
    epoch = 0
    while len(out) < micro_batches:
        gen = torch.Generator().manual_seed(seed + epoch)
        if grouped:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            order = get_length_grouped_indices(lengths, batch_size, generator=gen)
        else:
            order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, batch_size):
            out.append(pad_to(max(lengths[j] for j in order[i : i + batch_size]), multiple))
            if len(out) == micro_batches:
                break
        epoch += 1
    return out


def count_evals(cfg: Any, has_eval: bool, optimizer_steps: int, steps_per_epoch: int) -> int:
    """How many evaluations the run makes (``eval_strategy`` as the engine translates it)."""
    strategy = cfg.eval_strategy
    if not has_eval or strategy == "no":
        return 0
    if strategy == "steps":
        every = cfg.eval_steps or 500
        every = every if every >= 1 else max(1, round(every * optimizer_steps))
        return max(1, int(optimizer_steps // every))
    return max(1, math.ceil(optimizer_steps / max(1, steps_per_epoch)))


def estimate_time(prep: Any, device: Any, precision: str) -> TimeEstimate:
    """Time real steps of ``prep``'s run on ``device`` and estimate the training loop's time.

    Loads a fresh model (a deep copy when the config holds a model object, so the caller's
    weights and RNG state stay as they were).
    """
    import torch

    from nbtrain.engine.prepare import total_steps

    cfg, task = prep.cfg, prep.task
    t_start = time.perf_counter()
    lengths = [int(n) for n in prep.train["length"]]
    b = int(cfg.per_device_train_batch_size)
    acc = int(cfg.gradient_accumulation_steps)
    multiple = 8 if precision != "fp32" else None
    steps = total_steps(len(lengths), cfg)
    micro = steps * acc
    plan = batch_plan(
        lengths, b, micro, grouped=bool(cfg.group_by_length), seed=cfg.seed, multiple=multiple
    )
    longest = max(plan)
    typical = int(statistics.median(plan))
    collate = task.collator(prep.tokenizer, pad_to_multiple_of=multiple)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])

    def rows_at(tokens: int) -> list[int]:
        # b rows whose longest pads to ``tokens``: the longest rows not above it
        fit = [i for i in order if pad_to(lengths[i], multiple) <= tokens] or order[:1]
        return fit[-b:]

    rng = _rng_state()
    threads_before = torch.get_num_threads()
    if device.kind == "cpu":  # the thread count the run would pick at this load (cpu_threads)
        from nbtrain.engine.cpu_speed import choose_threads, machine_load

        cores, load = machine_load()
        choice = choose_threads(cfg.cpu_threads, current=threads_before, cores=cores, load=load)
        torch.set_num_threads(choice.threads)
    try:
        measured, opt_times, eval_s, n_evals, n_eval_batches, eval_cpu = _measure(
            prep, device, precision, collate, rows_at, (longest, typical), steps
        )
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads_before)
        _restore_rng(rng)
        if device.kind == "cuda":
            torch.cuda.empty_cache()
    opt_s = statistics.median(w for w, _ in opt_times)
    opt_cpu = statistics.median(c for _, c in opt_times)
    train_s = sum(_interpolate(measured, t) for t in plan) + steps * opt_s
    train_cpu = sum(_interpolate(measured, t, "cpu_seconds") for t in plan) + steps * opt_cpu
    return TimeEstimate(
        optimizer_steps=steps,
        micro_batches=len(plan),
        measured=tuple(measured),
        optimizer_s=opt_s,
        train_s=train_s,
        evals=n_evals,
        eval_batches=n_eval_batches,
        eval_s=eval_s,
        batch_p50_tokens=typical,
        batch_max_tokens=longest,
        timing_s=time.perf_counter() - t_start,
        cpu_s=train_cpu + eval_cpu,
        load=_load(),
        cpus=os.cpu_count(),
        threads=threads,
    )


def _measure(
    prep: Any,
    device: Any,
    precision: str,
    collate: Any,
    rows_at: Any,
    lengths_to_time: tuple[int, int],
    steps: int,
) -> tuple[list[StepTiming], list[float], float, int, int]:
    """Forward+backward at each length, the optimizer step, one eval pass: seconds.

    The model copy lives only in this frame, so its memory goes when it returns.
    """
    import torch

    from nbtrain.engine.prepare import steps_per_epoch

    cfg = prep.cfg
    model, params, optimizer, clip = _training_copy(prep, device, precision)
    dev = next(model.parameters()).device
    autocast = _autocast(device, precision)

    def batch(idx: list[int], ds: Any) -> dict[str, Any]:
        out = collate([ds[i] for i in idx])
        return {k: v.to(dev) if hasattr(v, "to") else v for k, v in out.items()}

    def sync() -> None:
        if device.kind == "cuda":
            torch.cuda.synchronize()

    def forward_backward(inputs: dict[str, Any]) -> tuple[float, float]:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    def optimizer_step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            clip(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    model.train()
    measured, opt_times = [], []
    for tokens in dict.fromkeys(lengths_to_time):  # one point when they are equal
        inputs = batch(rows_at(tokens), prep.train)
        forward_backward(inputs)  # warm-up: allocation, kernels, optimizer state
        optimizer_step()
        times = []
        for _ in range(REPEATS):
            times.append(forward_backward(inputs))
            opt_times.append(optimizer_step())
        measured.append(
            StepTiming(
                len(inputs["input_ids"]),
                int(inputs["input_ids"].shape[1]),
                statistics.median(w for w, _ in times),
                statistics.median(c for _, c in times),
            )
        )
    eval_s, eval_cpu, n_evals, n_eval_batches = 0.0, 0.0, 0, 0
    if prep.eval is not None and len(prep.eval):
        n_train = len(prep.train)
        n_evals = count_evals(cfg, True, steps, steps_per_epoch(n_train, cfg))
        eval_s, n_eval_batches = _eval_time(
            prep, model, batch, autocast, sync, 8 if precision != "fp32" else None
        )
        eval_s, eval_cpu = eval_s[0] * n_evals, eval_s[1] * n_evals
    return measured, opt_times, eval_s, n_evals, n_eval_batches, eval_cpu


def _interpolate(points: list[StepTiming], tokens: int, clock: str = "seconds") -> float:
    """Seconds of a forward+backward at ``tokens``: the line through the measured points."""
    if len(points) == 1 or points[0].tokens == points[1].tokens:
        return getattr(points[0], clock) * tokens / max(1, points[0].tokens)
    (x1, y1), (x2, y2) = ((p.tokens, getattr(p, clock)) for p in points[:2])
    slope = max(0.0, (y1 - y2) / (x1 - x2))
    return max(0.0, y2 + slope * (tokens - x2))


def _eval_time(prep: Any, model: Any, batch: Any, autocast: Any, sync: Any, multiple: Any):
    """Seconds of one full evaluation pass (a timed forward scaled by tokens) and its batches."""
    import torch

    cfg = prep.cfg
    eb = int(cfg.per_device_eval_batch_size or 2 * cfg.per_device_train_batch_size)
    lengths = [int(n) for n in prep.eval["length"]]  # sorted longest first by prepare()
    chunks = [list(range(i, min(i + eb, len(lengths)))) for i in range(0, len(lengths), eb)]
    tokens = [len(c) * pad_to(max(lengths[j] for j in c), multiple) for c in chunks]
    mid = chunks[len(chunks) // 2]
    inputs = batch(mid, prep.eval)
    model.eval()
    with torch.no_grad(), autocast:
        model(**inputs)  # warm-up
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        model(**inputs)
        sync()
        t, c = time.perf_counter() - t0, time.process_time() - c0
    scale = sum(tokens) / max(1, inputs["input_ids"].numel())
    return (t * scale, c * scale), len(chunks)


def _training_copy(prep: Any, device: Any, precision: str) -> tuple[Any, list[Any], Any, Any]:
    """The model as the run builds it (LoRA, frozen embeddings, checkpointing, the attention
    and row-wise embedding updates it would use on this device), its optimizer and the
    gradient clip the run would call."""
    import torch
    from transformers import Trainer, TrainingArguments

    from nbtrain.engine.cpu_speed import wants_sparse_embeddings
    from nbtrain.engine.fresh import fresh_model
    from nbtrain.engine.shared_state import setting_up
    from nbtrain.engine.training_args import translate

    cfg = prep.cfg
    model = fresh_model(prep, device)  # the caller's object is never trained
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if device.kind == "cuda":
        model = model.to("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = translate(
            cfg,
            output_dir=tmp,
            has_eval=False,
            metric_for_best_model=None,
            greater_is_better=None,
            precision=precision,
            logging_steps=1,
        )
        kwargs.update(report_to=["none"], save_strategy="no", eval_strategy="no")
        if device.kind == "cpu":
            kwargs["use_cpu"] = True
        with setting_up():  # a run training in this kernel keeps accelerate's state
            args = TrainingArguments(
                **{k: v for k, v in kwargs.items() if k != "load_best_model_at_end"}
            )
            _ = args.device  # the device set-up (and its reset) happens here, in turn
    cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    clip = torch.nn.utils.clip_grad_norm_
    if cls is torch.optim.AdamW and wants_sparse_embeddings(cfg, device, model, world=1)[0]:
        from nbtrain.engine.row_adamw import RowAdamW, clip_grad_norm

        model.get_input_embeddings().sparse = True  # as enable_sparse_embeddings does
        cls, clip = RowAdamW, clip_grad_norm
    params = [p for p in model.parameters() if p.requires_grad]
    return model, params, cls(params, **opt_kwargs), clip


def _autocast(device: Any, precision: str) -> Any:
    from nbtrain.engine.model import autocast

    return autocast(device, precision)


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    state = {"py": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["py"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["StepTiming", "TimeEstimate", "batch_plan", "count_evals", "estimate_time"]
