"""Several processes from one call: ``processes: N`` through accelerate's ``notebook_launcher``.

The caller's process (a notebook kernel, a script) checks what would make the launch fail,
then lets accelerate start N processes (DDP: NCCL on GPUs, gloo on CPU). Each runs the ordinary
engine; rank 0 owns the run folder (``events.jsonl``, checkpoints, ``final/``) and also writes
every event, per-step progress included, to a stream file that this process follows, so the
caller's live view, card and result are those of a one-process run.

``notebook_launcher`` forks on CPU and CUDA: nothing is pickled (notebook DataFrames, lambdas
and callbacks defined in cells reach the children as they are), but CUDA must not be
initialised in the parent. On ROCm and XPU it spawns, and then everything must pickle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbtrain.config import Config
from nbtrain.engine.stop import StopController
from nbtrain.errors import ConfigError, DataError
from nbtrain.events import ErrorEvent, Event, EventBus, Subscriber, from_dict

STREAM_ENV = "NBTRAIN_EVENT_STREAM"
#: A file the launched processes watch: when it appears they stop with a checkpoint.
STOP_ENV = "NBTRAIN_STOP_FILE"
# Modules known to initialise CUDA when imported (accelerate refuses to fork after them).
_CUDA_ON_IMPORT = ("bitsandbytes",)


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """What :func:`check_launch` found: how many processes, on what, started how."""

    processes: int
    device: str  # "gpu" | "cpu"
    devices: int
    start_method: str  # "fork" | "spawn"


def wants_launch(cfg: Config) -> bool:
    """True when ``cfg`` asks for processes and none were launched yet (not under accelerate)."""
    return cfg.processes > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1


def check_world(cfg: Config) -> None:
    """Under ``accelerate launch``: a ``processes`` that disagrees with the launcher is an error."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and cfg.processes not in (1, world):
        raise ConfigError(
            f"processes: {cfg.processes} but this run was launched with {world} processes "
            "(accelerate launch / torchrun decide under a launcher). Remove processes from the "
            f"config or set it to {world}.",
            field="processes",
        )


def check_launch(cfg: Config, namespace: dict[str, Any] | None = None) -> LaunchPlan:
    """Everything that would make ``notebook_launcher`` fail, as one paragraph with the fix.

    Raises:
        ConfigError: more processes than devices, CUDA already initialised in this process
            (naming what did it when it can), a CUDA-initialising library already imported,
            objects that cannot be pickled when the launcher must spawn.
    """
    import torch

    n = cfg.processes
    gpu = torch.cuda.is_available()  # asks the driver; does not initialise CUDA
    devices = torch.cuda.device_count() if gpu else (os.cpu_count() or 1)
    if n > devices:
        what = f"{devices} GPU{'s' if devices != 1 else ''}" if gpu else f"{devices} CPU cores"
        raise ConfigError(
            f"processes: {n} but this machine has {what}; each process needs "
            f"{'a GPU' if gpu else 'a core'}. Set processes: {devices} or fewer"
            + ("." if gpu else " (several CPU processes are for checking a multi-GPU setup).")
            + ("" if gpu else " No GPU is visible to torch here."),
            field="processes",
        )
    if gpu and torch.cuda.is_initialized():
        raise ConfigError(
            "processes: CUDA is already initialised in this kernel, and the processes "
            "notebook_launcher forks cannot use it then"
            f"{_cuda_culprit(namespace)}. Fix: restart the kernel and run this cell before "
            "anything touches the GPU (let nbtrain load the model from the config inside the "
            "processes), or run `accelerate launch -m nbtrain run config.yaml` in a terminal.",
            field="processes",
        )
    loaded = [m for m in _CUDA_ON_IMPORT if m in sys.modules]
    if gpu and loaded:
        raise ConfigError(
            f"processes: {', '.join(loaded)} was imported in this kernel, and it initialises "
            "CUDA on import, so notebook_launcher refuses to fork. Fix: restart the kernel and "
            "leave the import to nbtrain (quantization: 4bit imports it inside each process).",
            field="processes",
        )
    from nbtrain.engine.distributed import check_before_launch

    # DeepSpeed / FSDP files, stages, batch sizes: before any process starts
    check_before_launch(cfg, world=n, device_kind="cuda" if gpu else "cpu", precision=cfg.precision)
    method = _start_method()
    if method == "spawn":
        bad = unpicklable(cfg)
        if bad:
            raise ConfigError(
                f"processes: on this device notebook_launcher starts processes with 'spawn', "
                f"which pickles the config, and {', '.join(bad)} cannot be pickled (a lambda, "
                "a class defined in a cell, an open file?). Fix: define them in a .py module "
                "and import it, or pass data as a file path.",
                field="processes",
            )
    return LaunchPlan(
        processes=n, device="gpu" if gpu else "cpu", devices=devices, start_method=method
    )


