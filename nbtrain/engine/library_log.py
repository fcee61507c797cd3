"""transformers' log lines from a training thread go to the run folder, not the user's cell.

Inside ``Trainer.train()`` transformers logs warnings that are no news to an nbtrain user ("pad
token aligned", "mtime may not be reliable", "missing keys ['lm_head.weight']" for tied weights
when the best model is loaded back): under every causal-LM cell they showed as stderr. The
engine never prints, and a user's own transformers calls must keep their warnings, so the
routing is per thread: records emitted by a thread inside :func:`library_log_to` (below ERROR)
are appended to that run's ``library.log``; other threads and errors pass through untouched.

:func:`quiet_transformers` (loading a model, a tokenizer) drops a thread's records the same
way instead of lowering transformers' global verbosity: two threads that saved and restored the
global level in turn (a background run loading while a sweep trial loads) left it at ERROR for
the whole kernel, and hid the warnings of every run training meanwhile. Progress bars have only
a global switch, so it is held by a count: off while any thread needs quiet, back on after
the last.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_DROP = Path("/dev/null/nbtrain-quiet")  # a marker, never opened
_ABSENT = object()


class _ByThread(logging.Filter):
    """A handler filter: a training thread's records below ERROR go to its run's file; a quiet
    thread's are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[int, Path] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        path = self.files.get(record.thread or 0)
        if path is None or record.levelno >= logging.ERROR:
            return True
        if path is _DROP:
            return False
        if getattr(record, "_nbtrain_logged", False):
            return False  # a second handler of the same logger: written once already
        record._nbtrain_logged = True
        try:
            with path.open("a", encoding="utf-8") as f:
                f.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        except OSError:
            return True  # the folder is gone or the disk is full: better shown than lost
        return False


_ROUTER = _ByThread()
_LOCK = threading.Lock()


@contextlib.contextmanager
def _route_this_thread(target: Path) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()  # the library's root logger, its handler configured
    me = threading.get_ident()
    with _LOCK:
        for handler in root.handlers:
            if _ROUTER not in handler.filters:
                handler.addFilter(_ROUTER)
        before = _ROUTER.files.get(me, _ABSENT)
        _ROUTER.files[me] = target
    try:
        yield
    finally:
        with _LOCK:
            if before is _ABSENT:
                _ROUTER.files.pop(me, None)
            else:
                _ROUTER.files[me] = before  # type: ignore[assignment]


def library_log_to(path: Path) -> contextlib.AbstractContextManager[None]:
    """Route this thread's transformers log records (below ERROR) to ``path`` meanwhile."""
    return _route_this_thread(Path(path))


class _SharedSwitch:
    """A process-wide on/off setting that several threads may want off at once: off while any
    holds it, back to what it was when the last lets go."""

    def __init__(self, is_on: Callable[[], bool], on: Callable[[], None], off: Callable[[], None]):
        self._is_on, self._on, self._off = is_on, on, off
        self._holders = 0
        self._was_on = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_on = self._is_on()
                if self._was_on:
                    self._off()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_on:
                    self._on()


def _hf_bars() -> _SharedSwitch:
    from transformers.utils import logging as hf_logging

    return _SharedSwitch(
        hf_logging.is_progress_bar_enabled,
        hf_logging.enable_progress_bar,
        hf_logging.disable_progress_bar,
    )


def _datasets_bars() -> _SharedSwitch:
    import datasets

    return _SharedSwitch(
        datasets.is_progress_bar_enabled,
        datasets.enable_progress_bars,
        datasets.disable_progress_bars,
    )


_SWITCHES: dict[str, _SharedSwitch] = {}
_MAKERS = {"transformers": _hf_bars, "datasets": _datasets_bars}


def _switch(name: str) -> _SharedSwitch:
    with _LOCK:
        if name not in _SWITCHES:
            _SWITCHES[name] = _MAKERS[name]()
        return _SWITCHES[name]


def no_progress_bars(library: str = "transformers") -> contextlib.AbstractContextManager[None]:
    """No tqdm bars from ``library`` ("transformers" with the hub's, or "datasets") meanwhile."""
    return _switch(library).off()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """This thread's transformers warnings dropped and no bars ("Loading weights", the
    MISSING-keys table) while it loads: the engine never prints; what users need to know
    arrives as events. Other threads keep their warnings."""
    with _route_this_thread(_DROP), no_progress_bars():
        yield
