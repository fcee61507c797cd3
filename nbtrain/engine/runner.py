"""The engine: a config in, a finished (or cleanly stopped) run out, events all the way.

Never prints, never imports IPython. Everything users see comes from the events it emits.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtrain.checkpoints import (
    MARKER,
    is_complete,
    newest_complete,
    prune_after_nan,
    run_status,
    write_marker,
)
from nbtrain.config import Config, config_to_dict, diff_configs
from nbtrain.config.refs import Ref, describe, fingerprint, unwrap
from nbtrain.config.training_args import translate
from nbtrain.engine.callbacks import EventCallback, StopController
from nbtrain.engine.safety import Guards, disk_error, is_disk_error, nan_error, train_surviving
from nbtrain.errors import ConfigError, DataError
from nbtrain.events import (
    ErrorEvent,
    EventBus,
    EventLog,
    Notice,
    RunEnded,
    RunStarted,
    Stage,
    Subscriber,
    read_events,
)

_IDENTITY_IGNORED = {"name", "runs_dir"}


@dataclass
class Prepared:
    """Everything needed to train, before the Trainer exists (also what a dry run shows)."""

    cfg: Config
    task: Any
    tokenizer: Any
    model_source: Any
    model_config: Any
    train: Any
    eval: Any
    max_length: int
    labels: list[str] | None
    notices: list[str]
    raw_train_rows: int


@dataclass
class Outcome:
    """What a run left behind; ``api.RunResult`` wraps it for users."""

    name: str
    run_dir: Path
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    model: Any = None
    tokenizer: Any = None
    task: Any = None
    resume_checkpoint: str | None = None
    error: ErrorEvent | None = None
    reused: bool = False  # a finished run shown again without retraining


def default_name(cfg: Config) -> str:
    model = cfg.model if isinstance(cfg.model, str) else describe(cfg.model).strip("{}<>")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model)).name).strip("-") or "run"
    if world_size() > 1:
        # Every process of `accelerate launch` must agree on the folder: name it by content.
        digest = hashlib.sha1(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()
        return f"{base}-{digest[:10]}"
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate (or a plain single process) owns the run folder."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def identity(cfg: Config) -> dict[str, Any]:
    """The parts of a config that define a run: same identity, same run (resume, reuse)."""
    d = config_to_dict(cfg)
    for key in _IDENTITY_IGNORED:
        d.pop(key, None)
    prints = {}
    for key, value in (
        ("data.train", cfg.data.train),
        ("data.eval", cfg.data.eval),
        ("model", cfg.model),
    ):
        fp = fingerprint(value) if not isinstance(unwrap(value), str) else None
        if fp:
            prints[key] = fp
    if prints:
        d["fingerprints"] = prints
    return json.loads(json.dumps(d, default=str))


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_datasets() -> Any:
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _quiet_hf_progress() -> Any:
    """No tqdm bars from transformers ("Writing model shards") while the engine works."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def prepare(cfg: Config, bus: EventBus) -> Prepared:
    """Load data and tokenizer, pick the task, tokenize. Raises ConfigError/DataError."""
    from nbtrain.engine.data import load_raw
    from nbtrain.engine.model import load_pretrained_config, load_tokenizer, resolve_model_name
    from nbtrain.engine.tasks import get_task, infer_task

    with _quiet_datasets():
        bus.emit(Stage(name="load_data", status="start", detail=describe_source(cfg)))
        raw = load_raw(cfg.data, seed=cfg.seed)
        bus.emit(
            Stage(
                name="load_data",
                status="done",
                done=len(raw.train),
                total=len(raw.train),
                detail=f"{len(raw.train)} train rows"
                + (f", {len(raw.eval)} eval rows" if raw.eval is not None else ""),
            )
        )

        model_obj = unwrap(cfg.model)
        model_source = resolve_model_name(model_obj) if isinstance(model_obj, str) else model_obj
        if isinstance(model_source, str):
            model_config = load_pretrained_config(model_source, cfg)
        else:
            model_config = getattr(model_source, "config", None)
        archs = list(getattr(model_config, "architectures", None) or [])

        task_name = cfg.task or infer_task(list(raw.train.column_names), cfg, archs)
        task = get_task(task_name, cfg)
        prepared = task.prepare(raw)
        notices = list(prepared.notices)
        if cfg.task is None:
            notices.insert(0, f"Task inferred from the data: {task_name} (set task: to change).")
        if model_config is not None:
            task.check_model_config(model_config, str(describe_model(cfg)))

        tokenizer = load_tokenizer(cfg, model_source)
        max_length = _max_length(cfg, tokenizer, model_config)
        total = len(prepared.train) + (len(prepared.eval) if prepared.eval is not None else 0)
        bus.emit(
            Stage(name="tokenize", status="start", total=total, detail=f"max_length {max_length}")
        )
        train_tok = task.tokenize(prepared.train, tokenizer, max_length)
        eval_tok = (
            task.tokenize(prepared.eval, tokenizer, max_length)
            if prepared.eval is not None
            else None
        )
        if eval_tok is not None and "length" in eval_tok.column_names:
            # Sorted by length, evaluation batches carry almost no padding.
            eval_tok = eval_tok.sort("length", reverse=True)
        bus.emit(
            Stage(
                name="tokenize",
                status="done",
                done=total,
                total=total,
                detail=f"{_token_count(train_tok)} train tokens",
            )
        )
    return Prepared(
        cfg=cfg,
        task=task,
        tokenizer=tokenizer,
        model_source=model_source,
        model_config=model_config,
        train=train_tok,
        eval=eval_tok,
        max_length=max_length,
        labels=prepared.labels,
        notices=notices,
        raw_train_rows=len(raw.train),
    )