def _start_method() -> str:
    """The method notebook_launcher will use (accelerate 1.x: spawn on XPU and ROCm)."""
    from accelerate.utils import get_current_device_type, is_rocm_available

    device_type, _ = get_current_device_type()
    return "spawn" if device_type == "xpu" or is_rocm_available() else "fork"


def unpicklable(cfg: Config) -> list[str]:
    """The config fields (``data.train``, ``callbacks``, ...) whose values do not pickle."""
    from nbtrain.config.refs import unwrap

    bad = []
    values: list[tuple[str, Any]] = [
        (f"data.{f.name}", getattr(cfg.data, f.name)) for f in dataclasses.fields(cfg.data)
    ]
    values += [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "data"]
    for name, value in values:
        try:
            pickle.dumps(unwrap(value))
        except Exception:
            bad.append(name)
    return bad


def _cuda_culprit(namespace: dict[str, Any] | None) -> str:
    """Name what put the GPU to use: a notebook variable on CUDA, when one can be found."""
    import torch

    ns = namespace
    if ns is None:
        main = sys.modules.get("__main__")
        ns = vars(main) if main is not None else {}
    for key, value in list(ns.items()):
        if key.startswith("_"):
            continue
        inner = getattr(value, "_model", None)  # a RunResult holding its model
        for obj, what in ((value, ""), (inner, " (the model of a finished run)")):
            if obj is None:
                continue
            with contextlib.suppress(Exception):
                if isinstance(obj, torch.Tensor) and obj.is_cuda:
                    return f": the tensor `{key}` is on {obj.device}"
                if isinstance(obj, torch.nn.Module) and any(p.is_cuda for p in obj.parameters()):
                    return f": `{key}`{what} is on the GPU"
    return (
        " (by a cell that used the GPU: a model or tensor moved to cuda, a torch.cuda call, "
        "or an earlier one-process run)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# The parent: launch, follow rank 0's stream, rebuild the outcome


def launch(
    cfg: Config,
    run_dir: Path,
    name: str,
    run: Callable[..., Any],
    *,
    subscribers: list[Subscriber] | tuple[Subscriber, ...] = (),
    restart: bool = False,
    stop: StopController | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` in ``cfg.processes`` processes with ``run`` (the engine's entry point);
    the events reach ``subscribers`` here. Returns the fields of the runner's ``Outcome``.

    ``stop`` (a background run's handle, the form's Stop button) reaches the processes through
    a file they watch; they agree on the step to stop at, and rank 0 saves the checkpoint.
    """
    plan = check_launch(cfg)
    from accelerate import notebook_launcher
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state or PartialState._shared_state:
        # An earlier one-process run in this kernel left accelerate's singletons behind; with
        # CUDA untouched (checked above) they are plain Python state, safe to clear, and
        # notebook_launcher refuses to start while they are set.
        AcceleratorState._reset_state(reset_partial_state=True)
    # The children must agree on the folder the parent follows: the name is fixed here.
    child_cfg = dataclasses.replace(cfg, name=name)
    fd, stream_name = tempfile.mkstemp(prefix="nbtrain-events-", suffix=".jsonl")
    os.close(fd)
    stream = Path(stream_name)
    bus = EventBus(list(subscribers))
    follower = _Follower(stream, bus, stop, Path(f"{stream}.stop"))
    env = {
        STREAM_ENV: str(stream),
        STOP_ENV: f"{stream}.stop",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if plan.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    follower.start()
    failure: BaseException | None = None
    try:
        with _quiet_launcher():
            notebook_launcher(
                _child,
                args=(run, child_cfg, restart),
                num_processes=plan.processes,
                use_port=str(_free_port()),
            )
    except KeyboardInterrupt:
        failure = KeyboardInterrupt()
    except Exception as e:  # a child failed: its own words come through the stream
        failure = e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        follower.stop()
        with contextlib.suppress(OSError):
            stream.unlink()
        for extra in [*stream.parent.glob(stream.name + ".rank*"), Path(f"{stream}.stop")]:
            with contextlib.suppress(OSError):
                extra.unlink()
    ended = follower.ended
    if ended is None:
        if isinstance(failure, KeyboardInterrupt):
            from nbtrain.runs import newest_complete

            newest = newest_complete(run_dir) if run_dir.is_dir() else None
            return dict(
                name=name,
                run_dir=run_dir,
                status="interrupted",
                resume_checkpoint=str(newest.path) if newest else None,
            )
        err = follower.child_error
        if err and err.get("kind") in ("config", "data"):
            cls = DataError if err["kind"] == "data" else ConfigError
            raise cls(err["message"], field=err.get("field"))
        detail = err["message"] if err else f"{type(failure).__name__}: {failure}"
        raise RuntimeError(
            f"The {plan.processes} training processes failed before the run ended: {detail}"
        ) from failure
    error = follower.errors[-1] if follower.errors and ended.status == "failed" else None
    return dict(
        name=name,
        run_dir=run_dir,
        status=ended.status,
        metrics=dict(ended.metrics),
        resume_checkpoint=ended.resume_checkpoint,
        best_checkpoint=ended.best_checkpoint,
        final_dir=ended.final_dir,
        error=error,
    )


@contextlib.contextmanager
def _quiet_launcher() -> Any:
    """notebook_launcher prints "Launching training on 2 CPUs."; the engine never prints."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


class _Follower:
    """Reads rank 0's event stream as it grows and hands each event to the parent's bus."""

    def __init__(
        self,
        path: Path,
        bus: EventBus,
        stop: StopController | None = None,
        stop_file: Path | None = None,
    ) -> None:
        self.path, self.bus = path, bus
        self.stop_request, self.stop_file = stop, stop_file
        self.ended: Any = None
        self.errors: list[ErrorEvent] = []
        self.child_error: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbtrain-follow", daemon=True)
        self._offset = 0
        self._partial = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._read()  # whatever came after the last poll
        for err in sorted(self.path.parent.glob(self.path.name + ".rank*")):
            with contextlib.suppress(OSError, ValueError):
                self.child_error = self.child_error or json.loads(err.read_text())

    def _loop(self) -> None:
        passed = False
        while not self._stop.wait(0.1):
            self._read()
            request = self.stop_request
            if not passed and request is not None and request.requested and self.stop_file:
                # The processes poll this file: a threading.Event does not cross a fork.
                with contextlib.suppress(OSError):
                    self.stop_file.write_text(request.reason or "stopped")
                passed = True

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except OSError:
            return
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # a line still being written
        for line in lines:
            if not line.strip():
                continue
            try:
                ev = from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue
            if ev.type == "end":
                self.ended = ev
            elif ev.type == "error":
                self.errors.append(ev)  # type: ignore[arg-type]
            self.bus.emit(ev)


# ---------------------------------------------------------------------------------------------
# The children


class _StreamWriter:
    """Rank 0's subscriber: every event, progress included, one JSON line, flushed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _child(run: Callable[..., Any], cfg: Config, restart: bool) -> None:
    """One launched process: the ordinary engine; rank 0 also streams its events."""
    stream = os.environ.get(STREAM_ENV)
    rank = int(os.environ.get("RANK", "0") or 0)
    subs = [_StreamWriter(stream)] if stream and rank == 0 else []
    stop = StopController()
    stop_file = os.environ.get(STOP_ENV)
    if stop_file:
        _watch_stop_file(Path(stop_file), stop)
    try:
        run(cfg, subscribers=subs, restart=restart, stop=stop)
    except BaseException as e:
        if stream:
            record = {
                "rank": rank,
                "kind": "data"
                if isinstance(e, DataError)
                else "config"
                if isinstance(e, ConfigError)
                else "error",
                "message": str(e) or type(e).__name__,
                "field": getattr(e, "field", None),
                "traceback": traceback.format_exc(),
                "time": time.time(),
            }
            with contextlib.suppress(OSError):
                Path(f"{stream}.rank{rank}").write_text(json.dumps(record))
        raise


def _watch_stop_file(path: Path, stop: StopController) -> None:
    """Turn the parent's stop file into a stop request in this process (a daemon thread)."""

    def watch() -> None:
        while not stop.requested:
            if path.exists():
                with contextlib.suppress(OSError):
                    stop.request(path.read_text().strip() or "stopped")
                return
            time.sleep(0.2)

    threading.Thread(target=watch, name="nbtrain-stop-file", daemon=True).start()
