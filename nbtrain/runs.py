"""The run store: everything that looks into ``runs/`` goes through here.

Finds runs by name, their status (new, running, interrupted, stopped, failed, finished), task,
checkpoints (complete, best, newest) and final model; removes folders safely; measures disk use.
Reads ``trainer_state.json``, ``events.jsonl`` and nbtrain's completion marker; torch and
transformers load only inside :func:`load_final_model`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtrain.events import read_events

MARKER = "nbtrain_complete.json"
#: A run whose log has no end and has not changed for this long is not being trained.
STALE_S = 120.0
_CKPT = re.compile(r"^checkpoint-(\d+)$")
# What the Trainer needs to resume; weights may be full-model or adapter files.
_STATE_FILES = ("trainer_state.json",)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
)
_RESUME_FILES = ("optimizer.pt", "scheduler.pt")


@dataclass
class Checkpoint:
    path: Path
    step: int
    epoch: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0
    complete: bool = False
    is_best: bool = False
    is_newest: bool = False

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str  # new | running | unfinished (cut off) | interrupted | stopped | failed | finished
    steps: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    best_metric: tuple[str, float] | None = None
    size_bytes: int = 0
    started: float | None = None
    ended: float | None = None


def write_marker(ckpt: str | os.PathLike) -> None:
    """Record every file of a just-saved checkpoint with its size (written last, atomically)."""
    d = Path(ckpt)
    files = {
        str(p.relative_to(d)): p.stat().st_size
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    tmp = d / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"files": files}))
    os.replace(tmp, d / MARKER)


def is_complete(ckpt: str | os.PathLike, *, for_resume: bool = True) -> bool:
    """A checkpoint is complete when every file its marker recorded is present with its size.

    Inside an nbtrain run (a folder with ``config.yaml``) the marker is required: nbtrain writes
    it last, so a checkpoint without one was cut off mid-save. Checkpoints written by a plain
    ``Trainer`` are complete when the files it needs exist, parse, and are not truncated.
    """
    d = Path(ckpt)
    if not d.is_dir():
        return False
    marker = d / MARKER
    if not marker.exists() and (d.parent / "config.yaml").exists():
        return False
    if marker.exists():
        try:
            files = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError):
            return False
        for rel, size in files.items():
            p = d / rel
            try:
                if p.stat().st_size != size:
                    return False
            except OSError:
                return False
        return True
    try:
        json.loads((d / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if not any((d / w).is_file() and (d / w).stat().st_size > 0 for w in _WEIGHT_FILES):
        return False
    if not all(_safetensors_intact(p) for p in d.glob("*.safetensors")):
        return False
    return not for_resume or all((d / f).is_file() for f in _RESUME_FILES)


def _safetensors_intact(path: Path) -> bool:
    """The header parses and the file is as long as the tensors it lists (not truncated)."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return False
            header = json.loads(fh.read(n))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def has_finite_weights(ckpt: str | os.PathLike) -> bool:
    """Every floating-point tensor in the checkpoint's safetensors files is finite."""
    from safetensors import safe_open

    files = sorted(Path(ckpt).glob("*.safetensors"))
    if not files:
        return False
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118  (safe_open is not iterable)
                t = st.get_tensor(key)
                if t.is_floating_point() and not bool(t.isfinite().all()):
                    return False
    return True


