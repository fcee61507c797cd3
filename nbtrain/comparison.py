"""Compare runs: their curves overlaid, a metrics table with the best marked, the config diff.

``nbtrain.compare(["a", "b"])`` and ``%nbtrain compare a b`` read each run's ``events.jsonl``
(a run still training shows what its log holds now; a background run of this kernel that has
no folder yet shows as queued or preparing) and return a :class:`Comparison`, which shows as
HTML in a notebook, as text in a terminal, and as a PNG with :meth:`Comparison.plot`.
Nothing here imports torch; matplotlib loads only for ``plot()``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtrain.config import diff_configs
from nbtrain.display.compare import X_AXES, comparison_html, comparison_png, comparison_text
from nbtrain.display.state import EvalRow, RunState, higher_is_better, model_metrics
from nbtrain.errors import ConfigError, did_you_mean
from nbtrain.events import read_events

# Keys that name or show a run rather than change what it trains.
_NOT_COMPARED = ("name", "display", "runs_dir")


@dataclass
class ComparedRun:
    """One run of a comparison: its state folded from the events, and its config."""

    name: str
    status: str
    state: RunState
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    epochs: dict[int, float] = field(default_factory=dict)  # step -> epoch, from the events

    @property
    def batch_size(self) -> int:
        """Samples per optimizer step (all processes), from the start event or the config."""
        size = int(self.state.info.get("batch_size") or 0)
        if size:
            return size
        cfg = self.config
        return int(cfg.get("per_device_train_batch_size") or 0) * int(
            cfg.get("gradient_accumulation_steps") or 1
        )

    def x(self, step: int, axis: str, epoch: float | None = None) -> float | None:
        """Where ``step`` lies on ``axis`` (step, epoch or samples seen)."""
        if axis == "step":
            return float(step)
        if axis == "samples":
            return float(step * self.batch_size) if self.batch_size else None
        value = epoch if epoch is not None else self.epochs.get(step)
        return float(value) if value is not None else None

    def x_end(self, axis: str) -> float | None:
        """Where the run ends (or will end) on ``axis``."""
        total = self.state.total_steps
        if not total:
            return None
        if axis != "epoch":
            return self.x(total, axis)
        step, epoch = self.state.step, self.state.epoch
        return epoch * total / step if step and epoch else None

    def train_loss(self, axis: str) -> list[tuple[float, float]]:
        pts = ((self.x(s, axis), v) for s, v in self.state.train_loss)
        return [(x, v) for x, v in pts if x is not None]

    def eval_curve(self, metric: str, axis: str) -> list[tuple[float, float]]:
        pts = (
            (self.x(r.step, axis, r.epoch), r.metrics[metric])
            for r in self.state.evals
            if metric in r.metrics
        )
        return [(x, v) for x, v in pts if x is not None]

    @property
    def best_eval(self) -> EvalRow | None:
        """The evaluation the run kept (or the best so far, for a running run)."""
        idx = self.state.best_index
        if idx is None:
            return self.state.evals[-1] if self.state.evals else None
        return self.state.evals[idx]

    @property
    def last_train_loss(self) -> float | None:
        loss = self.state.train_loss
        return loss[-1][1] if loss else None


class Comparison:
    """Several runs side by side. Shows as HTML (``_repr_html_``) and text (``repr``).

    Attributes:
        runs: the runs, in the order given.
        x: what the curves are drawn against (step, epoch or samples).
        metric: (name, greater is better) of the main evaluation metric, or None.
    """

    def __init__(self, runs: list[ComparedRun], x: str = "step") -> None:
        self.runs = runs
        self.x = x
        self.metric = _main_metric(runs)

    # -- the numbers --------------------------------------------------------------------------
    @property
    def metric_names(self) -> list[str]:
        """Evaluation metrics of the runs' kept evaluations (timings left out), loss first."""
        names: list[str] = []
        for run in self.runs:
            row = run.best_eval
            for k in model_metrics(row.metrics) if row else {}:
                if k not in names:
                    names.append(k)
        main = self.metric[0] if self.metric else None
        return sorted(names, key=lambda n: (n != "loss", n != main))

    def best_runs(self, metric: str) -> list[int]:
        """Indices of the runs whose kept evaluation is best on ``metric`` (several on a tie;
        none when every run has the same value, or no run has the metric)."""
        greater = self.metric[1] if self.metric and self.metric[0] == metric else None
        if greater is None:
            greater = higher_is_better(metric)
        values = {}
        for i, run in enumerate(self.runs):
            row = run.best_eval
            v = row.metrics.get(metric) if row else None
            if v is not None and v == v:  # NaN never wins
                values[i] = v
        if not values:
            return []
        best = max(values.values()) if greater else min(values.values())
        winners = [i for i, v in values.items() if v == best]
        return [] if len(winners) == len(self.runs) else winners

    def config_diff(self) -> list[tuple[str, list[Any]]]:
        """``(dotted key, value in each run)`` for every config key whose values differ."""
        cfgs = [{k: v for k, v in r.config.items() if k not in _NOT_COMPARED} for r in self.runs]
        keys: list[str] = []
        for i, a in enumerate(cfgs):
            for b in cfgs[i + 1 :]:
                keys += [k for k in diff_configs(a, b) if k not in keys]
        # "lora" (None in one run) and "lora.r" (both set in others): the whole value is enough.
        keys = [k for k in keys if not any(k.startswith(o + ".") for o in keys if o != k)]
        return [(k, [_get(c, k) for c in cfgs]) for k in sorted(keys)]

    # -- the forms ----------------------------------------------------------------------------
    def html(self) -> str:
        return comparison_html(self)

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return comparison_text(self)

    def plot(self) -> Any:
        """The overlaid curves as an image (``PNGImage``: notebooks show it, ``.save(path)``)."""
        from nbtrain.api import PNGImage

        return PNGImage(comparison_png(self))