def describe_source(cfg: Config) -> str:
    from nbtrain.engine.data import describe_source as ds

    return ds(cfg.data.train)


def describe_model(cfg: Config) -> str:
    return cfg.model if isinstance(cfg.model, str) else describe(cfg.model)


def _max_length(cfg: Config, tokenizer: Any, model_config: Any) -> int:
    limits = [512]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    pos = getattr(model_config, "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limits.append(pos)
    model_limit = min(limits[1:]) if len(limits) > 1 else None
    if cfg.data.max_length:
        if model_limit and cfg.data.max_length > model_limit:
            raise ConfigError(
                f"max_length: {cfg.data.max_length} is longer than the model takes "
                f"({model_limit} tokens); use at most {model_limit}.",
                field="data.max_length",
            )
        return cfg.data.max_length
    return min(limits)


def _token_count(ds: Any) -> int:
    if ds is None or "length" not in ds.column_names:
        return 0
    return int(sum(ds["length"]))


def steps_per_epoch(n_rows: int, cfg: Config, world_size: int = 1) -> int:
    batches = math.ceil(n_rows / (cfg.per_device_train_batch_size * world_size))
    return max(1, math.ceil(batches / cfg.gradient_accumulation_steps))


def total_steps(n_rows: int, cfg: Config, world_size: int = 1) -> int:
    if cfg.max_steps and cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(steps_per_epoch(n_rows, cfg, world_size) * cfg.num_train_epochs))


# ---------------------------------------------------------------------------------------------


def open_run(cfg: Config, *, restart: bool) -> tuple[Path, str, bool]:
    """Create or reopen the run folder. Returns (run_dir, name, existing).

    Same name and identity: reopen (resume or reuse). Different identity: refuse, naming the
    changed keys. ``restart``: remove the old run first.
    """
    name = cfg.name or default_name(cfg)
    run_dir = Path(cfg.runs_dir).expanduser() / name
    ident = identity(cfg)
    if not is_main_process():
        # Other ranks only read: rank 0 checks, creates or cleans the folder.
        return run_dir, name, (run_dir / "identity.json").exists()
    if run_dir.exists():
        ident_file = run_dir / "identity.json"
        if not (run_dir / "config.yaml").exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"The folder {str(run_dir)!r} exists and is not an nbtrain run; choose another "
                "name or runs_dir.",
                field="name",
            )
        if restart:
            from nbtrain.checkpoints import _remove_tree

            _remove_tree(run_dir)
        elif ident_file.exists():
            old = json.loads(ident_file.read_text())
            changed = diff_configs(old, ident)
            if changed:
                raise ConfigError(
                    f"A run named {name!r} already exists with a different config (changed: "
                    f"{', '.join(changed[:8])}{', ...' if len(changed) > 8 else ''}). Re-run with "
                    "--restart (restart=True) to start it over, or give the run a new name.",
                    field="name",
                )
            return run_dir, name, True
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(_config_yaml(cfg, name), encoding="utf-8")
    (run_dir / "identity.json").write_text(json.dumps(ident, indent=1, sort_keys=True))
    return run_dir, name, False


