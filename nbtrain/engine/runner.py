"""The engine: a config in, a finished (or cleanly stopped) run out, events all the way.

Never prints, never imports IPython. Everything users see comes from the events it emits.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nbtrain.config import Config, config_to_dict
from nbtrain.config.load import check_reporters
from nbtrain.config.refs import Ref, unwrap
from nbtrain.engine import shared_state
from nbtrain.engine.callbacks import EventCallback, VisibleEarlyStopping
from nbtrain.engine.cpu_speed import NOTICE_KIND as SPEED_NOTICE
from nbtrain.engine.cpu_speed import (
    attention_kwargs,
    choose_threads,
    disable_sparse_embeddings,
    enable_sparse_embeddings,
    machine_load,
    wants_sparse_embeddings,
)
from nbtrain.engine.distributed import check_before_launch, process_kwargs
from nbtrain.engine.launch import check_world, wants_launch
from nbtrain.engine.library_log import library_log_to, no_progress_bars
from nbtrain.engine.prepare import (  # noqa: F401  (re-exported: the engine's entry points)
    Prepared,
    describe_model,
    prepare,
    steps_per_epoch,
    total_steps,
)
from nbtrain.engine.rundir import (  # noqa: F401
    create_run,
    default_name,
    identity,
    is_main_process,
    locate_run,
    world_size,
    write_env,
)
from nbtrain.engine.safety import Guards, disk_error, is_disk_error, nan_error, train_surviving
from nbtrain.engine.start_from import NOTICE_KIND as START_NOTICE
from nbtrain.engine.start_from import plan_start
from nbtrain.engine.stop import StopController
from nbtrain.engine.trainer_compat import adapt_compute_loss, call_model_init, fix_loss_scaling
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
    run_env,
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
    best_checkpoint: str | None = None
    final_dir: str | None = None
    reused: bool = False  # a finished run shown again without retraining


CPU_BF16_NOTICE = (
    "Mixed precision on this CPU: it has bf16 instructions, so matmuls run in bf16 under "
    "autocast (1.3-1.9x the speed of fp32 for a model this wide, at the same accuracy on SST-2); "
    "weights and optimizer state stay fp32. precision: fp32 trains in fp32 throughout."
)


def run(
    cfg: Config,
    *,
    subscribers: list[Subscriber] | tuple[Subscriber, ...] = (),
    restart: bool = False,
    stop: StopController | None = None,
    notices: tuple[str, ...] | list[str] = (),
) -> Outcome:
    """Train (or resume, or reuse) the run ``cfg`` describes; ``notices`` are shown and logged
    with the data notices (e.g. what ``learning_rate: find`` picked).

    Errors found before training (config, data, the model, the Trainer refusing an argument)
    reach the subscribers and are raised; they change nothing on disk.
    """
    run_dir, name, existing = locate_run(cfg, restart=restart)
    main = is_main_process()
    if not main:
        subscribers = ()  # one progress view and one event log per run, from rank 0
    start = plan_start(cfg, run_dir, existing)  # a wrong resume_from_checkpoint: nothing changes
    if existing and not start.requested:
        info = run_status(run_dir)
        if info.status == "finished" and (run_dir / "final").is_dir():
            for ev in read_events(run_dir):  # replay, so a view shows the finished run
                for fn in subscribers:
                    with contextlib.suppress(Exception):
                        fn(ev)
            return Outcome(
                name=name, run_dir=run_dir, status="finished", metrics=info.metrics, reused=True
            )
    if wants_launch(cfg):  # processes: N -> accelerate's notebook_launcher, rank 0 reports here
        from nbtrain.engine.launch import launch

        return Outcome(
            **launch(cfg, run_dir, name, run, subscribers=subscribers, restart=restart, stop=stop)
        )
    check_world(cfg)
    if main:
        try:  # a runs_dir that cannot be written is a config error, before any work
            Path(cfg.runs_dir).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(_unwritable_message(cfg, e), field="runs_dir") from None
    pending = _Pending()  # events wait for the run folder, written once training can start
    bus = EventBus([pending, *subscribers])
    session = _Session(cfg, run_dir, name, bus, stop or StopController())
    session.notices = list(notices)
    if start.checkpoint and cfg.cpu_threads is None:
        session.resume_threads = run_env(Path(start.checkpoint).parent).get("cpu_threads")
    try:
        session.prepare()
        session.build()
    except BaseException as e:
        session.release()
        if not existing and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # the Trainer may have made output_dir: a refused run leaves nothing
        if isinstance(e, (ConfigError, DataError)):
            kind = "data" if isinstance(e, DataError) else "config"
            bus.emit(ErrorEvent(kind=kind, message=str(e), advice=""))
            bus.emit(RunEnded(status="failed"))
        elif isinstance(e, Exception):
            bus.emit(
                ErrorEvent(
                    kind="error",
                    message=_one_line(e),
                    advice="Nothing was trained and nothing was written.",
                )
            )
            bus.emit(RunEnded(status="failed"))
        raise
    try:
        if not existing:
            create_run(cfg, run_dir, name)
        if main:
            drop_incomplete(run_dir)
            from nbtrain.engine.report import summary_for_env

            write_env(
                run_dir,
                cfg,
                session.dev,
                session.precision,
                session.args,
                data=summary_for_env(session.prep),
                cpu_threads=session.threads_used,
            )
            log = EventLog(run_dir / "events.jsonl")
            pending.flush_into(log)
            bus.subscribers[bus.subscribers.index(pending)] = log
            start.carry_out()  # resume_from_checkpoint: the newer checkpoints it replaces
    except OSError as e:
        session.release()
        raise ConfigError(_unwritable_message(cfg, e), field="runs_dir") from None
    if start.requested:
        bus.emit(Notice(kind=START_NOTICE, message=start.message, data=start.notice_data()))
    return session.train(start.checkpoint)


class _Pending:
    """Holds the persistent events emitted before the run folder exists."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        if event.persist:
            self.events.append(event)

    def flush_into(self, log: EventLog) -> None:
        for ev in self.events:
            log(ev)
        self.events.clear()