def compare(
    runs: Iterable[str | os.PathLike | Any] | str,
    *,
    runs_dir: str | os.PathLike = "runs",
    x: str = "step",
) -> Comparison:
    """Compare runs: curves overlaid, a metrics table with the best marked, the config diff.

    Args:
        runs: at least two run names (or run folders, ``RunResult`` or ``RunHandle`` objects).
            A run still training shows what its ``events.jsonl`` holds now.
        runs_dir: where runs named by name live.
        x: what the curves are drawn against: ``step`` (optimizer steps), ``epoch`` or
            ``samples`` (samples seen: step x the run's batch size, all processes together).

    Returns:
        A :class:`Comparison` (HTML in a notebook, text in a terminal, ``.plot()`` for a PNG).

    Raises:
        ConfigError: an unknown run (with the closest names), fewer than two runs, a run named
            twice, or an unknown ``x``.
    """
    if x not in X_AXES:
        raise ConfigError(
            f"compare: x={x!r} is not an axis the curves can use.{did_you_mean(x, X_AXES)} "
            f"Use one of: {', '.join(X_AXES)}.",
            field="x",
        )
    items = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    loaded = [_load(item, runs_dir) for item in items]
    if len(loaded) < 2:
        raise ConfigError(
            f"compare needs at least two runs; got {len(loaded)}. Give their names, e.g. "
            "nbtrain.compare(['run-a', 'run-b']) or %nbtrain compare run-a run-b."
        )
    seen: set[str] = set()
    for run in loaded:
        key = str(run.path.resolve()) if run.path else run.name
        if key in seen:
            raise ConfigError(f"compare: the run {run.name!r} is named twice; name each run once.")
        seen.add(key)
    return Comparison(loaded, x=x)


# -- loading -------------------------------------------------------------------------------------


def _load(item: Any, runs_dir: str | os.PathLike) -> ComparedRun:
    from nbtrain.background import RUNS

    handle = None
    if hasattr(item, "state") and hasattr(item, "config") and hasattr(item, "done"):
        handle = item  # a RunHandle
    elif isinstance(item, str) and item in RUNS:
        handle = RUNS[item]
    if handle is not None:
        folder = Path(handle.config.runs_dir).expanduser() / handle.name
        if not (folder / "events.jsonl").exists():
            # Queued, or still preparing: its events reach the disk once training can start.
            from nbtrain.config import config_to_dict

            state = RunState(run=handle.name)
            return ComparedRun(handle.name, handle.status, state, config_to_dict(handle.config))
        run = _from_folder(folder)
        if not handle.done:
            run.status = handle.status
        return run
    if hasattr(item, "output_dir"):  # a RunResult
        return _from_folder(Path(item.output_dir))
    from nbtrain.runs import find_run

    return _from_folder(find_run(item, runs_dir))


def _from_folder(folder: Path) -> ComparedRun:
    state = RunState()
    epochs: dict[int, float] = {}
    for ev in read_events(folder):
        state.update(ev)
        if ev.type in ("log", "eval"):
            epochs[ev.step] = float(getattr(ev, "epoch", 0.0) or 0.0)
    config = dict(state.info.get("config") or {}) or _config_yaml(folder)
    return ComparedRun(
        name=folder.name,
        status=_status(state, folder),
        state=state,
        config=config,
        path=folder,
        epochs=epochs,
    )


def _status(state: RunState, folder: Path) -> str:
    if state.ended or state.error is not None:
        return state.status
    from nbtrain.display.follow import STALE_S

    log = folder / "events.jsonl"
    try:
        fresh = time.time() - log.stat().st_mtime < STALE_S
    except OSError:
        fresh = False
    if not fresh:
        return "unfinished"  # no end, and nothing written for a while: not training now
    return state.status


def _config_yaml(folder: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _main_metric(runs: list[ComparedRun]) -> tuple[str, bool] | None:
    """The metric that picks each run's best checkpoint, when it is not the loss (the loss has
    its own chart); the first run that has one decides."""
    for run in runs:
        best = run.state.best_metric
        if best and best[0] != "loss":
            return best
    return None


__all__ = ["X_AXES", "ComparedRun", "Comparison", "compare"]
