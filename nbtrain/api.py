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
    **overrides: Any,
) -> RunResult | SweepResult:
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
        **overrides: config fields, e.g. ``epochs=1`` or ``**{"data.train": "x.csv"}``.

    Raises:
        ConfigError: bad config or data, before any training.
        RunInterrupted: Ctrl-C / kernel interrupt; a resumable checkpoint was written.
        TrainingFailed: the loss became NaN/inf, or another recognised failure.
    """
    from nbtrain.engine.runner import run

    cfg = load_config(config, **overrides)
    if display == "auto" and cfg.display != "auto":
        display = cfg.display  # the config's `display:` key, unless the caller chose one
    if cfg.sweep is not None:
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
    from nbtrain.lr_finder import resolve_learning_rate

    cfg, keep_curve = resolve_learning_rate(cfg, restart=restart)
    subscribers = _subscribers(display, on_event)
    notices: list[str] = []
    if keep_curve is not None:
        subscribers.insert(0, keep_curve)
        notices.append(keep_curve.message)
    outcome = run(cfg, subscribers=subscribers, restart=restart, stop=stop, notices=notices)
    for fn in subscribers:
        close = getattr(fn, "close", None)
        if callable(close):
            close()
    result = RunResult._from_outcome(outcome, cfg)
    if outcome.status == "interrupted":
        where = f" at {Path(outcome.resume_checkpoint).name}" if outcome.resume_checkpoint else ""
        raise RunInterrupted(
            f"Run {outcome.name!r} was interrupted; progress is saved{where}. Call finetune with "
            "the same name and config (or re-run the cell) to resume.",
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


def _subscribers(display: Any, on_event: Any) -> list[Callable[[Event], None]]:
    subs: list[Callable[[Event], None]] = []
    if callable(display):
        subs.append(display)
    elif display not in (None, "none"):
        from nbtrain.display import make_renderer

        renderer = make_renderer(display)
        if renderer is not None:
            subs.append(renderer)
    if on_event is not None:
        subs.extend([on_event] if callable(on_event) else list(on_event))
    from nbtrain.display.card import CardWriter  # card.html/png, notebook or not

    subs.append(CardWriter())
    return subs


def load_run(name: str | Path, runs_dir: str | Path = "runs") -> RunResult:
    """Open a run from disk by name or folder."""
    from nbtrain.runs import find_run, run_status

    path = find_run(name, runs_dir)
    info = run_status(path)
    return RunResult(name=path.name, output_dir=path, status=info.status, metrics=info.metrics)


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
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None and self.final_dir.is_dir():
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.final_dir))
        return self._tokenizer

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
        task = self._task
        if task is None:
            from nbtrain.config import Config
            from nbtrain.engine.tasks import get_task

            task = get_task(self._task_name(), Config(model="x"))
        return task.predict(self.model, self.tokenizer, inputs, batch_size=batch_size)

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
        task = self._task
        if task is None:
            from nbtrain.engine.tasks import get_task

            task = get_task(self._task_name(), self.config)
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