def _config_yaml(cfg: Config, name: str) -> str:
    d = config_to_dict(cfg)
    d["name"] = name
    header = "# nbtrain run config: re-run with `nbtrain run config.yaml`\n"
    refs = [
        f"{k}"
        for k, v in (
            ("data.train", cfg.data.train),
            ("data.eval", cfg.data.eval),
            ("model", cfg.model),
            ("tokenizer", cfg.tokenizer),
        )
        if v is not None and not isinstance(unwrap(v), str)
    ]
    if refs:
        header += (
            f"# {', '.join(refs)} came from notebook objects; replace them with files or "
            "hub names to run this outside the notebook.\n"
        )
    return header + _yaml_dump(d)


def _yaml_dump(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def write_env(run_dir: Path, cfg: Config, device: Any, precision: str, args: Any) -> None:
    from importlib import metadata

    versions = {}
    for pkg in ("nbtrain", "transformers", "torch", "datasets", "accelerate", "peft", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env = {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": {
            "kind": device.kind,
            "name": device.name,
            "count": device.count,
            "memory_bytes": device.memory_bytes,
        },
        "precision": precision,
        "seed": cfg.seed,
        "training_args": _safe_args(args),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run_dir / "env.json").write_text(json.dumps(env, indent=1, default=str))


def _safe_args(args: Any) -> dict[str, Any]:
    d = args.to_dict() if hasattr(args, "to_dict") else {}
    return {k: v for k, v in d.items() if "token" not in k}


# ---------------------------------------------------------------------------------------------


def run(
    cfg: Config,
    *,
    subscribers: list[Subscriber] | tuple[Subscriber, ...] = (),
    restart: bool = False,
    stop: StopController | None = None,
) -> Outcome:
    """Train (or resume, or reuse) the run ``cfg`` describes."""
    try:
        run_dir, name, existing = open_run(cfg, restart=restart)
    except OSError as e:
        raise ConfigError(_unwritable_message(cfg, e), field="runs_dir") from None
    if not is_main_process():
        subscribers = ()  # one progress view and one event log per run, from rank 0
    log = EventLog(run_dir / "events.jsonl") if is_main_process() else None
    bus = EventBus([fn for fn in (log, *subscribers) if fn is not None])
    stop = stop or StopController()

    resume: str | None = None
    if existing:
        info = run_status(run_dir)
        if info.status == "finished" and (run_dir / "final").is_dir():
            for ev in read_events(run_dir):  # replay, so a view shows the finished run
                for fn in subscribers:
                    with contextlib.suppress(Exception):
                        fn(ev)
            return Outcome(
                name=name,
                run_dir=run_dir,
                status="finished",
                metrics=info.metrics if not _end_metrics(run_dir) else _end_metrics(run_dir),
                reused=True,
            )
        ckpt = newest_complete(run_dir)
        resume = str(ckpt.path) if ckpt else None
        if is_main_process():
            _drop_incomplete(run_dir)

    try:
        prep = prepare(cfg, bus)
        for message in prep.notices:
            bus.emit(Notice(kind="data", message=message))
        return _train(cfg, prep, run_dir, name, bus, stop, resume)
    except (ConfigError, DataError) as e:
        bus.emit(
            ErrorEvent(
                kind="data" if isinstance(e, DataError) else "config", message=str(e), advice=""
            )
        )
        bus.emit(RunEnded(status="failed"))
        raise


def _unwritable_message(cfg: Config, e: OSError) -> str:
    import errno

    folder = Path(cfg.runs_dir).expanduser()
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    else:
        reason = e.strerror or type(e).__name__
    return (
        f"Cannot create the run folder under runs_dir {str(folder)!r} ({reason}). Set runs_dir "
        "to a writable folder with free space (on Colab, e.g. /content/runs or a mounted Drive)."
    )


def _end_metrics(run_dir: Path) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for ev in read_events(run_dir):
        if ev.type == "end" and ev.metrics:
            metrics = dict(ev.metrics)
    return metrics


def _drop_incomplete(run_dir: Path) -> None:
    """Half-written checkpoints (a crash mid-save) are never resumed from: remove them."""
    from nbtrain.checkpoints import _remove_tree, list_checkpoints

    for c in list_checkpoints(run_dir):
        if not c.complete:
            _remove_tree(c.path)


def _train(
    cfg: Config,
    prep: Prepared,
    run_dir: Path,
    name: str,
    bus: EventBus,
    stop: StopController,
    resume: str | None,
) -> Outcome:
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    from nbtrain.engine import resume as _resume
    from nbtrain.engine.model import (
        count_parameters,
        device_info,
        load_model,
        resolve_precision,
    )

    task = prep.task
    dev = device_info()
    precision = resolve_precision(cfg.precision, dev)
    from nbtrain.engine.model import configure_hardware

    configure_hardware(cfg, dev)  # 8-bit optimizers / 4-bit loading need bitsandbytes + CUDA

    bus.emit(Stage(name="load_model", status="start", detail=describe_model(cfg)))
    from transformers import set_seed

    set_seed(cfg.seed)  # a new head initialises the same way every time (resume, re-runs)
    if isinstance(prep.model_source, str):
        model = load_model(task.auto_model_class, prep.model_source, cfg, task.model_kwargs())
        bus.emit(Notice(kind="model", message=_head_notice(task, prep)))
    else:
        model = prep.model_source
    bus.emit(Stage(name="load_model", status="done", detail=type(model).__name__))
    if cfg.lora is not None:
        from nbtrain.engine.lora import apply_lora

        model = apply_lora(model, cfg, task)  # before counting: params_trainable = adapters

    n_train = len(prep.train)
    steps = total_steps(n_train, cfg)
    metric, greater = _best_metric(cfg, task)
    logging_steps = cfg.logging_steps or max(1, min(50, round(steps / 100)))
    kwargs = translate(
        cfg,
        output_dir=str(run_dir),
        has_eval=prep.eval is not None,
        metric_for_best_model=metric,
        greater_is_better=greater,
        precision=precision,
        logging_steps=logging_steps,
    )
    kwargs["remove_unused_columns"] = False  # our datasets hold model inputs + length only
    kwargs["length_column_name"] = "length"
    if dev.kind == "cpu":
        kwargs.setdefault("use_cpu", True)
        kwargs["dataloader_pin_memory"] = False
    try:
        with _tensorboard_dir(cfg, run_dir):
            args = TrainingArguments(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"TrainingArguments rejected the config: {str(e).splitlines()[0]}"
        ) from None
    if is_main_process():
        write_env(run_dir, cfg, dev, precision, args)

    event_cb = EventCallback(bus, task, stop)
    # Task callbacks first: they add metrics (perplexity, generation) the event bridge records.
    callbacks: list[Any] = [*task.callbacks(), event_cb]
    if cfg.early_stopping_patience and args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    elif cfg.early_stopping_patience:
        raise ConfigError(
            "early_stopping_patience needs evaluation with load_best_model_at_end.",
            field="early_stopping_patience",
        )
    callbacks += list(cfg.callbacks or [])

    trainer_cls = cfg.trainer_class or Trainer
    from nbtrain.engine.model import quiet_transformers

    with _tensorboard_dir(cfg, run_dir), quiet_transformers():
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=prep.train,
            eval_dataset=prep.eval,
            data_collator=task.collator(
                prep.tokenizer, pad_to_multiple_of=8 if precision != "fp32" else None
            ),
            processing_class=prep.tokenizer,
            compute_metrics=_metrics_fn(cfg, task) if prep.eval is not None else None,
            callbacks=callbacks,
            compute_loss_func=task.compute_loss_func(),
        )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # the engine never prints; renderers show events
    trainer.remove_callback(ProgressCallback)
    _resume.install_seeded_sampler(trainer, cfg.seed)  # exact resume: epoch order from (seed, epoch)
    total, trainable = count_parameters(model)
    start_kwargs = dict(
        run=name,
        run_dir=str(run_dir),
        task=task.name,
        model=str(describe_model(cfg)),
        device=dev.label,
        precision=precision,
        num_epochs=cfg.num_train_epochs,
        train_samples=n_train,
        eval_samples=len(prep.eval) if prep.eval is not None else 0,
        batch_size=cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps,
        params_total=total,
        params_trainable=trainable,
        resumed_from=resume,
        labels=prep.labels,
        config=config_to_dict(cfg),
    )
    event_cb.on_train_begin = _emit_start(event_cb, bus, start_kwargs)  # type: ignore[method-assign]

    guards = Guards(trainer, bus)  # NaN per micro-step, OOM in evaluation
    event_cb.guards = guards

    t0 = time.time()
    interrupted = False
    failure: ErrorEvent | None = None
    train_out = None
    try:
        with stop.signals(), _quiet_hf_progress():
            train_out, failure = train_surviving(trainer, guards, event_cb, run_dir, resume)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:
        bus.emit(
            ErrorEvent(
                step=trainer.state.global_step,
                kind="error",
                message=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                advice="See the traceback; the newest complete checkpoint is kept.",
            )
        )
        bus.emit(
            RunEnded(
                step=trainer.state.global_step,
                status="failed",
                duration_s=time.time() - t0,
                resume_checkpoint=_newest(run_dir),
            )
        )
        _free(trainer, model)
        raise
    step = trainer.state.global_step
    nan_steps = [s for s in (guards.nan_step, event_cb.nan_step) if s is not None]

    if failure is None and not nan_steps and (interrupted or stop.requested):
        status = "stopped" if stop.reason == "stopped" else "interrupted"
        ckpt = run_dir / f"checkpoint-{step}"
        try:
            if step > 0 and not is_complete(ckpt):
                event_cb.rng.restore(step)  # the RNG as the finished step left it, not mid-forward
                _save_now(trainer, ckpt)
                event_cb.on_save(trainer.args, trainer.state, trainer.control)
        except OSError as e:
            if not is_disk_error(e):
                raise
            failure = disk_error(e, ckpt, step, _newest(run_dir))
        if failure is None:
            resume_ckpt = _newest(run_dir)
            bus.emit(
                RunEnded(
                    step=step,
                    status=status,
                    duration_s=time.time() - t0,
                    resume_checkpoint=resume_ckpt,
                )
            )
            _free(trainer, model)
            return Outcome(
                name=name, run_dir=run_dir, status=status, resume_checkpoint=resume_ckpt, task=task
            )

    if failure is None and nan_steps:
        # The last good checkpoint: saved before the NaN step, with finite weights.
        kept = prune_after_nan(run_dir, min(nan_steps))
        failure = nan_error(min(nan_steps), str(kept.path) if kept else None)

    if failure is not None:
        bus.emit(failure)
        bus.emit(
            RunEnded(
                step=step,
                status="failed",
                duration_s=time.time() - t0,
                resume_checkpoint=_newest(run_dir),
            )
        )
        _free(trainer, model)
        return Outcome(name=name, run_dir=run_dir, status="failed", error=failure, task=task)

    metrics: dict[str, float] = {}
    if train_out is not None:
        metrics.update(
            {
                f"train_{k}" if not k.startswith("train_") else k: float(v)
                for k, v in train_out.metrics.items()
                if isinstance(v, (int, float)) and k != "epoch"
            }
        )
    if prep.eval is not None:
        eval_metrics = _final_eval(trainer, event_cb, run_dir)
        metrics.update({f"eval_{k}": v for k, v in eval_metrics.items()})

    final_dir = run_dir / "final"
    tmp_final = run_dir / "final.tmp"
    shutil.rmtree(tmp_final, ignore_errors=True)
    with _quiet_hf_progress():
        trainer.save_model(str(tmp_final))
        if cfg.lora is not None:
            from nbtrain.engine.lora import save_base_config

            save_base_config(trainer.model, tmp_final)  # label maps beside the adapter
    if is_main_process():  # save_model above is collective (DeepSpeed/FSDP); the rest is rank 0's
        if prep.tokenizer is not None:
            prep.tokenizer.save_pretrained(str(tmp_final))
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp_final, final_dir)

    best = trainer.state.best_model_checkpoint
    bus.emit(
        RunEnded(
            step=step,
            status="finished",
            metrics=metrics,
            best_checkpoint=str(best) if best else None,
            final_dir=str(final_dir),
            duration_s=time.time() - t0,
            train_samples_per_second=metrics.get("train_samples_per_second"),
        )
    )
    model = trainer.model
    del trainer
    gc.collect()
    return Outcome(
        name=name,
        run_dir=run_dir,
        status="finished",
        metrics=metrics,
        model=model,
        tokenizer=prep.tokenizer,
        task=task,
    )


