"""transformers' log lines from a training thread go to the run folder, not the user's cell.

Inside ``Trainer.train()`` transformers logs warnings that are no news to an nbtrain user ("pad
token aligned", "mtime may not be reliable", "missing keys ['lm_head.weight']" for tied weights
when the best model is loaded back): under every causal-LM cell they showed as stderr. The
engine never prints, and a user's own transformers calls must keep their warnings, so the
routing is per thread: records emitted by a thread inside :func:`library_log_to` (below ERROR)
are appended to that run's ``library.log``; other threads and errors pass through untouched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path


class _ByThread(logging.Filter):
    """A handler filter: a training thread's records below ERROR go to its run's file."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[int, Path] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        path = self.files.get(record.thread or 0)
        if path is None or record.levelno >= logging.ERROR:
            return True
        try:
            with path.open("a", encoding="utf-8") as f:
                f.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        except OSError:
            return True  # the folder is gone or the disk is full: better shown than lost
        return False


_ROUTER = _ByThread()
_LOCK = threading.Lock()


@contextlib.contextmanager
def library_log_to(path: Path) -> Iterator[None]:
    """Route this thread's transformers log records (below ERROR) to ``path`` meanwhile."""
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()  # the library's root logger, its handler configured
    with _LOCK:
        for handler in root.handlers:
            if _ROUTER not in handler.filters:
                handler.addFilter(_ROUTER)
        _ROUTER.files[threading.get_ident()] = Path(path)
    try:
        yield
    finally:
        with _LOCK:
            _ROUTER.files.pop(threading.get_ident(), None)
