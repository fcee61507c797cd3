"""The public API: ``finetune(config) -> RunResult`` and ``load_run(name)``.

Works the same from a notebook, a script, the CLI and ``accelerate launch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtrain.config import Config, load_config
from nbtrain.display.image import PNGImage
from nbtrain.errors import RunInterrupted, TrainingFailed
from nbtrain.events import Event, read_events
from nbtrain.format import fmt_short

if TYPE_CHECKING:
    from nbtrain.sweep import SweepResult


def finetune(
    config: Config | dict[str, Any] | str | Path | None = None,
    /,
    *,
    restart: bool = False,
    display: str | Callable[[Event], None] | None = "auto",
    on_event: Callable[[Event], None] | Iterable[Callable[[Event], None]] | None = None,
    stop: Any = None,
    background: bool = False,
    parallel: bool = False,
    **overrides: Any,
) -> Any:
    """Fine-tune a model and return the result.

    Calling it again with the same ``name`` and config resumes an unfinished run from its newest
    complete checkpoint, or returns the finished run without retraining. A config with a
    ``sweep:`` section runs a hyperparameter search instead and returns a
    :class:`~nbtrain.sweep.SweepResult` (calling it again continues the sweep).
    ``learning_rate: find`` runs the LR finder first and trains with its suggestion.

    Args:
        config: a :class:`Config`, a dict, a YAML path or YAML text.
        restart: start a run of the same name over from scratch.
        display: ``"auto"``, ``"html"``, ``"widgets"``, ``"text"``, ``"none"``, or a callable
            receiving every event.
        on_event: extra subscribers (callables taking an :class:`~nbtrain.events.Event`).
        stop: a ``StopController`` another thread may use to end the run cleanly.
        background: train on a worker thread and return a :class:`~nbtrain.background.RunHandle`
            at once; ``handle.wait()`` gives the RunResult (for a sweep: a ``SweepHandle``
            whose ``wait()`` gives the SweepResult).
        parallel: start now even if a background run of this kernel is training (by default
            runs queue and train one at a time; a foreground run waits in its cell).
        **overrides: config fields, e.g. ``epochs=1`` or ``**{"data.train": "x.csv"}``.

    Returns:
        A :class:`RunResult`, or a ``RunHandle`` when ``background=True``.

    Raises:
        ConfigError: bad config or data, before any training.
        RunInterrupted: Ctrl-C / kernel interrupt; a resumable checkpoint was written.
        TrainingFailed: the loss became NaN/inf, or another recognised failure.
    """
    # A Config was validated when it was built: it is used as it is.
    cfg = (
        config if isinstance(config, Config) and not overrides else load_config(config, **overrides)
    )
    if display == "auto" and cfg.display != "auto":
        display = cfg.display  # the config's `display:` key, unless the caller chose one
    parallel = parallel or cfg.parallel
    if cfg.sweep is not None:
        if background:
            return _start_background(
                cfg,
                restart=restart,
                display=display,
                on_event=on_event,
                parallel=parallel,
                sweep=True,
            )
        from nbtrain.sweep import run_sweep

        return run_sweep(
            cfg,
            restart=restart,
            display=display,
            on_event=on_event,
            stop=stop,
            train=finetune,
            load_run=load_run,
        )
    if background:
        return _start_background(
            cfg, restart=restart, display=display, on_event=on_event, parallel=parallel
        )
    subscribers = _subscribers(display, on_event)
    from nbtrain.background import running, train_slot

    def queued(note: str) -> None:  # a background run of this kernel is training: say so
        for fn in subscribers:
            if hasattr(fn, "status_note") and hasattr(fn, "show"):
                fn.status_note = note
                fn.show()

    try:
        if parallel or not running():
            return run_config(cfg, subscribers=subscribers, restart=restart, stop=stop)
        with train_slot(queued):
            for fn in subscribers:
                if hasattr(fn, "status_note"):
                    fn.status_note = ""
            return run_config(cfg, subscribers=subscribers, restart=restart, stop=stop)
    finally:
        for fn in subscribers:
            close = getattr(fn, "close", None)
            if callable(close):
                close()


def run_config(
    cfg: Config,
    *,
    subscribers: list[Callable[[Event], None]],
    restart: bool = False,
    stop: Any = None,
) -> RunResult:
    """Train ``cfg`` on this thread with these subscribers: the core of :func:`finetune`."""
    from nbtrain.engine.runner import run
    from nbtrain.lr_finder import resolve_learning_rate

    cfg, keep_curve = resolve_learning_rate(cfg, restart=restart)  # learning_rate: find
    notices: list[str] = []
    if keep_curve is not None:
        subscribers = [keep_curve, *subscribers]
        notices.append(keep_curve.message)
    outcome = run(cfg, subscribers=subscribers, restart=restart, stop=stop, notices=notices)
    result = RunResult._from_outcome(outcome, cfg)
    if outcome.status == "interrupted":
        raise RunInterrupted(
            _interrupted_message(outcome.name, outcome.resume_checkpoint, named=bool(cfg.name)),
            run_dir=str(outcome.run_dir),
            checkpoint=outcome.resume_checkpoint,
        )
    if outcome.status == "failed" and outcome.error is not None:
        raise TrainingFailed(
            f"{outcome.error.message} {outcome.error.advice}".strip(),
            kind=outcome.error.kind,
            run_dir=str(outcome.run_dir),
        )
    return result


def run_sweep_config(
    cfg: Config,
    *,
    subscribers: list[Callable[[Event], None]],
    restart: bool = False,
    stop: Any = None,
) -> SweepResult:
    """Run (or continue) the sweep ``cfg`` on this thread: the core of a background sweep.

    Its trials train through :func:`finetune` with ``parallel=True``: the sweep already holds
    this kernel's training slot."""
    from nbtrain.sweep import run_sweep

    return run_sweep(
        cfg,
        restart=restart,
        display="none",
        on_event=subscribers,
        stop=stop,
        train=_train_trial,
        load_run=load_run,
    )


