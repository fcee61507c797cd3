"""The engine: a config in, a finished (or cleanly stopped) run out, events all the way.

Never prints, never imports IPython. Everything users see comes from the events it emits.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtrain.config import Config, config_to_dict
from nbtrain.config.refs import Ref, unwrap
from nbtrain.engine.callbacks import EventCallback, StopController, VisibleEarlyStopping
from nbtrain.engine.prepare import (  # noqa: F401  (re-exported: the engine's entry points)
    Prepared,
    describe_model,
    prepare,
    steps_per_epoch,
    total_steps,
)
from nbtrain.engine.rundir import (  # noqa: F401
    default_name,
    identity,
    is_main_process,
    open_run,
    write_env,
)
from nbtrain.engine.safety import Guards, disk_error, is_disk_error, nan_error, train_surviving
from nbtrain.engine.training_args import translate
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
from nbtrain.runs import (
    MARKER,
    drop_incomplete,
    is_complete,
    newest_complete,
    prune_after_nan,
    run_status,
    write_marker,
)


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


def run(
    cfg: Config,
    *,
    subscribers: list[Subscriber] | tuple[Subscriber, ...] = (),
    restart: bool = False,
    stop: StopController | None = None,
    notices: tuple[str, ...] | list[str] = (),
) -> Outcome:
    """Train (or resume, or reuse) the run ``cfg`` describes; ``notices`` are shown and logged
    with the data notices (e.g. what ``learning_rate: find`` picked)."""
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
                metrics=info.metrics,  # run_status read the end event's metrics
                reused=True,
            )
        ckpt = newest_complete(run_dir)
        resume = str(ckpt.path) if ckpt else None
        if is_main_process():
            drop_incomplete(run_dir)

    try:
        prep = prepare(cfg, bus)
        for message in prep.notices:
            bus.emit(Notice(kind="data", message=message))
        for message in notices:
            bus.emit(Notice(kind="config", message=message))
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


def _train(
    cfg: Config,
    prep: Prepared,
    run_dir: Path,
    name: str,
    bus: EventBus,
    stop: StopController,
    resume: str | None,
) -> Outcome:
    from transformers import Trainer, TrainingArguments

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
    if cfg.freeze_embeddings:
        embeddings = model.get_input_embeddings()
        if embeddings is None:
            raise ConfigError(
                f"freeze_embeddings: {type(model).__name__} has no input embeddings to freeze.",
                field="freeze_embeddings",
            )
        embeddings.weight.requires_grad_(False)  # no gradient, no optimizer state for it
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
        callbacks.append(VisibleEarlyStopping(bus, cfg.early_stopping_patience))
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
    _resume.install_seeded_sampler(
        trainer, cfg.seed
    )  # exact resume: epoch order from (seed, epoch)
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
        return _failed(failure, trainer, model, bus, run_dir, name, task, step, t0)

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
    try:
        with _quiet_hf_progress():
            trainer.save_model(str(tmp_final))
            if cfg.lora is not None:
                from nbtrain.engine.lora import save_base_config

                save_base_config(trainer.model, tmp_final)  # label maps beside the adapter
        if is_main_process():  # save_model is collective (DeepSpeed/FSDP); the rest is rank 0's
            if prep.tokenizer is not None:
                prep.tokenizer.save_pretrained(str(tmp_final))
            shutil.rmtree(final_dir, ignore_errors=True)
            os.replace(tmp_final, final_dir)
    except OSError as e:
        if not is_disk_error(e):
            raise
        # The checkpoints are intact: a re-run resumes from the last one and saves final/ again.
        shutil.rmtree(tmp_final, ignore_errors=True)
        failure = disk_error(e, run_dir, step, _newest(run_dir), what="the final model")
        return _failed(failure, trainer, model, bus, run_dir, name, task, step, t0)

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


def _failed(
    failure: ErrorEvent,
    trainer: Any,
    model: Any,
    bus: EventBus,
    run_dir: Path,
    name: str,
    task: Any,
    step: int,
    t0: float,
) -> Outcome:
    """End a run on a recognised failure: the error event, a failed end, memory given back."""
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
        from nbtrain.runs import remove_tree

        remove_tree(ckpt)  # never leave a half-written checkpoint behind
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
