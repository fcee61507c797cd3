"""Typed run events: the one record of what happened, for live views, cards and the run store.

The engine emits these to subscribers and appends them to ``runs/<name>/events.jsonl``
(one JSON object per line, each with ``type`` and ``step``). Renderers subscribe; nothing
here imports torch or IPython.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of all events. ``step`` is the optimizer step the event belongs to."""

    type: ClassVar[str] = "event"
    #: Events with ``persist = False`` go to subscribers only (e.g. per-step progress).
    persist: ClassVar[bool] = True

    step: int = 0
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.type}
        d.update({f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)})
        return d


@dataclass(frozen=True)
class Stage(Event):
    """A preparation stage before training (loading the model, reading and tokenizing data)."""

    type: ClassVar[str] = "stage"
    name: str = ""  # load_data | tokenize | load_model | build_trainer
    status: str = "start"  # start | progress | done
    detail: str = ""
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class RunStarted(Event):
    """Training is about to start: everything the view needs to size itself."""

    type: ClassVar[str] = "start"
    run: str = ""
    run_dir: str = ""
    task: str = ""
    model: str = ""
    device: str = ""
    precision: str = "fp32"
    total_steps: int = 0
    num_epochs: float = 0.0
    train_samples: int = 0
    eval_samples: int = 0
    batch_size: int = 0  # effective: per device x accumulation x processes
    max_length: int = 0  # tokens per example the data was cut to (predict uses it too)
    params_total: int = 0
    params_trainable: int = 0
    resumed_from: str | None = None
    labels: list[str] | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepEnd(Event):
    """One optimizer step finished (subscribers only: not written to events.jsonl)."""

    type: ClassVar[str] = "step"
    persist: ClassVar[bool] = False
    epoch: float = 0.0
    total_steps: int = 0


@dataclass(frozen=True)
class Logged(Event):
    """Training values logged by the Trainer (loss, learning rate, grad norm)."""

    type: ClassVar[str] = "log"
    epoch: float = 0.0
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluated(Event):
    """An evaluation finished; ``metrics`` keys are without the ``eval_`` prefix."""

    type: ClassVar[str] = "eval"
    epoch: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. confusion matrix


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """A complete checkpoint was written."""

    type: ClassVar[str] = "checkpoint"
    path: str = ""
    epoch: float = 0.0
    size_bytes: int = 0


@dataclass(frozen=True)
class Notice(Event):
    """Something the engine did on its own that users should know (batch halved on OOM, ...)."""

    type: ClassVar[str] = "notice"
    kind: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorEvent(Event):
    """The run failed; ``advice`` says what to do."""

    type: ClassVar[str] = "error"
    kind: str = "error"  # oom | nan | disk | data | config | error
    message: str = ""
    advice: str = ""


@dataclass(frozen=True)
class RunEnded(Event):
    """The run is over. ``status``: finished | stopped | interrupted | failed."""

    type: ClassVar[str] = "end"
    status: str = "finished"
    metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str | None = None
    final_dir: str | None = None
    resume_checkpoint: str | None = None
    duration_s: float = 0.0
    train_samples_per_second: float | None = None


@dataclass(frozen=True)
class SweepStarted(Event):
    """A hyperparameter sweep starts (or continues): its search space and the trials so far."""

    type: ClassVar[str] = "sweep_start"
    sweep: str = ""
    sweep_dir: str = ""
    metric: str = ""
    direction: str = "maximize"
    trials: int = 0  # how many trials the sweep runs in all
    params: dict[str, Any] = field(default_factory=dict)  # the search space
    history: list[dict[str, Any]] = field(default_factory=list)  # trials of earlier sessions


@dataclass(frozen=True)
class TrialStarted(Event):
    """One trial of a sweep starts; its run's events follow."""

    type: ClassVar[str] = "trial_start"
    number: int = 0
    run: str = ""
    run_dir: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False


@dataclass(frozen=True)
class TrialEnded(Event):
    """A trial ended. ``state``: finished | pruned | failed | stopped (resumed next time)."""

    type: ClassVar[str] = "trial_end"
    number: int = 0
    run: str = ""
    state: str = "finished"
    value: float | None = None
    duration_s: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class SweepEnded(Event):
    """The sweep is over (``status`` finished) or paused (stopped, interrupted)."""

    type: ClassVar[str] = "sweep_end"
    status: str = "finished"
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        Stage,
        RunStarted,
        StepEnd,
        Logged,
        Evaluated,
        CheckpointSaved,
        Notice,
        ErrorEvent,
        RunEnded,
        SweepStarted,
        TrialStarted,
        TrialEnded,
        SweepEnded,
    )
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; "nan"/"inf" read back as floats below
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


def from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form (unknown keys ignored, for forward compatibility)."""
    cls = EVENT_TYPES.get(d.get("type", ""), Event)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    for key in ("values", "metrics"):
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = {k: _float(v) for k, v in kwargs[key].items()}
    return cls(**kwargs)


def _float(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v


Subscriber = Callable[[Event], None]


class EventLog:
    """Append-only ``events.jsonl`` writer; each line is flushed so a crash loses nothing."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if not event.persist:
            return
        line = json.dumps(event.to_dict(), ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def read_events(path: str | os.PathLike) -> Iterator[Event]:
    """Events of a run in order; a torn last line (crash mid-write) is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / "events.jsonl"
    if not p.exists():
        return
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue


class EventBus:
    """Fan events out to subscribers. A failing subscriber never stops training."""

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self.subscribers: list[Subscriber] = list(subscribers or [])
        self.errors: list[BaseException] = []

    def subscribe(self, fn: Subscriber) -> None:
        self.subscribers.append(fn)

    def emit(self, event: Event) -> None:
        for fn in self.subscribers:
            try:
                fn(event)
            except Exception as e:  # a broken view must not lose the user's training run
                self.errors.append(e)