def prune_after_nan(run_dir: str | os.PathLike, nan_step: int) -> Checkpoint | None:
    """After a NaN/inf loss at ``nan_step``: remove checkpoints saved at or after it and any
    newer one whose weights are not finite; return the last good checkpoint (kept)."""
    for c in reversed(list_checkpoints(run_dir)):
        if c.step >= nan_step or not c.complete or not has_finite_weights(c.path):
            remove_tree(c.path)
        else:
            return c
    return None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """Checkpoints of a run, oldest first, with metrics and best/newest flags."""
    run = Path(run_dir)
    if not run.is_dir():
        return []
    ckpts = []
    for d in run.iterdir():
        m = _CKPT.match(d.name)
        if m and d.is_dir():
            ckpts.append(
                Checkpoint(
                    path=d, step=int(m.group(1)), size_bytes=dir_size(d), complete=is_complete(d)
                )
            )
    ckpts.sort(key=lambda c: c.step)
    evals = _evals_by_step(run)
    best_path = None
    for c in ckpts:
        state = _read_state(c.path)
        if state:
            c.epoch = state.get("epoch")
            best_path = state.get("best_model_checkpoint") or best_path
        c.metrics = evals.get(c.step, {})
    complete = [c for c in ckpts if c.complete]
    if complete:
        complete[-1].is_newest = True
    if best_path:
        for c in ckpts:
            if c.path.name == Path(best_path).name:
                c.is_best = True
    return ckpts


def newest_complete(run_dir: str | os.PathLike) -> Checkpoint | None:
    ckpts = [c for c in list_checkpoints(run_dir) if c.complete]
    return ckpts[-1] if ckpts else None


def best_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    for c in list_checkpoints(run_dir):
        if c.is_best:
            return c
    return None


def delete_checkpoint(ckpt: Checkpoint | str | os.PathLike, *, force: bool = False) -> None:
    """Delete one checkpoint; the best and the newest complete one are protected."""
    path = Path(ckpt.path if isinstance(ckpt, Checkpoint) else ckpt)
    info = next((c for c in list_checkpoints(path.parent) if c.path == path), None)
    if info is None:
        raise FileNotFoundError(f"No checkpoint at {path}")
    if not force and (info.is_best or info.is_newest):
        role = "best" if info.is_best else "newest complete"
        raise PermissionError(
            f"{path.name} is the {role} checkpoint of its run and is kept; pass force=True to "
            "delete it anyway."
        )
    remove_tree(path)


def remove_tree(path: Path) -> None:
    # Truncate first: on a mounted Google Drive a deleted file goes to the Drive trash with its
    # full size; an emptied one costs nothing there.
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                with open(p, "r+b") as fh:
                    fh.truncate(0)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def dir_size(path: str | os.PathLike) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def run_status(run_dir: str | os.PathLike) -> RunInfo:
    """Status, progress and final metrics of one run, from its event log."""
    run = Path(run_dir)
    info = RunInfo(name=run.name, path=run, status="new")
    for ev in read_events(run):
        t = ev.type
        if t == "start":
            info.status = "unfinished"
            info.total_steps = getattr(ev, "total_steps", 0)
            info.started = info.started or ev.time
        elif t in ("log", "eval", "checkpoint"):
            info.steps = max(info.steps, ev.step)
        if t == "eval":
            info.metrics = dict(ev.metrics)
        elif t == "end":
            info.status = ev.status
            info.ended = ev.time
            info.steps = max(info.steps, ev.step)
            if ev.metrics:
                info.metrics = dict(ev.metrics)
    if info.status == "unfinished":
        # Started, no end: training right now (its log is being written) or cut off (a crash,
        # a dead kernel) and waiting to be resumed.
        log = run / "events.jsonl"
        with contextlib.suppress(OSError):
            if time.time() - log.stat().st_mtime < STALE_S:
                info.status = "running"
    info.size_bytes = dir_size(run) if run.exists() else 0
    return info


def list_runs(runs_dir: str | os.PathLike = "runs") -> list[RunInfo]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [run_status(d) for d in sorted(root.iterdir()) if (d / "config.yaml").exists()]
    runs.sort(key=lambda r: r.started or 0)
    return runs


def _read_state(ckpt: Path) -> dict[str, Any] | None:
    try:
        return json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None