def _emit_start(cb: EventCallback, bus: EventBus, kwargs: dict[str, Any]) -> Any:
    def on_train_begin(args: Any, state: Any, control: Any, **kw: Any) -> None:
        if getattr(cb, "started", False):
            return  # train() again after an OOM: the same run goes on
        cb.started = True
        cb.train_start = time.time()
        bus.emit(RunStarted(step=state.global_step, total_steps=state.max_steps, **kwargs))

    return on_train_begin


def _head_notice(task: Any, prep: Prepared) -> str:
    labels = prep.labels
    if labels:
        return (
            f"A new classification head with {len(labels)} labels ({', '.join(labels[:6])}"
            f"{', ...' if len(labels) > 6 else ''}) was initialised: this is expected."
        )
    return "Model loaded."


def _best_metric(cfg: Config, task: Any) -> tuple[str, bool | None]:
    if cfg.metric_for_best_model:
        metric = cfg.metric_for_best_model
        greater = cfg.greater_is_better
        if greater is None:
            greater = not any(w in metric for w in ("loss", "mse", "mae", "perplexity", "error"))
        return metric, greater
    name, greater = task.metric_for_best
    return name, greater if cfg.greater_is_better is None else cfg.greater_is_better


def _metrics_fn(cfg: Config, task: Any) -> Any:
    ours = task.compute_metrics()
    theirs = unwrap(cfg.compute_metrics)
    if theirs is None:
        return ours
    if ours is None:
        return theirs

    def both(eval_pred: Any) -> dict[str, float]:
        out = dict(ours(eval_pred))
        out.update(theirs(eval_pred))  # the user's names win
        return out

    return both


