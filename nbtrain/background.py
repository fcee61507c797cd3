"""Background runs: training on a worker thread of the kernel while the notebook stays usable.

``finetune(config, background=True)``, ``%%finetune NAME --background`` and the form's Train
button all come here; a config with a ``sweep:`` section gets a :class:`SweepHandle` (the same
handle: its view is the sweep's trial panel, ``wait()`` returns the ``SweepResult``, ``stop()``
saves the current trial's checkpoint and ends the sweep). The caller gets a :class:`RunHandle` at once; the run trains on a worker
thread, one at a time per kernel (others wait in a queue) unless ``parallel=True``. Views
subscribe to the handle: the one created in the starting cell and any number attached later
(``%nbtrain attach NAME``), each drawing into its own output, never into whichever cell happens
to be executing. What the run prints (callbacks, the user's code) goes to the run's own view.

A kernel interrupt does not stop a background run (it interrupts the cell that is executing);
``handle.stop()``, ``%nbtrain stop NAME`` or the view's Stop button does, with a checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from nbtrain.display.state import RunState
from nbtrain.errors import RunInterrupted
from nbtrain.events import Event

#: This kernel's background runs by name, the newest handle for each name.
RUNS: dict[str, RunHandle] = {}
# One training run at a time per kernel: GPU memory and CPU cores are shared.
_TRAIN_SLOT = threading.Lock()
_QUEUE: list[RunHandle] = []  # handles waiting for the slot, in order
_QUEUE_LOCK = threading.Lock()


class RunHandle:
    """A run training in the background.

    Attributes:
        name: the run name (its folder under ``runs_dir``).
        status: queued | preparing | running | finished | stopped | interrupted | failed.
        result: the :class:`~nbtrain.api.RunResult` once the run has ended, else None.
        error: the exception that ended the run, if one did.
        state: the run's :class:`~nbtrain.display.state.RunState` (what views show).
    """

    def __init__(
        self,
        cfg: Any,
        *,
        restart: bool = False,
        parallel: bool = False,
        subscribers: list[Callable[[Event], None]] | None = None,
        target: Callable[..., Any],
    ) -> None:
        from nbtrain.engine.stop import StopController

        self._target = target  # api.run_config: train on this thread, return a RunResult
        self.name: str = cfg.name
        self.config = cfg
        self.restart = restart
        self.parallel = parallel
        self.status = "queued"
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = RunState(run=cfg.name)
        self.output = ""  # what the run printed
        self.started_at: float | None = None
        self._stop = StopController()
        self._events: list[Event] = []
        self._viewers: list[Any] = []
        self._subscribers = list(subscribers or [])
        self._callbacks: list[Callable[[RunHandle], None]] = []
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"nbtrain-run-{self.name}", daemon=True
        )

    # -- what users call ------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        """Fraction of the run's optimizer steps done (0 before training starts)."""
        return self.state.fraction if not self._done.is_set() or self.status != "finished" else 1.0

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        """Stop at the end of the current step and save a checkpoint (a queued run never starts)."""
        self._stop.request("stopped")
        with _QUEUE_LOCK:
            if self in _QUEUE:
                _QUEUE.remove(self)
                self.status = "stopped"
        self._redraw()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the run ends and return its RunResult.

        Raises:
            TimeoutError: the run is still going after ``timeout`` seconds.
            ConfigError, TrainingFailed, RunInterrupted: as the foreground ``finetune`` would.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(
                f"{self.kind.capitalize()} {self.name!r} is still {self.status} after "
                f"{timeout} s ({self._where()})."
            )
        if self.error is not None:
            raise self.error
        return self.result

    def add_done_callback(self, fn: Callable[[RunHandle], None]) -> None:
        """Call ``fn(handle)`` on the worker thread when the run has ended (at once if it has)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def watch(self, viewer: Callable[[Event], None]) -> None:
        """Feed ``viewer`` the run's events so far, then every new one, until the run ends."""
        with self._lock:
            view_state = getattr(viewer, "state", None)
            for ev in self._events:
                if view_state is not None and hasattr(viewer, "show"):
                    view_state.update(ev)  # a view folds the past, then draws once
                else:
                    viewer(ev)
            if not self._done.is_set():
                self._viewers.append(viewer)
            self._sync(viewer)
        if view_state is not None and hasattr(viewer, "show") and self._done.is_set():
            _safe(viewer.show)

    # -- the worker ---------------------------------------------------------------------------
    def start(self) -> RunHandle:
        previous = RUNS.get(self.name)
        if previous is not None and not previous.done:
            from nbtrain.errors import ConfigError

            raise ConfigError(
                f"Run {self.name!r} is already {previous.status} in this kernel. Watch it with "
                f"%nbtrain attach {self.name}, stop it with %nbtrain stop {self.name}, or give "
                "this run another name."
            )
        RUNS[self.name] = self
        if not self.parallel:
            with _QUEUE_LOCK:
                ahead = [
                    h
                    for h in RUNS.values()
                    if h is not self and not h.parallel and h.status in ("preparing", "running")
                ] + [h for h in _QUEUE if not h.done]
                _QUEUE.append(self)
            if ahead:
                self.queued_behind = ahead[-1].name
        _OUTPUT.install()
        self._thread.start()
        return self

    queued_behind: str | None = None

    kind = "run"

    def __call__(self, ev: Event) -> None:
        """The engine's subscriber: record, fold, fan out (on the worker thread)."""
        with self._lock:
            self._fold(ev)
            viewers = list(self._viewers)
        for fn in (*viewers, *self._subscribers):
            try:
                fn(ev)
            except Exception:  # a broken view must not lose the training run
                pass

    def _fold(self, ev: Event) -> None:
        """Record and fold one event (under the lock)."""
        if ev.persist:
            self._events.append(ev)
        self.state.update(ev)
        if ev.type == "start":
            self.status = "running"

    def _where(self) -> str:
        return f"step {self.state.step}/{self.state.total_steps}"

    def _main(self) -> None:
        _OUTPUT.route(self._write)
        try:
            if not self.parallel:
                self._wait_for_slot()
                if self._stop.requested:  # stopped while queued
                    self.status = "stopped"
                    return
            self.status = "preparing"
            self.started_at = time.time()
            self._redraw()
            try:
                self.result = self._target(
                    self.config, subscribers=[self], restart=self.restart, stop=self._stop
                )
                self.status = self.result.status
            except BaseException as e:  # reported through wait() and the views
                self.error = e
                self.status = "interrupted" if isinstance(e, RunInterrupted) else "failed"
        finally:
            _OUTPUT.unroute()
            if not self.parallel:
                with _QUEUE_LOCK:
                    if self in _QUEUE:
                        _QUEUE.remove(self)
                if _TRAIN_SLOT.locked() and getattr(self, "_holds_slot", False):
                    _TRAIN_SLOT.release()
            with self._lock:
                viewers, self._viewers = self._viewers, []
                callbacks, self._callbacks = self._callbacks, []
                self._ending = True
            for v in viewers:
                self._sync(v)
                if not v.state.ended:  # an error before training: no end event was drawn
                    _safe(getattr(v, "show", _nothing))
                _safe(getattr(v, "close", lambda: None))
            for fn in callbacks:  # before wait() returns, so callers see their effects
                _safe(lambda fn=fn: fn(self))
            with self._lock:
                self._done.set()
            _OUTPUT.uninstall_if_idle()

    def _wait_for_slot(self) -> None:
        """Take the training slot once this run is first in the queue: runs start in the order
        they were queued, even when an earlier run's worker thread gets going late."""
        while True:
            if self._stop.requested:
                return
            with _QUEUE_LOCK:
                first = not _QUEUE or _QUEUE[0] is self
            if first:
                if _TRAIN_SLOT.acquire(timeout=0.25):
                    break
            else:
                time.sleep(0.05)
        self._holds_slot = True
        with _QUEUE_LOCK:
            if self in _QUEUE:
                _QUEUE.remove(self)
        self.queued_behind = None

    def _write(self, text: str) -> None:
        with self._lock:
            self.output += text
            viewers = list(self._viewers)
        for v in viewers:
            v.output = self.output

    # -- views ----------------------------------------------------------------------------------
    def _sync(self, viewer: Any) -> None:
        """Hand the handle's own notes (queue position, printed output) to a view."""
        if hasattr(viewer, "status_note"):
            viewer.status_note = self._note()
        if hasattr(viewer, "output"):
            viewer.output = self.output

    def _note(self) -> str:
        if self.status == "queued":
            behind = self.queued_behind
            return f"queued behind {behind}" if behind else "queued"
        if self.status == "stopped" and not self.state.started:
            return "stopped before it started"
        if not self.done and self._stop.requested:
            return "stopping after this step…"
        if self.error is not None and not self.state.ended:
            return f"{type(self.error).__name__}: {self.error}"
        return ""

    def _redraw(self) -> None:
        with self._lock:
            viewers = list(self._viewers)
        for v in viewers:
            self._sync(v)
            _safe(getattr(v, "show", _nothing))

    def __repr__(self) -> str:
        s = self.state
        steps = f", step {s.step}/{s.total_steps}" if s.total_steps else ""
        note = self._note()
        return f"RunHandle({self.name!r}, {self.status}{steps}" + (f", {note})" if note else ")")

    def _repr_html_(self) -> str:
        from nbtrain.display.live import HtmlRenderer

        view = HtmlRenderer(display=lambda _v: None, write_card=False)
        with self._lock:
            for ev in self._events:
                view.state.update(ev)
        self._sync(view)
        return view.html()


