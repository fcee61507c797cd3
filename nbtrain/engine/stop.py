"""A request to stop training cleanly: from a signal, a Stop button, or a RunHandle.

Standard library only, so a background run's handle can hold one before torch is imported.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


class StopController:
    """A request to stop training at the end of the current step, with a checkpoint.

    Set by a signal (Ctrl-C / kernel interrupt, SIGTERM), a Stop button in another thread, or
    ``RunHandle.stop()``. A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event = threading.Event()

    def request(self, reason: str = "stopped") -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @contextlib.contextmanager
    def signals(self) -> Any:
        """Turn SIGINT/SIGTERM into stop requests while training (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}
        active = True

        def on_signal(signum: int, frame: Any) -> None:
            if not active:  # left installed past its run: the signal goes where it went before
                before = previous.get(signum)
                if callable(before):
                    before(signum, frame)
                elif signum == signal.SIGINT and before != signal.SIG_IGN:
                    raise KeyboardInterrupt
                return
            if signum == signal.SIGINT and self.reason == "interrupted":
                raise KeyboardInterrupt  # second Ctrl-C: stop now
            self.request("interrupted" if signum == signal.SIGINT else "terminated")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass
        try:
            yield
        finally:
            active = False
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, handler)