def _one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}".rstrip(": ")


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


class _Session:
    """One run in three steps: :meth:`build` the Trainer, :meth:`train`, and one way out
    (:meth:`_end`) that emits the end event and gives the memory back."""

    def __init__(
        self, cfg: Config, run_dir: Path, name: str, bus: EventBus, stop: StopController
    ) -> None:
        self.cfg, self.run_dir, self.name, self.bus, self.stop = cfg, run_dir, name, bus, stop
        self.prep: Prepared | None = None
        self.trainer: Any = None
        self.model: Any = None
        self.threads_before: int | None = None  # torch threads to give back at the end
        self.threads_used: int | None = None  # on the CPU: the torch threads it trains with
        self.resume_threads: int | None = None  # what the run it resumes trained with
        self.sparse_embeddings = False

    def _pick_threads(self) -> None:
        """``cpu_threads``: fewer torch threads on a busy machine (given back in release)."""
        import torch

        current = torch.get_num_threads()
        if self.resume_threads is not None:
            # A resume trains with the thread count the run started with, whatever the load
            # now: float sums depend on it, and a resumed run equals an uninterrupted one.
            choice = choose_threads(self.resume_threads, current=current, cores=None, load=None)
            if choice.message:
                choice = replace(
                    choice,
                    message=f"Resuming with the {choice.threads} torch thread"
                    f"{'s' if choice.threads != 1 else ''} this run trained with (was "
                    f"{current}), so it matches an uninterrupted run bit for bit. Set "
                    "cpu_threads to choose.",
                )
        else:
            cores, load = machine_load()
            choice = choose_threads(self.cfg.cpu_threads, current=current, cores=cores, load=load)
        if choice.threads != choice.before:
            self.threads_before = choice.before
            torch.set_num_threads(choice.threads)
        self.threads_used = choice.threads
        if choice.message:
            self.bus.emit(Notice(kind=SPEED_NOTICE, message=choice.message))

    # -- before training: nothing here touches the run folder -----------------------------------
    def prepare(self) -> None:
        check_reporters(self.cfg.report_to)  # a missing wandb/tensorboard: before any work
        ta = self.cfg.training_args
        if any(
            ta.get(k) not in (None, False, "", []) for k in ("deepspeed", "fsdp", "fsdp_config")
        ):
            from nbtrain.engine.model import device_info

            # the DeepSpeed/FSDP file, its batch sizes, CUDA: before the data and the model load
            # (build() checks again with the resolved precision and fills the step counts)
            kind = device_info().kind
            check_before_launch(
                self.cfg, world=world_size(), device_kind=kind, precision=self.cfg.precision
            )
        self.prep = prepare(self.cfg, self.bus)
        for message in self.prep.notices:
            self.bus.emit(Notice(kind="data", message=message))
        for message in getattr(self, "notices", ()):
            self.bus.emit(Notice(kind="config", message=message))

    def build(self) -> None:
        """Model, TrainingArguments, callbacks and the Trainer."""
        from transformers import Trainer, TrainingArguments, set_seed
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from nbtrain.engine import resume as _resume
        from nbtrain.engine.model import (
            configure_hardware,
            count_parameters,
            device_info,
            load_model,
            quiet_transformers,
            resolve_precision,
        )

        cfg, prep, bus = self.cfg, self.prep, self.bus
        assert prep is not None
        task = prep.task
        self.dev = dev = device_info()
        self.precision = precision = resolve_precision(cfg.precision, dev, prep.model_config)
        configure_hardware(cfg, dev)  # 8-bit optimizers / 4-bit loading need bitsandbytes + CUDA
        if cfg.precision == "auto" and dev.kind == "cpu" and precision == "bf16":
            bus.emit(Notice(kind=SPEED_NOTICE, message=CPU_BF16_NOTICE))

        if dev.kind == "cpu":
            self._pick_threads()
        bus.emit(Stage(name="load_model", status="start", detail=describe_model(cfg)))
        set_seed(cfg.seed)  # a new head initialises the same way every time (resume, re-runs)
        if cfg.model_init is not None:
            with quiet_transformers():  # no "Loading weights" bars or MISSING-keys table
                model = call_model_init(unwrap(cfg.model_init))  # the Trainer's model_init
        elif isinstance(prep.model_source, str):
            attn, attn_notice = attention_kwargs(cfg, dev, prep.model_config)
            model = load_model(
                task.auto_model_class, prep.model_source, cfg, {**task.model_kwargs(), **attn}
            )
            bus.emit(Notice(kind="model", message=_head_notice(prep)))
            if attn_notice:
                bus.emit(Notice(kind=SPEED_NOTICE, message=attn_notice))
        else:
            model = prep.model_source
        self.model = model
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

            model = self.model = apply_lora(model, cfg, task)  # params_trainable = adapters

        n_train = len(prep.train)
        steps = total_steps(n_train, cfg)
        metric, greater = _best_metric(cfg, task)
        kwargs = translate(
            cfg,
            output_dir=str(self.run_dir),
            has_eval=prep.eval is not None,
            metric_for_best_model=metric,
            greater_is_better=greater,
            precision=precision,
            logging_steps=cfg.logging_steps or max(1, min(50, round(steps / 100))),
        )
        kwargs["remove_unused_columns"] = False  # our datasets hold model inputs + length only
        kwargs["length_column_name"] = "length"
        if dev.kind == "cpu":
            kwargs.setdefault("use_cpu", True)
            kwargs["dataloader_pin_memory"] = False
        process_kwargs(  # DDP loss scale, DeepSpeed "auto" values, FSDP checks
            cfg,
            kwargs,
            task=task.name,
            world=world_size(),
            precision=precision,
            device_kind=dev.kind,
            total_steps=steps,
        )
        # accelerate's state is one per process: set-ups take turns and keep it for a run
        # still training in this kernel (engine/shared_state.py).
        with shared_state.setting_up(self, self.name, precision):
            try:
                with _tensorboard_dir(
                    cfg, self.run_dir
                ):  # the task's class: TRL's for post-training
                    args_cls = task.training_args_class() or TrainingArguments
                    self.args = args = args_cls(**task.training_args(kwargs))
            except (ValueError, TypeError) as e:
                raise ConfigError(
                    f"TrainingArguments rejected the config: {str(e).splitlines()[0]}"
                ) from None

            tb_notice = _logging_dir_notice(cfg, self.run_dir)
            if tb_notice:
                bus.emit(Notice(kind="logging", message=tb_notice))
            self.event_cb = event_cb = EventCallback(bus, task, self.stop)
            # Task callbacks first: they add metrics (perplexity, generation) the bridge records.
            callbacks: list[Any] = [*task.callbacks(), event_cb]
            if cfg.early_stopping_patience and args.load_best_model_at_end:
                callbacks.append(VisibleEarlyStopping(bus, cfg.early_stopping_patience))
            elif cfg.early_stopping_patience:
                raise ConfigError(
                    "early_stopping_patience needs evaluation with load_best_model_at_end.",
                    field="early_stopping_patience",
                )
            callbacks += list(cfg.callbacks or [])

            with _tensorboard_dir(cfg, self.run_dir), quiet_transformers():
                trainer_cls = cfg.trainer_class or task.trainer_class() or Trainer
                self.trainer = trainer = trainer_cls(
                    **task.trainer_kwargs(
                        dict(
                            model=model,
                            args=args,
                            train_dataset=prep.train,
                            eval_dataset=prep.eval,
                            data_collator=task.collator(
                                prep.tokenizer,
                                pad_to_multiple_of=8 if precision != "fp32" else None,
                            ),
                            processing_class=prep.tokenizer,
                            compute_metrics=_metrics_fn(cfg, task)
                            if prep.eval is not None
                            else None,
                            callbacks=callbacks,
                            compute_loss_func=task.compute_loss_func(),
                        )
                    )
                )
                # A 4.x compute_loss override runs as written; a per-batch mean loss is divided by
                # the accumulation steps (see trainer_compat).
                adapt_compute_loss(trainer)
                fix_loss_scaling(trainer)
        sparse, why = wants_sparse_embeddings(cfg, dev, model, world=world_size())
        if sparse and enable_sparse_embeddings(trainer, model):
            self.sparse_embeddings = True
            bus.emit(Notice(kind=SPEED_NOTICE, message=why))
        trainer.remove_callback(PrinterCallback)  # the engine never prints; renderers show events
        trainer.remove_callback(ProgressCallback)
        _resume.install_seeded_sampler(trainer, cfg.seed)  # epoch order from (seed, epoch)
        total, trainable = count_parameters(model)
        start = dict(
            run=self.name,
            run_dir=str(self.run_dir),
            task=task.name,
            model=str(describe_model(cfg)),
            device=dev.label,
            precision=precision,
            num_epochs=cfg.num_train_epochs,
            train_samples=n_train,
            eval_samples=len(prep.eval) if prep.eval is not None else 0,
            # samples per optimizer step, all processes together
            batch_size=cfg.per_device_train_batch_size
            * cfg.gradient_accumulation_steps
            * world_size(),
            max_length=prep.max_length,
            params_total=total,
            params_trainable=trainable,
            labels=prep.labels,
            config=config_to_dict(cfg),
        )
        event_cb.on_train_begin = _emit_start(event_cb, bus, start)  # type: ignore[method-assign]
        self.guards = event_cb.guards = Guards(trainer, bus)  # NaN per micro-step, OOM in eval

    # -- training ---------------------------------------------------------------------------
    def train(self, resume: str | None) -> Outcome:
        """Train from ``resume`` (a checkpoint) or from the start; every way out goes via _end."""
        self.event_cb.start_extra = {"resumed_from": resume}
        self.t0 = time.time()
        trainer, run_dir = self.trainer, self.run_dir
        interrupted = False
        try:
            with (
                self.stop.signals(),
                no_progress_bars(),
                library_log_to(run_dir / "library.log"),
            ):
                train_out, failure = train_surviving(
                    trainer, self.guards, self.event_cb, run_dir, resume
                )
        except KeyboardInterrupt:
            interrupted, train_out, failure = True, None, None
        except Exception as e:
            self.bus.emit(
                ErrorEvent(
                    step=trainer.state.global_step,
                    kind="error",
                    message=_one_line(e),
                    advice="See the traceback; the newest complete checkpoint is kept.",
                )
            )
            self._end(Outcome(name=self.name, run_dir=run_dir, status="failed"))
            raise
        return self._end(self._conclude(train_out, failure, interrupted))

    def _conclude(self, train_out: Any, failure: ErrorEvent | None, interrupted: bool) -> Outcome:
        """What the training call left: stopped, failed (NaN, OOM, disk) or finished."""
        trainer, run_dir, step = self.trainer, self.run_dir, self.trainer.state.global_step
        nan_steps = [s for s in (self.guards.nan_step, self.event_cb.nan_step) if s is not None]
        # With several processes only the step-end agreement counts: a request that reached
        # one rank after the last step must not send it to a checkpoint while the others
        # evaluate (their collectives would not match).
        if getattr(trainer.args, "world_size", 1) > 1:
            stopped = self.event_cb.stopping
        else:
            stopped = self.stop.requested
        if failure is None and not nan_steps and (interrupted or stopped):
            failure = self._save_on_stop(step)
            if failure is None:
                status = "stopped" if self.stop.reason == "stopped" else "interrupted"
                return self._outcome(status)
        if failure is None and nan_steps:
            # The last good checkpoint: saved before the NaN step, with finite weights.
            kept = prune_after_nan(run_dir, min(nan_steps))
            failure = nan_error(min(nan_steps), str(kept.path) if kept else None)
        if failure is None:
            metrics = _train_metrics(train_out)
            if self.prep is not None and self.prep.eval is not None:
                evals = _final_eval(trainer, run_dir)
                metrics.update({f"eval_{k}": v for k, v in evals.items()})
            failure = self._save_final(step)
            if failure is None:
                best = trainer.state.best_model_checkpoint
                return self._outcome(
                    "finished",
                    metrics=metrics,
                    best_checkpoint=str(best) if best else None,
                    final_dir=str(run_dir / "final"),
                )
        self.bus.emit(failure)
        return self._outcome("failed", error=failure)

    def _save_on_stop(self, step: int) -> ErrorEvent | None:
        """A resumable checkpoint of the last finished step (after Stop or an interrupt)."""
        ckpt = self.run_dir / f"checkpoint-{step}"
        try:
            if step > 0 and not is_complete(ckpt):
                self.event_cb.rng.restore(step)  # the RNG as the step left it, not mid-forward
                with no_progress_bars():  # no "Writing model shards" bar in the user's cell
                    _save_now(self.trainer, ckpt)
                self.event_cb.on_save(self.trainer.args, self.trainer.state, self.trainer.control)
        except OSError as e:
            if not is_disk_error(e):
                raise
            return disk_error(e, ckpt, step, _newest(self.run_dir))
        return None

    def _save_final(self, step: int) -> ErrorEvent | None:
        """``final/``: written beside, then moved in, so a full disk never leaves half of it."""
        trainer, run_dir, prep = self.trainer, self.run_dir, self.prep
        final_dir, tmp_final = run_dir / "final", run_dir / "final.tmp"
        main = is_main_process()
        if main:  # another rank removing it could race rank 0's write into it
            shutil.rmtree(tmp_final, ignore_errors=True)
        try:
            with no_progress_bars():
                trainer.save_model(str(tmp_final))
                if self.cfg.lora is not None and main:
                    from nbtrain.engine.lora import save_base_config

                    save_base_config(trainer.model, tmp_final)  # label maps beside the adapter
            if main:  # save_model is collective (DeepSpeed/FSDP); the rest: rank 0
                if prep is not None and prep.tokenizer is not None:
                    prep.tokenizer.save_pretrained(str(tmp_final))
                shutil.rmtree(final_dir, ignore_errors=True)
                os.replace(tmp_final, final_dir)
        except OSError as e:
            if not is_disk_error(e):
                raise
            # The checkpoints are intact: a re-run resumes from the last one and saves final/.
            shutil.rmtree(tmp_final, ignore_errors=True)
            return disk_error(e, run_dir, step, _newest(run_dir), what="the final model")
        return None

    def _outcome(self, status: str, **kw: Any) -> Outcome:
        return Outcome(
            name=self.name,
            run_dir=self.run_dir,
            status=status,
            task=self.prep.task if self.prep is not None else None,
            **kw,
        )

    def _end(self, outcome: Outcome) -> Outcome:
        """The one way out: the end event, then the memory back (the model stays with a
        finished run's result)."""
        step = self.trainer.state.global_step if self.trainer is not None else 0
        if outcome.status != "finished":
            outcome.resume_checkpoint = _newest(self.run_dir)
        self.bus.emit(
            RunEnded(
                step=step,
                status=outcome.status,
                metrics=outcome.metrics,
                best_checkpoint=outcome.best_checkpoint,
                final_dir=outcome.final_dir,
                resume_checkpoint=outcome.resume_checkpoint,
                duration_s=time.time() - self.t0,
                train_samples_per_second=outcome.metrics.get("train_samples_per_second"),
            )
        )
        if self.sparse_embeddings and self.trainer is not None:
            disable_sparse_embeddings(self.trainer.model)  # the model handed back trains anywhere
        if outcome.status == "finished":
            outcome.model = self.trainer.model
            outcome.tokenizer = self.prep.tokenizer if self.prep is not None else None
        self.release()
        return outcome

    def release(self) -> None:
        """Drop every reference the engine holds so the memory can go back."""
        shared_state.release(self)
        trainer, self.trainer, self.model = self.trainer, None, None
        if trainer is not None:
            with contextlib.suppress(Exception):
                trainer.model = None
                trainer.optimizer = None
                trainer.lr_scheduler = None
        del trainer
        if self.threads_before is not None:
            import torch

            torch.set_num_threads(self.threads_before)  # the notebook's own work after the run
            self.threads_before = None
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _train_metrics(train_out: Any) -> dict[str, float]:
    if train_out is None:
        return {}
    return {
        f"train_{k}" if not k.startswith("train_") else k: float(v)
        for k, v in train_out.metrics.items()
        if isinstance(v, (int, float)) and k != "epoch"
    }