def _train_trial(cfg: Config, **kw: Any) -> RunResult:
    return finetune(cfg, parallel=True, **kw)


def _start_background(
    cfg: Config, *, restart: bool, display: Any, on_event: Any, parallel: bool, sweep: bool = False
) -> Any:
    import copy

    from nbtrain.background import RunHandle, SweepHandle
    from nbtrain.display.card import CardWriter
    from nbtrain.engine.rundir import default_name

    if sweep:
        from nbtrain.sweep import check_sweep, sweep_dir

        check_sweep(cfg, restart=restart)  # Optuna missing, a changed config: raised here, now
        cfg = copy.copy(cfg)
        cfg.name = sweep_dir(cfg).name  # the handle, attach/stop and the folder agree on it
    elif not cfg.name:
        # Pin the name now: the handle, %nbtrain attach/stop and the folder must agree on it.
        cfg = copy.copy(cfg)
        cfg.name = default_name(cfg)
    extra: list[Callable[[Event], None]] = []
    view = None
    if hasattr(display, "state") and hasattr(display, "show"):
        view, display = display, "none"  # a live view the caller built (the form's panel)
    elif callable(display):
        extra.append(display)
        display = "none"
    if on_event is not None:
        extra.extend([on_event] if callable(on_event) else list(on_event))
    if sweep:  # each trial's run writes its own card
        handle: RunHandle = SweepHandle(
            cfg, restart=restart, parallel=parallel, subscribers=extra, target=run_sweep_config
        )
        view = view or _sweep_view(display)
    else:
        extra.append(CardWriter())
        handle = RunHandle(
            cfg, restart=restart, parallel=parallel, subscribers=extra, target=run_config
        )
        view = view or _view(display, on_stop=handle.stop)
    handle.start()
    if view is not None:
        handle.watch(view)
        getattr(view, "show", lambda: None)()
    return handle


def _sweep_view(display: Any, show: Any = None) -> Any:
    """A background sweep's view: its trial panel (the text log outside a notebook)."""
    if show is not None:
        from nbtrain.display.sweep import SweepPanel

        return SweepPanel(display=show)
    if display in (None, "none"):
        return None
    from nbtrain.display.sweep import make_sweep_renderer

    return make_sweep_renderer(display)


def _view(display: Any, *, on_stop: Any = None) -> Any:
    """The view for ``display``. With ``on_stop`` (a background run), ``auto`` prefers the
    widget view where widgets work: its Stop button is how such a run is stopped."""
    if display in (None, "none"):
        return None
    from nbtrain.display import make_renderer, resolve_mode
    from nbtrain.display.frontend import widgets_available

    if on_stop is not None and display == "auto" and resolve_mode("auto") == "html":
        if widgets_available()[0]:
            display = "widgets"
    return make_renderer(display, on_stop=on_stop)