def _evals_by_step(run: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for ev in read_events(run):
        if ev.type == "eval":
            out[ev.step] = dict(ev.metrics)
    return out


def iter_checkpoint_dirs(run_dir: str | os.PathLike) -> Iterator[Path]:
    for c in list_checkpoints(run_dir):
        yield c.path


def drop_incomplete(run_dir: str | os.PathLike) -> None:
    """Half-written checkpoints (a crash mid-save) are never resumed from: remove them."""
    for c in list_checkpoints(run_dir):
        if not c.complete:
            remove_tree(c.path)


def find_run(name: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """The folder of the run ``name`` (a name under ``runs_dir`` or a run folder's path).

    Raises:
        ConfigError: no such run, with the closest names and the list of runs.
    """
    for path in (Path(name), Path(runs_dir) / str(name)):
        if any((path / f).exists() for f in ("config.yaml", "events.jsonl", "final")):
            return path
    from nbtrain.errors import ConfigError, did_you_mean

    names = [r.name for r in list_runs(runs_dir)]
    raise ConfigError(
        f"No run named {str(name)!r} in {str(runs_dir)!r}.{did_you_mean(str(name), names)}"
        + (f" Runs: {', '.join(names)}." if names else " There are no runs there yet.")
    )


def run_env(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``env.json`` (versions, device, and the ``data`` it trained on); {} if none."""
    try:
        return dict(json.loads((Path(run_dir) / "env.json").read_text()))
    except (OSError, ValueError):
        return {}


def run_task(run_dir: str | os.PathLike) -> str:
    """The task a run trained (from its start event; classification for runs that never started)."""
    for ev in read_events(Path(run_dir)):
        if ev.type == "start" and getattr(ev, "task", ""):
            return ev.task
    return "text-classification"


def run_max_length(run_dir: str | os.PathLike) -> int | None:
    """Tokens per example the run trained with (its start event; else ``data.max_length`` of
    config.yaml), so predictions truncate where training did. None when it is not known."""
    for ev in read_events(Path(run_dir)):
        if ev.type == "start":
            if getattr(ev, "max_length", 0):
                return int(ev.max_length)
            configured = (getattr(ev, "config", None) or {}).get("data", {}).get("max_length")
            if isinstance(configured, int) and configured > 0:
                return configured
    return None


def final_dir(run_dir: str | os.PathLike) -> Path | None:
    """``final/`` of a run when it holds a saved model, else None."""
    d = Path(run_dir) / "final"
    return d if d.is_dir() and any(d.iterdir()) else None


def load_final_model(path: str | os.PathLike, task_name: str) -> Any:
    """The model saved in ``path`` (a run's ``final/`` or a checkpoint) for ``task_name``.

    A LoRA folder (``adapter_config.json``) loads its base model with the adapter on top.
    Weights load from safetensors only.
    """
    import transformers

    from nbtrain.engine.tasks import registry

    tasks = registry()
    cls_name = tasks[task_name].auto_model_class if task_name in tasks else "AutoModel"
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from nbtrain.engine.library_log import quiet_transformers
        from nbtrain.engine.lora import load_adapter_model

        with quiet_transformers():
            return load_adapter_model(path, cls_name)
    from nbtrain.engine.library_log import quiet_transformers

    cls = getattr(transformers, cls_name)
    with quiet_transformers():  # no "Loading weights" bar in the user's cell
        return cls.from_pretrained(str(path), use_safetensors=True)


# -- sweeps: runs/<sweep>/study.db with one run folder per trial ----------------------------------

STUDY_FILE = "study.db"
#: Left in a trial's folder whose final model the sweep removed (``sweep.keep: best``).
MODEL_REMOVED = "MODEL_REMOVED.txt"
SWEEP_STATES = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def is_sweep(path: str | os.PathLike) -> bool:
    """True for a sweep folder (its Optuna study and trial runs), not a run."""
    return (Path(path) / STUDY_FILE).is_file()


@dataclass
class SweepInfo:
    """A sweep as ``nbtrain runs`` lists it: one row for the folder and all its trials."""

    name: str
    path: Path
    status: str  # new | running | unfinished (cut off) | stopped | interrupted | finished
    trials_done: int = 0  # finished, pruned and failed trials: what counts towards the total
    trials_total: int = 0
    metric: str = ""
    direction: str = "maximize"
    best_value: float | None = None
    best_run: str | None = None
    size_bytes: int = 0
    started: float | None = None
    kind: str = "sweep"


def sweep_status(folder: str | os.PathLike) -> SweepInfo:
    """Status, trials done and best metric of the sweep in ``folder``, from its ``sweep.jsonl``
    (no Optuna needed)."""
    folder = Path(folder)
    info = SweepInfo(name=folder.name, path=folder, status="new")
    trials: dict[int, tuple[str, str, float | None]] = {}  # number -> (run, state, value)
    running_dir: Path | None = None
    for ev in read_events(folder / "sweep.jsonl"):
        t = ev.type
        if t == "sweep_start":
            info.status, info.trials_total = "unfinished", ev.trials
            info.metric, info.direction = ev.metric, ev.direction
            info.started = info.started or ev.time
            for r in ev.history:
                if r.get("state") != "running":
                    trials[r["number"]] = (r["run"], r["state"], r.get("value"))
        elif t == "trial_start":
            trials[ev.number] = (ev.run, "running", None)
            running_dir = Path(ev.run_dir) if ev.run_dir else folder / ev.run
        elif t == "trial_end":
            trials[ev.number] = (ev.run, ev.state, ev.value)
            running_dir = None
        elif t == "sweep_end":
            info.status = ev.status
            running_dir = None
    info.trials_done = sum(1 for _, st, _ in trials.values() if st in _SWEEP_ENDED)
    done = [(v, run) for run, st, v in trials.values() if st == "finished" and _finite(v)]
    if done:
        pick = max if info.direction == "maximize" else min
        info.best_value, info.best_run = pick(done, key=lambda d: d[0])
    if info.status == "unfinished":  # no sweep_end yet: a trial is training now, or cut off
        logs = [folder / "sweep.jsonl"] + ([running_dir / "events.jsonl"] if running_dir else [])
        with contextlib.suppress(OSError):
            newest = max(p.stat().st_mtime for p in logs if p.exists())
            if time.time() - newest < STALE_S:
                info.status = "running"
    info.size_bytes = dir_size(folder)
    return info


def list_sweeps(runs_dir: str | os.PathLike = "runs") -> list[SweepInfo]:
    """The sweeps in ``runs_dir``, oldest first (their trials are not runs of ``runs_dir``)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    sweeps = [sweep_status(d) for d in sorted(root.iterdir()) if is_sweep(d)]
    sweeps.sort(key=lambda s: s.started or 0)
    return sweeps


_SWEEP_ENDED = ("finished", "pruned", "failed")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v and v not in (float("inf"), float("-inf"))


def sweep_storage_url(folder: str | os.PathLike) -> str:
    """Optuna's SQLite storage URL of the sweep in ``folder``."""
    return f"sqlite:///{(Path(folder) / STUDY_FILE).resolve()}"


def load_study(folder: str | os.PathLike) -> Any:
    """The Optuna study of the sweep in ``folder`` (Optuna imported here, on use)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(folder)
    return optuna.load_study(study_name=folder.name, storage=sweep_storage_url(folder))


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One plain dict per trial (number, run, state, value, params, duration_s, message), oldest
    first. Trials queued again after an interrupt are left out: their retry is the row."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("retried") or t.state.name == "WAITING":
            continue
        duration = None
        if t.datetime_start and t.datetime_complete:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]  # a pruned trial's last
        rows.append(
            {
                "number": t.number,
                "run": t.user_attrs.get("run", f"trial-{t.number}"),
                "state": SWEEP_STATES.get(t.state.name, t.state.name.lower()),
                "value": value,
                "params": dict(t.params),
                "duration_s": duration,
                "message": t.user_attrs.get("error", ""),
            }
        )
    return rows