def _emit_start(cb: EventCallback, bus: EventBus, kwargs: dict[str, Any]) -> Any:
    def on_train_begin(args: Any, state: Any, control: Any, **kw: Any) -> None:
        if getattr(cb, "started", False):
            return  # train() again after an OOM: the same run goes on
        cb.started = True
        cb.train_start = time.time()
        extra = getattr(cb, "start_extra", {})
        bus.emit(RunStarted(step=state.global_step, total_steps=state.max_steps, **kwargs, **extra))

    return on_train_begin


def _head_notice(prep: Prepared) -> str:
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


def _final_eval(trainer: Any, run_dir: Path) -> dict[str, float]:
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


def tensorboard_folder(cfg: Config, run_dir: Path) -> Path:
    """Where TensorBoard files go: ``<logging_dir>/<run name>`` (so ``tensorboard --logdir
    <logging_dir>``, the tutorial's command, shows each run as its own line), else
    ``<run>/tensorboard``."""
    if cfg.logging_dir:
        return Path(cfg.logging_dir).expanduser() / run_dir.name
    return run_dir / "tensorboard"


def _logging_dir_notice(cfg: Config, run_dir: Path) -> str | None:
    if not cfg.logging_dir:
        return None
    reporters = cfg.report_to if isinstance(cfg.report_to, list) else [cfg.report_to]
    if "tensorboard" in reporters or "all" in reporters:
        folder = tensorboard_folder(cfg, run_dir)
        return (
            f"TensorBoard logs go to {folder}; see them with: tensorboard --logdir "
            f"{cfg.logging_dir}"
        )
    return (
        f"logging_dir: {cfg.logging_dir} is set but report_to does not name tensorboard, so "
        "no TensorBoard files are written; add report_to: tensorboard to write them there."
    )


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
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_folder(cfg, run_dir))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old


__all__ = ["MARKER", "Outcome", "Prepared", "Ref", "locate_run", "prepare", "run", "write_marker"]
