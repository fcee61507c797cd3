"""What a view shows, folded from the run's events: one store of numbers, many ways to show them.

Nothing here renders or imports anything heavy; the HTML view, the card and ``attach`` all read a
:class:`RunState`. Times come from the events themselves, so replaying ``events.jsonl`` gives
the same state as watching the run live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nbtrain.events import Event
from nbtrain.format import fmt_num, fmt_time  # noqa: F401  (re-exported for renderers)

STAGE_LABELS = {
    "load_data": "Reading data",
    "tokenize": "Tokenizing",
    "load_model": "Loading model",
    "build_trainer": "Building trainer",
}
# Metrics that describe the evaluation loop itself, not the model.
_TIMING_SUFFIXES = ("runtime", "per_second")
# Defaults the engine's tasks use to pick the best checkpoint, in order of preference.
_BEST_DEFAULTS = (
    ("accuracy", True),
    ("f1", True),
    ("mse", False),
    ("reward", True),  # grpo picks its best checkpoint by the eval reward
    ("loss", False),
)
_LOWER_IS_BETTER = ("loss", "mse", "mae", "perplexity", "error")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better, from its name (loss, mse, perplexity,
    error ... are lower-is-better), as the engine decides when no direction is configured."""
    name = metric[5:] if metric.startswith("eval_") else metric
    return not any(w in name for w in _LOWER_IS_BETTER)


def rerun_advice(run: str, named: bool, *, failed: bool = False) -> str:
    """How to resume a run, true for runs with and without a ``name:`` in their config.

    A run whose config names it resumes when the same cell, call or command runs again. A run
    without one got its folder name at start, so the advice gives that name to run it under.
    """
    verb = "Fix the cause, then run" if failed else "Run"
    if named or not run:
        return f"{verb} the same cell or command again to resume from it."
    return (
        f"{verb} it again under its name to resume from it: %%finetune {run} in a cell, "
        f"--name {run} on the command line, name={run!r} in Python."
    )