def _interrupted_message(name: str, checkpoint: str | None, *, named: bool) -> str:
    if not checkpoint:
        return (
            f"Run {name!r} was interrupted before its first checkpoint; running it again starts "
            "from the beginning."
        )
    saved = f"Run {name!r} was interrupted; progress is saved at {Path(checkpoint).name}."
    if named:
        return f"{saved} Call finetune with the same config (or re-run the cell) to resume."
    # No name in the config: its folder name was made up at start, so say which one to reuse.
    return (
        f"{saved} To resume, run the same config under this name: finetune(config, "
        f"name={name!r}), %%finetune {name} in a cell, or --name {name} on the command line."
    )


def _subscribers(display: Any, on_event: Any) -> list[Callable[[Event], None]]:
    subs: list[Callable[[Event], None]] = []
    if callable(display):
        subs.append(display)
    else:
        renderer = _view(display)
        if renderer is not None:
            subs.append(renderer)
    if on_event is not None:
        subs.extend([on_event] if callable(on_event) else list(on_event))
    from nbtrain.display.card import CardWriter  # card.html/png, notebook or not

    subs.append(CardWriter())
    return subs


def attach(
    name: str, runs_dir: str | Path = "runs", *, display: Any = None, mode: str = "auto"
) -> Any:
    """Show a run's live view in this cell: the curves so far, then every new point.

    Works for a background run of this kernel (after a browser reload or in a second tab too),
    for a run another process is training (CLI, ``accelerate launch``), and for a finished run
    (its card). For a sweep it shows the trial panel: live for a background sweep of this
    kernel, else rebuilt from the sweep's ``sweep.jsonl``.

    Args:
        name: the run name (or its folder).
        runs_dir: where runs live.
        display: ``display(obj) -> handle`` (tests); IPython's by default.
        mode: the view (auto | html | widgets | text).

    Returns:
        The run's RunHandle for a background run of this kernel, else what
        :func:`nbtrain.display.attach` returns.
    """
    from nbtrain.background import RUNS

    handle = RUNS.get(str(name))
    if handle is not None and not handle.done and handle.kind == "sweep":
        sweep_view = _sweep_view(mode, show=display)  # the sweep's trial panel
        if sweep_view is not None:
            handle.watch(sweep_view)
            getattr(sweep_view, "show", lambda: None)()
        return handle
    if handle is not None and not handle.done:
        if display is not None:
            from nbtrain.display.live import HtmlRenderer

            view = HtmlRenderer(display=display, write_card=False)
        else:
            view = _view(mode, on_stop=handle.stop)
            if view is None:
                return handle
            view.write_card = False  # the run's first view writes the card
        handle.watch(view)
        view.show()
        return handle
    from nbtrain.display import attach as attach_from_log

    return attach_from_log(name, runs_dir, display=display, mode=mode)


def load_run(name: str | Path, runs_dir: str | Path = "runs") -> RunResult:
    """Open a run from disk by name or folder."""
    from nbtrain.runs import find_run, run_status

    path = find_run(name, runs_dir)
    info = run_status(path)
    return RunResult(name=path.name, output_dir=path, status=info.status, metrics=info.metrics)


