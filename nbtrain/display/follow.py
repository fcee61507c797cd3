"""Follow a run that another process is training: read new lines of its ``events.jsonl``.

The log is append-only and each line is flushed as it is written, so a reader that remembers how
many lines it has seen can feed a view the new events twice a second. A torn last line (the
writer is mid-line) is read again on the next poll.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from nbtrain.events import from_dict
from nbtrain.runs import STALE_S


class Follower:
    """Feeds ``view`` the events appended to ``log`` after the first ``skip`` lines."""

    def __init__(self, log: Path, view: Any, *, skip: int = 0, poll: float = 0.5) -> None:
        self.log = Path(log)
        self.view = view
        self.poll = poll
        self.lines = skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="nbtrain-follow", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def following(self) -> bool:
        return self._thread.is_alive()

    def read_new(self) -> list[Any]:
        """Events of the complete lines written since the last read."""
        out = []
        try:
            with open(self.log, encoding="utf-8") as fh:
                lines = fh.readlines()
        except OSError:
            return out
        for line in lines[self.lines :]:
            if not line.endswith("\n"):
                break  # the writer is mid-line: read it next time
            self.lines += 1
            try:
                out.append(from_dict(json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out

    def _main(self) -> None:
        last_change = time.time()
        while not self._stop.is_set():
            events = self.read_new()
            if events:
                last_change = time.time()
            for ev in events:
                self.view(ev)
                if ev.type == "end":
                    return
            if time.time() - last_change > STALE_S:
                self.view.note = "The run stopped writing events; showing its last state."
                self.view.show()
                return
            self._stop.wait(self.poll)