def model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` without the evaluation loop's timings (runtime, samples per second)."""
    return {k: v for k, v in metrics.items() if not k.endswith(_TIMING_SUFFIXES)}


@dataclass
class StageState:
    name: str
    status: str = "start"
    detail: str = ""
    done: int | None = None
    total: int | None = None
    started: float = 0.0
    ended: float | None = None

    @property
    def label(self) -> str:
        return STAGE_LABELS.get(self.name, self.name.replace("_", " ").capitalize())


@dataclass
class EvalRow:
    step: int
    epoch: float
    metrics: dict[str, float]


@dataclass
class RunState:
    """Everything a view shows about one run. Feed it events with :meth:`update`."""

    run: str = ""
    run_dir: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # the start event's fields
    stages: dict[str, StageState] = field(default_factory=dict)
    step: int = 0
    epoch: float = 0.0
    total_steps: int = 0
    start_step: int = 0
    start_time: float | None = None
    last_time: float | None = None
    logs: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    evals: list[EvalRow] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # of the latest evaluation
    details_by_step: dict[int, dict[str, Any]] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    early_stop: str | None = None  # "stopped early at epoch 3: no improvement of ..."
    error: Any = None  # ErrorEvent
    end: Any = None  # RunEnded
    tokens_per_second: float | None = None
    _tokens_at: tuple[float, float] | None = None  # (time, tokens seen) at the first log

    # -- folding events --------------------------------------------------------------------------
    def update(self, ev: Event) -> None:
        """Fold one event into the state."""
        t = ev.type
        if t == "stage":
            st = self.stages.get(ev.name)
            if st is None or (ev.status == "start" and st.status == "done"):
                st = self.stages[ev.name] = StageState(name=ev.name, started=ev.time)
            st.status = ev.status
            st.detail = ev.detail or st.detail
            st.done = ev.done if ev.done is not None else st.done
            st.total = ev.total if ev.total is not None else st.total
            if ev.status == "done":
                st.ended = ev.time
        elif t == "start":
            self.info = {k: getattr(ev, k) for k in ev.__dataclass_fields__}
            self.run, self.run_dir = ev.run, ev.run_dir
            self.total_steps = ev.total_steps
            self.step = self.start_step = ev.step
            self.start_time = self.last_time = ev.time
            self.end = None
            self.error = None
            # A resumed run replays the steps after its checkpoint: drop the first attempt's
            # values for them so the curves and the table show each step once.
            self.logs = [(s, v) for s, v in self.logs if s <= ev.step]
            self.evals = [r for r in self.evals if r.step <= ev.step]
            self.epoch = 0.0
        elif t == "step":
            self.step, self.epoch = ev.step, ev.epoch
            self.total_steps = ev.total_steps or self.total_steps
            self.last_time = ev.time
        elif t == "log":
            self.logs.append((ev.step, dict(ev.values)))
            self._progress(ev)
            self._tokens(ev)
        elif t == "eval":
            self.evals.append(EvalRow(ev.step, ev.epoch, dict(ev.metrics)))
            if ev.details:
                self.details = dict(ev.details)
                self.details_by_step[ev.step] = self.details
            self._progress(ev)
        elif t == "checkpoint":
            self.checkpoints.append(ev.path)
        elif t == "notice":
            if ev.kind == "early_stop":
                self.early_stop = ev.message  # shown on its own line, not among the notes
            else:
                self.notices.append(ev.message)
        elif t == "error":
            self.error = ev
        elif t == "end":
            self.end = ev
            self.step = max(self.step, ev.step)
            self.last_time = ev.time

    def _progress(self, ev: Any) -> None:
        # Logs and evaluations carry the step too: a view rebuilt from events.jsonl (where
        # per-step events are not kept) still knows how far the run got.
        if ev.step >= self.step:
            self.step = ev.step
            self.epoch = max(self.epoch, getattr(ev, "epoch", 0.0) or 0.0)
            self.last_time = max(self.last_time or ev.time, ev.time)

    def _tokens(self, ev: Any) -> None:
        seen = ev.values.get("num_input_tokens_seen")
        if seen is None:
            return
        if self._tokens_at is None:
            self._tokens_at = (ev.time, seen)
        elif ev.time > self._tokens_at[0]:
            self.tokens_per_second = (seen - self._tokens_at[1]) / (ev.time - self._tokens_at[0])

    # -- derived numbers ---------------------------------------------------------------------------
    @property
    def named(self) -> bool:
        """Whether the run's config gave it its name (else the folder name was made up)."""
        config = self.info.get("config") or {}
        return bool(config.get("name")) if isinstance(config, dict) else False

    @property
    def started(self) -> bool:
        return self.start_time is not None

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def status(self) -> str:
        if self.end is not None:
            return self.end.status
        if self.error is not None:
            return "failed"
        return "training" if self.started else "preparing"

    @property
    def elapsed(self) -> float:
        if self.end is not None and self.end.duration_s:
            return float(self.end.duration_s)
        if self.start_time is None or self.last_time is None:
            return 0.0
        return max(0.0, self.last_time - self.start_time)

    @property
    def steps_per_second(self) -> float | None:
        done = self.step - self.start_step
        if done <= 0 or self.start_time is None or self.last_time is None:
            return None
        span = self.last_time - self.start_time
        return done / span if span > 0 else None

    @property
    def samples_per_second(self) -> float | None:
        if self.end is not None and self.end.train_samples_per_second:
            return float(self.end.train_samples_per_second)
        rate = self.steps_per_second
        batch = self.info.get("batch_size") or 0
        return rate * batch if rate and batch else None

    @property
    def eta(self) -> float | None:
        """Seconds left, once at least one step has been timed; None before."""
        if self.ended:
            return 0.0
        rate = self.steps_per_second
        if not rate or not self.total_steps:
            return None
        return max(0.0, (self.total_steps - self.step) / rate)

    @property
    def fraction(self) -> float:
        if not self.total_steps:
            return 0.0
        return min(1.0, self.step / self.total_steps)

    @property
    def train_loss(self) -> list[tuple[int, float]]:
        return [(s, v["loss"]) for s, v in self.logs if "loss" in v]

    @property
    def learning_rate(self) -> list[tuple[int, float]]:
        return [(s, v["learning_rate"]) for s, v in self.logs if "learning_rate" in v]

    @property
    def metric_names(self) -> list[str]:
        """Evaluation metric names in first-seen order, timings left out."""
        names: list[str] = []
        for row in self.evals:
            for k in model_metrics(row.metrics):
                if k not in names:
                    names.append(k)
        return names

    @property
    def best_metric(self) -> tuple[str, bool] | None:
        """(metric, greater is better) that picks the best evaluation, as the engine picks it."""
        cfg = self.info.get("config") or {}
        name = cfg.get("metric_for_best_model")
        if name:
            name = name[5:] if name.startswith("eval_") else name
            greater = cfg.get("greater_is_better")
            if greater is None:
                greater = higher_is_better(name)
            return name, bool(greater)
        names = self.metric_names
        for metric, greater in _BEST_DEFAULTS:
            if metric in names:
                return metric, greater
        return None

    @property
    def best_index(self) -> int | None:
        """Index into :attr:`evals` of the best evaluation (the first of equals), or None."""
        if self.end is not None and self.end.best_checkpoint:
            step = _checkpoint_step(self.end.best_checkpoint)
            for i, row in enumerate(self.evals):
                if row.step == step:
                    return i
        best = self.best_metric
        if best is None:
            return None
        name, greater = best
        idx, value = None, None
        for i, row in enumerate(self.evals):
            v = row.metrics.get(name)
            if v is None or not math.isfinite(v):
                continue
            if value is None or (v > value if greater else v < value):
                idx, value = i, v
        return idx

    @property
    def final_details(self) -> dict[str, Any]:
        """Confusion matrix and per-class scores of the final model: the best evaluation's when
        the run kept its best checkpoint, else the latest."""
        if self.end is not None and self.end.best_checkpoint:
            step = _checkpoint_step(self.end.best_checkpoint)
            if step in self.details_by_step:
                return self.details_by_step[step]
        return self.details

    @property
    def final_metrics(self) -> dict[str, float]:
        """The end event's metrics, else the latest evaluation's (with ``eval_`` prefixes)."""
        if self.end is not None and self.end.metrics:
            return dict(self.end.metrics)
        if self.evals:
            return {f"eval_{k}": v for k, v in self.evals[-1].metrics.items()}
        return {}


def _checkpoint_step(path: str) -> int | None:
    tail = str(path).rstrip("/").rsplit("/", 1)[-1]
    if tail.startswith("checkpoint-"):
        try:
            return int(tail.split("-", 1)[1])
        except ValueError:
            return None
    return None


def state_from_events(events: Any) -> RunState:
    """A :class:`RunState` built from an iterable of events (e.g. ``read_events(run_dir)``)."""
    state = RunState()
    for ev in events:
        state.update(ev)
    return state
