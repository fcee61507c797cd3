"""Hyperparameter sweeps: Optuna above the engine, every trial a run in the store.

``runs/<name>/`` holds the sweep: ``sweep.yaml`` (the config with its ``sweep:`` section),
``study.db`` (Optuna's SQLite storage), ``sweep.jsonl`` (the sweep's events), ``best_config.yaml``
and one run folder per trial (``trial-0/``, ``trial-1/``, ...), each with its own card. Running
the same sweep again continues it: finished and pruned trials are kept, an interrupted trial is
resumed from its checkpoint. :func:`run_sweep` is a plain function so it can run on a worker
thread like any run; a :class:`~nbtrain.engine.callbacks.StopController` ends it cleanly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nbtrain.config import Config, config_to_dict, diff_configs
from nbtrain.config.load import trial_config
from nbtrain.errors import ConfigError, RunInterrupted, TrainingFailed
from nbtrain.events import (
    Event,
    EventBus,
    EventLog,
    SweepEnded,
    SweepStarted,
    TrialEnded,
    TrialStarted,
)
from nbtrain.format import fmt_short
from nbtrain.runs import load_study, trial_rows
from nbtrain.runs import sweep_storage_url as storage_url

SWEEP_FILE = "sweep.yaml"
_IDENTITY_IGNORED = {"name", "runs_dir", "display"}
_LOWER_IS_BETTER = ("loss", "mse", "mae", "perplexity", "error")

HPO_MISSING = (
    "This config has a sweep: section, and sweeps need Optuna, which is not installed. Install "
    "the hpo extra with pip install 'nbtrain[hpo]' (or pip install optuna), restart the kernel "
    "if you are in a notebook, and run the cell or command again; without a sweep: section the "
    "config trains one run as usual."
)


def require_optuna() -> None:
    """Raise a one-paragraph ConfigError when Optuna is missing (checked without importing it)."""
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError(HPO_MISSING, field="sweep")


def sweep_dir(cfg: Config) -> Path:
    """The sweep's folder: ``runs_dir/name`` (name default: ``<model>-sweep``, so re-running a
    sweep without a name continues it)."""
    from nbtrain.engine.rundir import default_name

    name = cfg.name or default_name(cfg).rsplit("-", 2)[0] + "-sweep"
    return Path(cfg.runs_dir).expanduser() / name


def run_sweep(
    cfg: Config,
    *,
    restart: bool = False,
    display: str | Callable[[Event], None] | None = "auto",
    on_event: Callable[[Event], None] | Iterable[Callable[[Event], None]] | None = None,
    stop: Any = None,
    train: Callable[..., Any],
    load_run: Callable[..., Any],
) -> SweepResult:
    """Run (or continue) the sweep ``cfg.sweep`` describes; each trial goes through the API.

    Args:
        cfg: a config with a ``sweep:`` section.
        restart: delete the sweep folder (study and trials) and start over.
        display: ``"auto"``, ``"html"``, ``"text"``, ``"none"`` or a callable receiving every
            event (sweep events and the trials' run events).
        on_event: extra subscribers.
        stop: a ``StopController``: the current trial is saved (checkpoint) and the sweep stops;
            running the sweep again resumes that trial.
        train: runs one trial's config (``nbtrain.finetune``), returning its RunResult.
        load_run: opens a trial's run from disk (``nbtrain.load_run``), for ``SweepResult.best``.

    Raises:
        ConfigError: Optuna missing, a bad search space, a changed config, or a config every
            trial would fail on (raised by the first trial).
        RunInterrupted: Ctrl-C; the interrupted trial resumes next time.
    """
    require_optuna()
    if cfg.sweep is None:
        raise ConfigError("run_sweep needs a config with a sweep: section.", field="sweep")
    import optuna

    from nbtrain.engine.callbacks import StopController

    folder = sweep_dir(cfg)
    _open_folder(folder, cfg, restart=restart)
    spec = cfg.sweep
    metric, direction = _metric(cfg)
    seed = spec.seed if spec.seed is not None else cfg.seed
    sampler = optuna.samplers.TPESampler(seed=seed)
    startup = (
        spec.startup_trials if spec.startup_trials is not None else max(1, min(5, spec.trials // 3))
    )
    pruner: Any = (
        optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
        if spec.prune
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the panel shows what Optuna logs
    study = optuna.create_study(
        study_name=folder.name,
        storage=storage_url(folder),
        sampler=sampler,
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"The study in {str(folder)!r} was created to {study.direction.name.lower()} its "
            f"metric; this config would {direction} it. Use restart to start the sweep over.",
            field="sweep.direction",
        )
    study.set_user_attr("metric", metric)
    done = len(study.get_trials(deepcopy=False))
    if done and seed is not None:
        # A continued sweep: a sampler seeded as the first time would draw its random sequence
        # from the start again and repeat the first trials' params. Offset the seed by the trials
        # already drawn (a sweep run in one go keeps its seed, and its trials).
        study.sampler = optuna.samplers.TPESampler(seed=seed + done)
    _requeue_stale(study)

    subscribers = _subscribers(display, on_event)
    bus = EventBus([EventLog(folder / "sweep.jsonl"), *subscribers])
    bus.emit(
        SweepStarted(
            sweep=folder.name,
            sweep_dir=str(folder),
            metric=metric,
            direction=direction,
            trials=spec.trials,
            params=dict(spec.params),
            history=trial_rows(study),
        )
    )
    stop = stop or StopController()
    base = config_to_dict(cfg, keep_objects=True)
    base["runs_dir"] = str(folder)
    status = "finished"
    interrupted: RunInterrupted | None = None

    while _ended_count(study) < spec.trials:
        if stop.requested:
            status = "stopped"
            break
        trial = study.ask()
        params = {k: _suggest(trial, k, p) for k, p in spec.params.items()}
        run_name = trial.user_attrs.get("run") or f"trial-{_run_index(study, trial.number)}"
        trial.set_user_attr("run", run_name)
        base["name"] = run_name
        t0 = time.time()
        resumed = (folder / run_name).is_dir()
        bus.emit(
            TrialStarted(
                number=trial.number,
                run=run_name,
                run_dir=str(folder / run_name),
                params=params,
                resumed=resumed,
            )
        )
        hook = _TrialHook(trial, metric, stop, StopController(), prune=spec.prune)
        state, value, message = "failed", None, ""
        try:
            tcfg = trial_config(base, params)
            result = train(tcfg, display=_Forward(bus), on_event=hook, stop=hook.trial_stop)
            value = result.metrics.get(metric)
            if result.status == "finished":
                if value is None or not math.isfinite(value):
                    known = ", ".join(k for k in result.metrics if k.startswith("eval_"))
                    raise ConfigError(
                        f"sweep.metric: {metric!r} is not among the trial's final metrics "
                        f"({known or 'none: the run has no evaluation data'}). Set sweep.metric "
                        "to one of them.",
                        field="sweep.metric",
                    )
                study.tell(trial, value)
                state = "finished"
            elif hook.pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                state, value = "pruned", hook.last_value
                message = f"pruned at step {hook.last_step:,}: below the median of earlier trials"
            else:  # the sweep was stopped: this trial resumes next time
                _retry_later(study, trial, run_name)
                state, status = "stopped", "stopped"
                message = "stopped; it resumes from its checkpoint when the sweep runs again"
        except RunInterrupted as e:
            _retry_later(study, trial, run_name)
            state, status = "stopped", "interrupted"
            message = "interrupted; it resumes from its checkpoint when the sweep runs again"
            interrupted = e
        except TrainingFailed as e:
            _fail(study, trial, str(e))
            message = str(e)
        except ConfigError as e:
            _fail(study, trial, str(e))
            if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
                raise  # no trial got through yet: a problem of the config, not of the params
            message = str(e)
        except BaseException:
            with contextlib.suppress(Exception):
                _retry_later(study, trial, run_name)
            raise
        bus.emit(
            TrialEnded(
                number=trial.number,
                run=run_name,
                state=state,
                value=value,
                duration_s=time.time() - t0,
                message=message,
            )
        )
        if state in ("finished", "pruned"):
            tidy_trials(folder, study, spec.keep)
        if state == "stopped":
            break

    result = SweepResult(folder, status=status, load_run=load_run)
    best = result.best_trial
    if best is not None:
        (folder / "best_config.yaml").write_text(result.best_config, encoding="utf-8")
    bus.emit(
        SweepEnded(
            status=status,
            best_trial=best.number if best is not None else None,
            best_value=best.value if best is not None else None,
            best_params=dict(best.params) if best is not None else {},
        )
    )
    for fn in subscribers:
        close_fn = getattr(fn, "close", None)
        if callable(close_fn):
            close_fn()
    if interrupted is not None:
        raise RunInterrupted(
            f"Sweep {folder.name!r} was interrupted during a trial; {result.summary()} Run the "
            "same cell or command again to continue: that trial resumes from its checkpoint.",
            run_dir=str(folder),
            checkpoint=interrupted.checkpoint,
        )
    return result


def tidy_trials(folder: Path, study: Any, keep: str) -> None:
    """Free the disk ended trials no longer need (``sweep.keep``).

    A finished or pruned trial never resumes, so its checkpoints go (unless ``keep: all``);
    with ``keep: best`` the final model of every ended trial but the best one goes too, and a
    note in its folder says why (its events, metrics and card stay).
    """
    from nbtrain.runs import MODEL_REMOVED, iter_checkpoint_dirs, remove_tree

    if keep == "all":
        return
    try:
        best = study.best_trial.user_attrs.get("run")
    except ValueError:
        best = None
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "PRUNED") or t.user_attrs.get("retried"):
            continue
        run_dir = folder / t.user_attrs.get("run", f"trial-{t.number}")
        for ckpt in list(iter_checkpoint_dirs(run_dir)):
            remove_tree(ckpt)
        final = run_dir / "final"
        if keep == "best" and run_dir.name != best and final.is_dir():
            remove_tree(final)
            (run_dir / MODEL_REMOVED).write_text(
                f"The sweep {folder.name!r} keeps the final model of its best trial only "
                "(sweep.keep: best); this trial's metrics, events and card stay. To keep every "
                "trial's model, set sweep.keep: models; to train this one again, run its "
                "config.yaml.\n",
                encoding="utf-8",
            )


def find_sweep(name: str | Path, runs_dir: str | Path = "runs") -> Path:
    """The folder of the sweep ``name`` (a name under ``runs_dir`` or a folder's path).

    Raises:
        ConfigError: no such sweep, naming the sweeps there.
    """
    from nbtrain.errors import did_you_mean
    from nbtrain.runs import is_sweep

    for path in (Path(name), Path(runs_dir) / str(name)):
        if is_sweep(path):
            return path
    root = Path(runs_dir)
    names = sorted(p.name for p in root.iterdir() if is_sweep(p)) if root.is_dir() else []
    raise ConfigError(
        f"No sweep named {str(name)!r} in {str(runs_dir)!r}.{did_you_mean(str(name), names)}"
        + (f" Sweeps: {', '.join(names)}." if names else " There are no sweeps there.")
    )


# -- pieces of the driver ------------------------------------------------------------------------


def _sweep_identity(cfg: Config) -> dict[str, Any]:
    d = config_to_dict(cfg)
    for key in _IDENTITY_IGNORED:
        d.pop(key, None)
    d.get("sweep", {}).pop("trials", None)  # more trials continue the same sweep
    d.get("sweep", {}).pop("keep", None)  # what stays on disk does not change the search
    return json.loads(json.dumps(d, default=str))


def check_sweep(cfg: Config, *, restart: bool = False) -> None:
    """Raise what running this sweep would raise before its first trial (Optuna missing, the
    folder is a run or not a sweep, the sweep exists with another config), touching nothing:
    what a background sweep checks before it returns its handle."""
    require_optuna()
    if cfg.sweep is None:
        raise ConfigError("run_sweep needs a config with a sweep: section.", field="sweep")
    _check_folder(sweep_dir(cfg), cfg, restart=restart)


def _check_folder(folder: Path, cfg: Config, *, restart: bool) -> None:
    if not folder.exists():
        return
    if (folder / "config.yaml").exists():
        raise ConfigError(
            f"{str(folder)!r} is a training run, not a sweep; give the sweep another name.",
            field="name",
        )
    ident_file = folder / "sweep-identity.json"
    if not ident_file.exists() and any(folder.iterdir()):
        raise ConfigError(
            f"The folder {str(folder)!r} exists and is not an nbtrain sweep; choose another "
            "name or runs_dir.",
            field="name",
        )
    if not restart and ident_file.exists():
        changed = diff_configs(json.loads(ident_file.read_text()), _sweep_identity(cfg))
        if changed:
            raise ConfigError(
                f"A sweep named {folder.name!r} already exists with a different config "
                f"(changed: {', '.join(changed[:8])}). Re-run with --restart (restart=True) "
                "to start it over, or give the sweep a new name. (Raising sweep.trials "
                "continues it.)",
                field="name",
            )


def _open_folder(folder: Path, cfg: Config, *, restart: bool) -> None:
    from nbtrain.config import to_yaml
    from nbtrain.runs import remove_tree

    _check_folder(folder, cfg, restart=restart)
    if restart and folder.exists():
        remove_tree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    import dataclasses

    named = dataclasses.replace(cfg, name=folder.name)
    (folder / SWEEP_FILE).write_text(
        "# nbtrain sweep config: re-run with `nbtrain run sweep.yaml` to continue the sweep\n"
        + to_yaml(named),
        encoding="utf-8",
    )
    (folder / "sweep-identity.json").write_text(
        json.dumps(_sweep_identity(cfg), indent=1, sort_keys=True)
    )


def _metric(cfg: Config) -> tuple[str, str]:
    """(``eval_``-prefixed metric, ``maximize`` | ``minimize``) of the sweep."""
    spec = cfg.sweep
    metric = spec.metric or cfg.metric_for_best_model
    greater: bool | None = None
    if metric is None:
        metric, greater = _task_metric(cfg)
    metric = metric if metric.startswith("eval_") else f"eval_{metric}"
    if spec.direction != "auto":
        return metric, spec.direction
    if greater is None:
        greater = not any(w in metric for w in _LOWER_IS_BETTER)
    return metric, "maximize" if greater else "minimize"


def _task_metric(cfg: Config) -> tuple[str, bool]:
    """The task's main metric; the task needs the data (classification vs regression)."""
    from nbtrain.engine.prepare import prepare

    prep = prepare(trial_config(config_to_dict(cfg, keep_objects=True), {}), EventBus())
    return prep.task.metric_for_best


def _suggest(trial: Any, key: str, p: Any) -> Any:
    if isinstance(p, list):
        return trial.suggest_categorical(key, p)
    if isinstance(p["low"], int) and isinstance(p["high"], int):
        return trial.suggest_int(key, p["low"], p["high"], log=p.get("log", False))
    return trial.suggest_float(key, p["low"], p["high"], log=p.get("log", False))


def _ended_count(study: Any) -> int:
    """Trials that count towards ``sweep.trials``: finished, pruned, failed (not the ones
    queued again after an interrupt: their retry counts)."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL") and not t.user_attrs.get("retried")
    )


def _run_index(study: Any, number: int) -> int:
    """K of a new trial's ``trial-K`` folder: trials retried after an interrupt reuse their
    folder, so K counts runs, not Optuna's trial numbers."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.number < number and not t.user_attrs.get("retried") and t.state.name != "WAITING"
    )


def _fail(study: Any, trial: Any, message: str) -> None:
    import optuna

    with contextlib.suppress(Exception):  # attributes only while the trial is running
        trial.set_user_attr("error", message[:2000])
    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def _retry_later(study: Any, trial: Any, run_name: str) -> None:
    """End an unfinished trial and queue its params again, in the same run folder, so the next
    session resumes it from its checkpoint (or retries it)."""
    _requeue(study, trial.number, run_name)


def _requeue_stale(study: Any) -> None:
    """Trials left RUNNING by a dead kernel or a killed process: queue them again."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        _requeue(study, t.number, t.user_attrs.get("run", f"trial-{t.number}"))


def _requeue(study: Any, number: int, run_name: str) -> None:
    import optuna

    frozen = study.get_trials(deepcopy=False)[number]
    storage = study._storage  # the public Trial API cannot reach a trial of an earlier session
    if frozen.state.name == "RUNNING":
        storage.set_trial_user_attr(frozen._trial_id, "retried", True)
        study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(dict(frozen.params), user_attrs={"run": run_name, "retry_of": number})


class _TrialHook:
    """Run subscriber: reports each evaluation to Optuna, prunes, forwards a sweep stop."""

    def __init__(self, trial: Any, metric: str, stop: Any, trial_stop: Any, *, prune: bool) -> None:
        self.trial = trial
        self.metric = metric[5:] if metric.startswith("eval_") else metric
        self.stop = stop
        self.trial_stop = trial_stop
        self.prune = prune
        self.pruned = False
        self.last_value: float | None = None
        self.last_step = 0

    def __call__(self, ev: Event) -> None:
        if ev.type == "step":
            if self.stop.requested and not self.trial_stop.requested:
                self.trial_stop.request("stopped")  # the trial saves a checkpoint and ends
        elif ev.type == "eval":
            value = ev.metrics.get(self.metric)
            if value is None or not math.isfinite(value):
                return
            self.last_value, self.last_step = value, ev.step
            self.trial.report(value, ev.step)
            if self.prune and not self.pruned and self.trial.should_prune():
                self.pruned = True
                self.trial_stop.request("stopped")  # a clean stop; Optuna hears PRUNED


class _Forward:
    """The trial's display: its run events go to the sweep's subscribers (the panel)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def __call__(self, ev: Event) -> None:
        for fn in self.bus.subscribers[1:]:  # not sweep.jsonl: the trial has its own log
            try:
                fn(ev)
            except Exception as e:
                self.bus.errors.append(e)


def _subscribers(display: Any, on_event: Any) -> list[Callable[[Event], None]]:
    subs: list[Callable[[Event], None]] = []
    if callable(display):
        subs.append(display)
    elif display not in (None, "none"):
        from nbtrain.display.sweep import make_sweep_renderer

        renderer = make_sweep_renderer(display)
        if renderer is not None:
            subs.append(renderer)
    if on_event is not None:
        subs.extend([on_event] if callable(on_event) else list(on_event))
    return subs


# -- the result ----------------------------------------------------------------------------------


class SweepResult:
    """A sweep's outcome, read from its folder (so it works after a restart too).

    Attributes:
        name: the sweep name; ``output_dir``: its folder; ``status``: finished | stopped |
            interrupted; ``metric`` and ``direction``: what was optimised.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        status: str | None = None,
        load_run: Callable[..., Any] | None = None,
    ) -> None:
        require_optuna()
        self._load_run = load_run
        self.output_dir = Path(output_dir)
        self.name = self.output_dir.name
        self.study = load_study(self.output_dir)
        self.metric = str(self.study.user_attrs.get("metric", "value"))
        self.direction = self.study.direction.name.lower()
        if status is None:
            cfg = self.config
            status = "finished" if _ended_count(self.study) >= cfg.sweep.trials else "stopped"
        self.status = status

    @property
    def config(self) -> Config:
        """The sweep's config (``sweep.yaml``)."""
        from nbtrain.config import load_config

        return load_config(self.output_dir / SWEEP_FILE)

    @property
    def best_trial(self) -> Any:
        """Optuna's best finished trial, or None before any trial finished."""
        try:
            return self.study.best_trial
        except ValueError:
            return None

    @property
    def best_params(self) -> dict[str, Any]:
        best = self.best_trial
        return dict(best.params) if best is not None else {}

    @property
    def best(self) -> Any:
        """The best trial's :class:`~nbtrain.api.RunResult` (model loaded from disk on use)."""
        best = self.best_trial
        if best is None or self._load_run is None:
            return None
        return self._load_run(best.user_attrs.get("run", f"trial-{best.number}"), self.output_dir)

    @property
    def best_config(self) -> str:
        """YAML of the best trial's config without the sweep: re-runnable as one training run
        (named ``<sweep>-best``, next to the sweep folder)."""
        from nbtrain.config import to_yaml

        cfg = self.config
        base = config_to_dict(cfg, keep_objects=True)
        params = self.best_params
        tcfg = trial_config(base, params)
        tcfg.name = f"{self.name}-best"
        shown = ", ".join(f"{k}={fmt_short(v)}" for k, v in params.items())
        value = self.best_trial.value if self.best_trial is not None else None
        head = (
            f"# best trial of sweep {self.name!r}: {shown}"
            + (f" ({self.metric} {fmt_short(value)})" if value is not None else "")
            + "\n"
        )
        return head + to_yaml(tcfg)

    @property
    def trials(self) -> Any:
        """A pandas DataFrame: one row per trial with its params, metric, state, duration."""
        import pandas as pd

        rows = []
        for r in trial_rows(self.study):
            row = {"trial": r["number"], "run": r["run"]}
            row.update(r["params"])
            row[self.metric] = r["value"]
            row["state"] = r["state"]
            row["duration_s"] = r["duration_s"]
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        rows = trial_rows(self.study)
        counts = {
            s: sum(1 for r in rows if r["state"] == s) for s in ("finished", "pruned", "failed")
        }
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        best = self.best_trial
        best_txt = (
            f"; best trial-{best.number} {self.metric}={fmt_short(best.value)}" if best else ""
        )
        return f"{', '.join(parts) or 'no trials ended'}{best_txt}."

    def plot(self) -> Any:
        """The metric per trial, parameter importances and a slice plot, as one image."""
        from nbtrain.display.image import PNGImage
        from nbtrain.display.sweep import sweep_png

        return PNGImage(sweep_png(self.study, self.metric))

    def __repr__(self) -> str:
        best = self.best_trial
        bits = [
            f"{self.name!r}",
            f"status={self.status!r}",
            f"trials={len(trial_rows(self.study))}",
        ]
        if best is not None:
            params = ", ".join(f"{k}={fmt_short(v)}" for k, v in best.params.items())
            bits.append(
                f"best=trial-{best.number} {self.metric}={fmt_short(best.value)} ({params})"
            )
        return f"SweepResult({', '.join(bits)})"

    def _repr_html_(self) -> str:
        from nbtrain.display.sweep import result_html

        return result_html(self)


__all__ = [
    "SweepResult",
    "check_sweep",
    "find_sweep",
    "require_optuna",
    "run_sweep",
    "storage_url",
    "trial_rows",
]