def _final_eval(trainer: Any, cb: EventCallback, run_dir: Path) -> dict[str, float]:
    """Metrics of the final model: reuse the matching evaluation, or evaluate once more."""
    state = trainer.state
    final_step = state.global_step
    if trainer.args.load_best_model_at_end and state.best_global_step:
        final_step = state.best_global_step
    for ev in reversed(list(read_events(run_dir))):
        if ev.type == "eval" and ev.step == final_step:
            return dict(ev.metrics)
    metrics = trainer.evaluate()
    return {
        (k[5:] if k.startswith("eval_") else k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and k != "epoch"
    }


def _save_now(trainer: Any, ckpt: Path) -> None:
    """Write a resumable checkpoint for the current step (after an interrupt)."""
    try:
        trainer._save_checkpoint(trainer.model, trial=None)
    except Exception:
        from nbtrain.checkpoints import _remove_tree

        _remove_tree(ckpt)  # never leave a half-written checkpoint behind
        raise


def _newest(run_dir: Path) -> str | None:
    c = newest_complete(run_dir)
    return str(c.path) if c else None


def _free(trainer: Any, model: Any) -> None:
    """Drop every reference the engine holds so the memory can go back."""
    with contextlib.suppress(Exception):
        trainer.model = None
        trainer.optimizer = None
        trainer.lr_scheduler = None
    del trainer, model
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def _tensorboard_dir(cfg: Config, run_dir: Path) -> Any:
    """transformers 5 reads the TensorBoard folder from an environment variable."""
    wants_tb = "tensorboard" in (
        cfg.report_to if isinstance(cfg.report_to, list) else [cfg.report_to]
    ) or (cfg.report_to == "all")
    if not wants_tb:
        yield
        return
    old = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(cfg.logging_dir or run_dir / "tensorboard"))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old


__all__ = ["MARKER", "Outcome", "Prepared", "Ref", "open_run", "prepare", "run", "write_marker"]