class SweepHandle(RunHandle):
    """A sweep running in the background: a :class:`RunHandle` whose run is the whole sweep.

    ``status``, ``stop()``, ``wait()`` (the :class:`~nbtrain.sweep.SweepResult`), the queue and
    the output routing are the run handle's; ``state`` is the sweep's
    :class:`~nbtrain.display.sweep.SweepState` (trials and their states), ``trial_state`` the
    current trial's :class:`RunState`, and its views are trial panels.
    """

    kind = "sweep"

    def __init__(self, cfg: Any, **kw: Any) -> None:
        from nbtrain.display.sweep import SweepState

        super().__init__(cfg, **kw)
        self.state = SweepState(sweep=cfg.name, total=cfg.sweep.trials)  # type: ignore[assignment]
        self.trial_state = RunState()

    @property
    def progress(self) -> float:
        """Fraction of the sweep's trials done, the current trial's steps counted in."""
        if self.done and self.status == "finished":
            return 1.0
        s = self.state
        current = self.trial_state.fraction if s.current is not None else 0.0
        return min(1.0, (s.ended_count + current) / s.total) if s.total else 0.0

    def _fold(self, ev: Event) -> None:
        if ev.type.startswith(("sweep_", "trial_")):
            if ev.type == "trial_start":
                # A new trial: keep the sweep's events and this trial's run events only (the
                # ended trials have their own logs); an attaching panel replays these.
                self._events = [e for e in self._events if _is_sweep_event(e)]
                self.trial_state = RunState(run=ev.run)
            self.state.update(ev)
            if ev.type == "sweep_start":
                self.status = "running"
        else:
            self.trial_state.update(ev)
        if ev.persist:
            self._events.append(ev)

    def _where(self) -> str:
        return f"trial {self.state.ended_count + 1}/{self.state.total}"

    def watch(self, viewer: Callable[[Event], None]) -> None:
        """Feed a view (a trial panel) the sweep's events so far, then every new one."""
        with self._lock:
            replay = hasattr(viewer, "_draw") and hasattr(viewer, "trial_view")  # a SweepPanel
            if replay:
                viewer._replaying = True  # type: ignore[attr-defined]  # one frame, not one per event
            try:
                for ev in self._events:
                    viewer(ev)
            finally:
                if replay:
                    viewer._replaying = False  # type: ignore[attr-defined]
            if not self._done.is_set():
                self._viewers.append(viewer)
            self._sync(viewer)
        if self._done.is_set():
            _safe(getattr(viewer, "show", _nothing))

    def _sync(self, viewer: Any) -> None:
        super()._sync(viewer)
        state = getattr(viewer, "state", None)
        if state is not None and hasattr(state, "sweep") and not state.sweep:
            state.sweep, state.total = self.state.sweep, self.state.total  # before sweep_start

    def __repr__(self) -> str:
        s = self.state
        trials = f", {s.ended_count}/{s.total} trials" if s.total else ""
        best = s.best
        best_txt = f", best {best.run} {s.metric}={best.value:.4g}" if best is not None else ""
        note = self._note()
        return f"SweepHandle({self.name!r}, {self.status}{trials}{best_txt}" + (
            f", {note})" if note else ")"
        )

    def _repr_html_(self) -> str:
        from nbtrain.display.sweep import SweepPanel

        panel = SweepPanel(display=lambda _v: None)
        panel._replaying = True  # type: ignore[attr-defined]
        with self._lock:
            for ev in self._events:
                panel(ev)
        panel._replaying = False  # type: ignore[attr-defined]
        self._sync(panel)
        return panel.html()