def arena(
    models: list[Any],
    prompts: list[Any] | str | None = None,
    *,
    runs_dir: str | Path = "runs",
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> Any:
    """The same prompts generated by each model, side by side.

    Args:
        models: run names (under ``runs_dir``), run folders, RunResults, hub ids or model folders
            (a base model beside its fine-tuned runs); causal-lm, seq2seq and post-training runs.
        prompts: texts (or chat conversations); default: the prompts of the samples the first
            run recorded at its last evaluation.
        max_new_tokens, do_sample, temperature, top_p, seed: one generation setting for all
            (greedy by default; sampling starts every model from the same seed).

    Returns:
        An ``ArenaView``: an HTML table in a notebook, text in a terminal, ``.outputs`` by model.
    """
    from nbtrain.display.arena import ArenaView
    from nbtrain.engine.arena import run_arena

    models = [models] if isinstance(models, (str, Path)) else list(models)
    if prompts is None:
        prompts = _recorded_prompts(models, runs_dir)
    result = run_arena(
        models,
        prompts,
        runs_dir=runs_dir,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    return ArenaView(result)


def _recorded_prompts(models: list[Any], runs_dir: str | Path) -> list[str]:
    """The sample prompts of the newest evaluation of the first run among ``models``."""
    from nbtrain.errors import ConfigError
    from nbtrain.runs import find_run

    for spec in models:
        path = getattr(spec, "output_dir", None)
        if path is None:
            try:
                path = find_run(str(spec), runs_dir)
            except ConfigError:
                continue
        for ev in reversed(list(read_events(Path(path)))):
            samples = (
                (getattr(ev, "details", None) or {}).get("samples") if ev.type == "eval" else None
            )
            if samples:  # a chat run's samples keep their messages for the chat template
                return [s.get("messages") or s["prompt"] for s in samples if s.get("prompt")]
    raise ConfigError(
        "arena: give prompts=[...]; none of the models is a run with recorded sample prompts."
    )


def load_sweep(name: str | Path, runs_dir: str | Path = "runs") -> SweepResult:
    """Open a sweep from disk by name or folder (its trials, best run and best config)."""
    from nbtrain.sweep import SweepResult, find_sweep

    return SweepResult(find_sweep(name, runs_dir), load_run=load_run)


class RunResult:
    """A run's outcome: metrics, history, the model, and ``predict``.

    Attributes:
        name: the run name.
        output_dir: the run folder (``runs/<name>``).
        status: finished | stopped | interrupted | failed.
        metrics: final train and eval metrics (``train_loss``, ``eval_accuracy``, ...).
    """

    def __init__(
        self,
        *,
        name: str,
        output_dir: Path,
        status: str,
        metrics: dict[str, float] | None = None,
        model: Any = None,
        tokenizer: Any = None,
        task: Any = None,
        config: Config | None = None,
    ) -> None:
        self.name = name
        self.output_dir = Path(output_dir)
        self.status = status
        self.metrics = dict(metrics or {})
        self._model = model
        self._tokenizer = tokenizer
        self._task = task
        self._config = config

    @classmethod
    def _from_outcome(cls, outcome: Any, cfg: Config) -> RunResult:
        return cls(
            name=outcome.name,
            output_dir=outcome.run_dir,
            status=outcome.status,
            metrics=outcome.metrics,
            model=outcome.model,
            tokenizer=outcome.tokenizer,
            task=outcome.task,
            config=cfg,
        )

    # -- what the run left -------------------------------------------------------------------
    @property
    def final_dir(self) -> Path:
        return self.output_dir / "final"

    @property
    def config(self) -> Config:
        if self._config is None:
            # Notebook objects are recorded as "{name}" strings: readable, not re-loadable.
            self._config = load_config(self.output_dir / "config.yaml")
        return self._config

    @property
    def events(self) -> list[Event]:
        return list(read_events(self.output_dir))

    @property
    def history(self) -> Any:
        """A pandas DataFrame with one row per logged step (train values and eval metrics)."""
        import pandas as pd

        rows: dict[int, dict[str, Any]] = {}
        for ev in read_events(self.output_dir):
            if ev.type == "log":
                row = rows.setdefault(ev.step, {"step": ev.step})
                row["epoch"] = ev.epoch
                row.update(ev.values)
            elif ev.type == "eval":
                row = rows.setdefault(ev.step, {"step": ev.step})
                row["epoch"] = ev.epoch
                row.update({f"eval_{k}": v for k, v in ev.metrics.items()})
        df = pd.DataFrame([rows[k] for k in sorted(rows)])
        return df

    @property
    def stopped_early(self) -> str | None:
        """Why early stopping ended the run ("stopped early at epoch 3: no improvement of
        eval_accuracy in 2 evaluations"), or None when it ran to its last step."""
        for ev in read_events(self.output_dir):
            if ev.type == "notice" and ev.kind == "early_stop":
                return ev.message
        return None

    @property
    def checkpoints(self) -> list[Any]:
        from nbtrain.runs import list_checkpoints

        return list_checkpoints(self.output_dir)

    @property
    def model(self) -> Any:
        if self._model is None and self.final_dir.is_dir():
            from nbtrain.runs import load_final_model

            self._model = load_final_model(self.final_dir, self._task_name())
        if self._model is None:
            self._raise_if_removed()
        return self._model

    def _raise_if_removed(self) -> None:
        """A sweep trial whose model the sweep removed (sweep.keep) says so, not None."""
        from nbtrain.runs import MODEL_REMOVED

        note = self.output_dir / MODEL_REMOVED
        if note.is_file() and not self.final_dir.is_dir():
            raise FileNotFoundError(f"{self.name}: {note.read_text(encoding='utf-8').strip()}")

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None and self.final_dir.is_dir():
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.final_dir))
        if self._tokenizer is None:
            self._raise_if_removed()
        return self._tokenizer

    def _recipe(self) -> Any:
        """The run's task recipe: the one that trained it, or one rebuilt from the run folder
        with the max_length the run trained with (so predictions truncate where training did)."""
        if self._task is None:
            from nbtrain.config import Config
            from nbtrain.engine.tasks import get_task
            from nbtrain.errors import ConfigError
            from nbtrain.runs import run_max_length

            try:
                cfg = self.config
            except (ConfigError, OSError):  # no config.yaml, or one that no longer loads
                cfg = Config(model="x")
            self._task = get_task(self._task_name(), cfg)
            self._task.max_length = run_max_length(self.output_dir)
        return self._task

    def _task_name(self) -> str:
        from nbtrain.runs import run_task

        return run_task(self.output_dir)

    def export(self, path: str | Path, *, merge: bool = True) -> Path:
        """Write the final model to ``path``; a LoRA adapter is merged into its base model.

        The folder loads with plain ``from_pretrained`` (``merge=False`` copies the adapter).
        """
        from nbtrain.export import export_run

        return export_run(self.output_dir, path, merge=merge, task=self._task_name())

    def predict(self, inputs: str | Iterable[str], *, batch_size: int = 32) -> list[dict[str, Any]]:
        """Predict with the final model: for classification, ``label``, ``score`` and ``probs``."""
        if self.model is None:
            raise RuntimeError(
                f"Run {self.name!r} has no final model (status: {self.status}); resume it first."
            )
        return self._recipe().predict(self.model, self.tokenizer, inputs, batch_size=batch_size)

    def generate(
        self, prompts: Any, *, max_new_tokens: int | None = None, batch_size: int = 16
    ) -> list[str]:
        """Generated text per prompt: the continuation (causal-lm) or the output (seq2seq).

        A causal-lm prompt may also be a list of chat messages (``{"role", "content"}``).
        """
        if self.model is None:
            raise RuntimeError(
                f"Run {self.name!r} has no final model (status: {self.status}); resume it first."
            )
        task = self._recipe()
        n = max_new_tokens or getattr(self.config, "generation_max_new_tokens", 32)
        return task.generate(
            self.model, self.tokenizer, prompts, max_new_tokens=n, batch_size=batch_size
        )

    # -- display -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        metrics = ", ".join(
            f"{k}={fmt_short(v)}"
            for k, v in self.metrics.items()
            if (k.startswith("eval_") or k == "train_loss")
            and not k.endswith(("runtime", "per_second"))  # timings: in .metrics, not the summary
        )
        early = self.stopped_early
        return (
            f"RunResult({self.name!r}, status={self.status!r}"
            + (f", {metrics}" if metrics else "")
            + (f", {early}" if early else "")
            + ")"
        )

    def plot(self, *, confusion: bool = True) -> PNGImage:
        """The run's curves (loss, eval metrics, learning rate; for classification the confusion
        matrix of the final model) as an image that notebooks show and ``.save(path)`` writes."""
        from nbtrain.display.plots import curves_png
        from nbtrain.display.state import RunState

        state = RunState()
        for ev in read_events(self.output_dir):
            state.update(ev)
        return PNGImage(curves_png(state, card=confusion))

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(k)}</td><td style='text-align:right'>{fmt_short(v)}</td></tr>"
            for k, v in self.metrics.items()
        )
        return (
            f"<div><b>nbtrain run</b> <code>{escape(self.name)}</code> — {escape(self.status)}"
            f"<br><small>{escape(str(self.output_dir))}</small>"
            f"<table>{rows}</table></div>"
        )


__all__ = ["PNGImage", "RunResult", "finetune", "load_run", "load_sweep"]
