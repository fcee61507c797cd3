"""accelerate's one-per-process state, shared safely by the runs of one kernel.

accelerate keeps a single ``AcceleratorState`` per process (its mixed precision is what every
Trainer's autocast reads), and transformers resets it whenever a ``TrainingArguments`` sets up
its device. A second run set up while a first one trained (a ``parallel: true`` background run,
a dry run's timed steps) wiped the state under the first: it failed with "'AcceleratorState'
object has no attribute 'parallelism_config'", or went on without its autocast.

So set-ups take turns, and while another run of this process holds the state, a set-up keeps it
instead of resetting it. Two runs can share it only with the same precision: a second one that
asks for another is refused with a clear error instead of changing the first one's numerics.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from nbtrain.errors import ConfigError

_LOCK = threading.RLock()
#: id(owner) -> (run name, precision) for each run of this process whose Trainer is alive.
_ACTIVE: dict[int, tuple[str, str]] = {}


@contextlib.contextmanager
def setting_up(owner: Any = None, name: str = "", precision: str = "fp32") -> Iterator[None]:
    """Hold while making ``TrainingArguments`` and a Trainer; an ``owner`` (the run) then holds
    the state until :func:`release`. Without one (a dry run's timed steps) nothing is held."""
    with _LOCK:
        others = {n: p for key, (n, p) in _ACTIVE.items() if key != id(owner)}
        clash = {n: p for n, p in others.items() if p != precision}
        if owner is not None and clash:
            other, theirs = next(iter(clash.items()))
            raise ConfigError(
                f"precision {precision} cannot train beside run {other!r} ({theirs}) in this "
                "kernel: accelerate keeps one mixed precision per process. Let this run queue "
                f"behind it (without parallel), or set precision: {theirs}.",
                field="precision",
            )
        with _keeping_state() if others else contextlib.nullcontext():
            yield
        if owner is not None:
            _ACTIVE[id(owner)] = (name, precision)


def release(owner: Any) -> None:
    """The run's Trainer is gone: a later set-up may reset the state again."""
    with _LOCK:
        _ACTIVE.pop(id(owner), None)


@contextlib.contextmanager
def _keeping_state() -> Iterator[None]:
    from accelerate.state import AcceleratorState

    reset = AcceleratorState.__dict__["_reset_state"]
    AcceleratorState._reset_state = staticmethod(lambda *a, **kw: None)  # type: ignore[method-assign]
    try:
        yield
    finally:
        AcceleratorState._reset_state = reset  # type: ignore[method-assign]