def _is_sweep_event(ev: Event) -> bool:
    return ev.type.startswith(("sweep_", "trial_"))


def _nothing() -> None:
    pass


def _safe(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        pass


@contextlib.contextmanager
def train_slot(notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold this kernel's training slot for a foreground run, waiting behind a background one.

    The wait polls, so a kernel interrupt (KeyboardInterrupt) ends it.
    """
    if not _TRAIN_SLOT.acquire(blocking=False):
        ahead = [h.name for h in running() if not h.parallel]
        if notify is not None and ahead:
            notify(f"queued behind {ahead[0]}")
        while not _TRAIN_SLOT.acquire(timeout=0.25):
            pass
    try:
        yield
    finally:
        _TRAIN_SLOT.release()


def running() -> list[RunHandle]:
    """This kernel's background runs that have not ended, queued ones included."""
    return [h for h in RUNS.values() if not h.done]


# -- output routing -------------------------------------------------------------------------------


class _ThreadRouter(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` stand-in: writes from a run's worker thread go to that run's
    view; everything else goes where it always went."""

    def __init__(self, original: Any, sinks: dict[int, Callable[[str], None]]) -> None:
        self.original = original
        self.sinks = sinks  # thread id -> the run's writer, shared by every router

    def write(self, s: str) -> int:
        sink = self.sinks.get(threading.get_ident())
        if sink is None:
            return self.original.write(s)
        sink(s)
        return len(s)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.original, "isatty", lambda: False)())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _Output:
    """Routes what worker threads print to their runs while any background run is going.

    ``sys.stdout``/``sys.stderr`` are swapped for routers, and so are the streams of the logging
    handlers that write to the console: a handler holds the stream it was made with (the
    kernel's stderr for transformers' and the user's handlers), so without this a run's log
    lines would land in whichever cell is executing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sinks: dict[int, Callable[[str], None]] = {}
        self.stdout: _ThreadRouter | None = None
        self.stderr: _ThreadRouter | None = None
        self._handlers: list[Any] = []  # logging handlers whose stream is a router

    def install(self) -> None:
        with self._lock:
            if not isinstance(sys.stdout, _ThreadRouter):
                self.stdout = sys.stdout = _ThreadRouter(sys.stdout, self.sinks)
            if not isinstance(sys.stderr, _ThreadRouter):
                self.stderr = sys.stderr = _ThreadRouter(sys.stderr, self.sinks)
            self._route_log_handlers()

    def _route_log_handlers(self) -> None:
        import logging

        consoles = {
            id(s)
            for s in (
                getattr(sys.stdout, "original", None),
                getattr(sys.stderr, "original", None),
                sys.__stdout__,
                sys.__stderr__,
            )
            if s is not None
        }
        loggers = [logging.getLogger()] + [
            lg for lg in list(logging.Logger.manager.loggerDict.values()) if hasattr(lg, "handlers")
        ]
        for lg in loggers:
            for h in list(lg.handlers):
                stream = getattr(h, "stream", None)
                if (
                    isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler)
                    and not isinstance(stream, _ThreadRouter)
                    and id(stream) in consoles
                ):
                    h.stream = _ThreadRouter(stream, self.sinks)
                    self._handlers.append(h)

    def route(self, sink: Callable[[str], None]) -> None:
        self.sinks[threading.get_ident()] = sink

    def unroute(self) -> None:
        self.sinks.pop(threading.get_ident(), None)

    def uninstall_if_idle(self) -> None:
        with self._lock:
            if running() or self.sinks:
                return
            if isinstance(sys.stdout, _ThreadRouter):
                sys.stdout = sys.stdout.original
            if isinstance(sys.stderr, _ThreadRouter):
                sys.stderr = sys.stderr.original
            for h in self._handlers:
                if isinstance(h.stream, _ThreadRouter):
                    h.stream = h.stream.original
            self._handlers.clear()


_OUTPUT = _Output()
