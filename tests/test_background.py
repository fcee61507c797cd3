"""Background runs: a worker thread, a handle, a queue, views that attach, output kept apart."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

import nbtrain
from nbtrain.background import RUNS, RunHandle


class Recorder:
    """``display(obj) -> handle`` that records every frame (as the live view would show it)."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, obj):
        self._add(obj)
        return self

    def update(self, obj) -> None:
        self._add(obj)

    def _add(self, obj) -> None:
        html = obj._repr_html_() if hasattr(obj, "_repr_html_") else repr(obj)
        with self.lock:
            self.frames.append(html)

    @property
    def last(self) -> str:
        with self.lock:
            return self.frames[-1] if self.frames else ""


@pytest.fixture(autouse=True)
def _no_leftover_runs():
    yield
    for h in list(RUNS.values()):
        if not h.done:
            h.stop()
            h._done.wait(60)
    RUNS.clear()


def _weights(result):
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_a_background_run_returns_at_once_and_equals_the_foreground_run(fast_cfg, runs_dir):
    import torch

    fg = nbtrain.finetune({**fast_cfg, "name": "fg"}, display="none")
    t0 = time.perf_counter()
    handle = nbtrain.finetune({**fast_cfg, "name": "bg"}, display="none", background=True)
    returned_after = time.perf_counter() - t0
    assert isinstance(handle, RunHandle)
    assert returned_after < 2.0  # data loading and training happen on the worker thread
    assert handle.result is None and not handle.done
    result = handle.wait(timeout=300)
    assert handle.done and handle.status == "finished" and handle.result is result
    assert handle.progress == 1.0
    timing = ("runtime", "per_second")
    same = {k: v for k, v in fg.metrics.items() if not k.endswith(timing)}
    assert {k: v for k, v in result.metrics.items() if not k.endswith(timing)} == same
    a, b = _weights(fg), _weights(result)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _clock(starts: dict[str, float], ends: dict[str, float]):
    """``clock(name)``: an event subscriber stamping the run's start and end times."""

    def clock(name):
        def on_event(ev):
            if ev.type == "start":
                starts[name] = time.monotonic()
            elif ev.type == "end":
                ends[name] = time.monotonic()

        return on_event

    return clock


def test_runs_queue_one_at_a_time_unless_parallel(fast_cfg):
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    clock = _clock(starts, ends)

    first = nbtrain.finetune(
        {**fast_cfg, "name": "first"}, display="none", on_event=clock("first"), background=True
    )
    second = nbtrain.finetune(
        {**fast_cfg, "name": "second"}, display="none", on_event=clock("second"), background=True
    )
    assert second.status == "queued" and second.queued_behind == "first"
    assert "queued behind first" in repr(second)
    second.wait(300)
    first.wait(300)
    assert starts["second"] > ends["first"]  # it waited for the slot

    rec_a, rec_b = Recorder(), Recorder()
    a = nbtrain.finetune({**fast_cfg, "name": "pa", "epochs": 4}, display=rec_a, background=True)
    b = nbtrain.finetune({**fast_cfg, "name": "pb"}, display=rec_b, background=True, parallel=True)
    assert b.queued_behind is None
    b.wait(300)
    a.wait(300)
    assert a.status == b.status == "finished"


def test_runs_start_in_the_order_they_were_queued(fast_cfg, monkeypatch):
    """The first run's worker thread may get going after the second's (a busy machine): the
    second must still wait for the first, as its "queued behind first" says (seen in CI)."""
    from nbtrain.background import RunHandle

    original = RunHandle._wait_for_slot

    def late_first(self):
        if self.name == "late-first":
            time.sleep(1.5)  # this worker is scheduled late
        return original(self)

    monkeypatch.setattr(RunHandle, "_wait_for_slot", late_first)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    clock = _clock(starts, ends)

    first = nbtrain.finetune(
        {**fast_cfg, "name": "late-first", "epochs": 1},
        display="none",
        on_event=clock("first"),
        background=True,
    )
    second = nbtrain.finetune(
        {**fast_cfg, "name": "on-time-second", "epochs": 1},
        display="none",
        on_event=clock("second"),
        background=True,
    )
    assert second.queued_behind == "late-first"
    second.wait(300)
    first.wait(300)
    assert starts["first"] < ends["first"] < starts["second"]


def test_parallel_true_in_the_config_is_the_parallel_flag(fast_cfg, monkeypatch):
    from nbtrain import api
    from nbtrain.config import load_config
    from nbtrain.engine.rundir import identity

    seen = {}
    monkeypatch.setattr(api, "_start_background", lambda cfg, **kw: seen.update(kw))
    nbtrain.finetune({**fast_cfg, "parallel": True}, display="none", background=True)
    assert seen["parallel"] is True
    nbtrain.finetune(fast_cfg, display="none", background=True)
    assert seen["parallel"] is False
    # not part of the run's identity: a re-run with it reuses the run
    assert identity(load_config({**fast_cfg, "parallel": True})) == identity(load_config(fast_cfg))


def test_a_queued_run_shows_why_it_waits(fast_cfg):
    first = nbtrain.finetune(
        {**fast_cfg, "name": "q1", "epochs": 3}, display="none", background=True
    )
    rec = Recorder()
    from nbtrain.display.live import HtmlRenderer

    second = nbtrain.finetune(
        {**fast_cfg, "name": "q2"},
        display=HtmlRenderer(display=rec, write_card=False),
        background=True,
    )
    # A renderer given as display= is a subscriber: the handle still tells it the queue note.
    assert second.status == "queued"
    assert "queued behind q1" in second._repr_html_()
    second.stop()  # a queued run that is stopped never starts
    assert second.wait(60) is None and second.status == "stopped"
    first.wait(300)
    assert not (Path(fast_cfg["runs_dir"]) / "q2").exists()


def test_stop_ends_the_run_with_a_checkpoint_and_a_rerun_resumes(fast_cfg, runs_dir):
    from nbtrain.runs import newest_complete, run_status

    cfg = {**fast_cfg, "name": "stoppable", "epochs": 30, "save_strategy": "epoch"}
    seen = []

    def stop_at_step_5(ev):
        seen.append(ev)
        if ev.type == "step" and ev.step == 5:
            RUNS["stoppable"].stop()

    handle = nbtrain.finetune(cfg, display="none", on_event=stop_at_step_5, background=True)
    result = handle.wait(300)
    assert handle.status == result.status == "stopped"
    ckpt = newest_complete(runs_dir / "stoppable")
    assert ckpt is not None and ckpt.step >= 5
    assert run_status(runs_dir / "stoppable").status == "stopped"
    again = nbtrain.finetune({**cfg, "epochs": 30}, display="none", background=True)
    start = next(e for e in _events_until(again, "start"))
    assert start.resumed_from and start.resumed_from.endswith(ckpt.name)
    again.stop()
    again.wait(300)


def _events_until(handle, kind, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = list(handle._events)
        if any(e.type == kind for e in events):
            return [e for e in events if e.type == kind]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout} s")


def test_what_the_run_prints_goes_to_its_own_view_not_the_current_cell(fast_cfg, capsys):
    from transformers import TrainerCallback

    class Chatty(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kw):
            print(f"epoch {int(state.epoch)} done")

    rec = Recorder()
    from nbtrain.display.live import HtmlRenderer

    view = HtmlRenderer(display=rec, write_card=False)
    handle = nbtrain.finetune(
        {**fast_cfg, "name": "chatty", "callbacks": [Chatty()]},
        display="none",
        background=True,
    )
    handle.watch(view)
    print("the user's own cell output")  # printed while the run trains
    handle.wait(300)
    out = capsys.readouterr().out
    assert "the user's own cell output" in out
    assert "epoch 1 done" not in out  # nothing of the run leaked into this cell
    assert "epoch 1 done" in handle.output and "epoch 2 done" in handle.output
    assert "epoch 2 done" in rec.last  # the card shows the run's output


def test_what_the_run_logs_goes_to_its_own_view_not_the_current_cell(fast_cfg, capsys):
    """A logging handler made before the run holds the cell's stream itself (as transformers'
    and the user's handlers hold the kernel's stderr), so swapping sys.stderr alone would let
    the run's log lines land in whichever cell is executing."""
    import logging
    import sys

    from transformers import TrainerCallback

    from nbtrain.background import _ThreadRouter

    logger = logging.getLogger("nbtrain-test-user")
    handler = logging.StreamHandler(sys.stderr)  # this test's stderr, captured by capsys
    logger.addHandler(handler)
    logger.propagate = False

    class Logs(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kw):
            logger.warning("epoch %d logged", int(state.epoch))

    try:
        handle = nbtrain.finetune(
            {**fast_cfg, "name": "logging", "callbacks": [Logs()]},
            display="none",
            background=True,
        )
        logger.warning("the cell's own log line")  # logged while the run trains
        handle.wait(300)
        _wait_until(lambda: not isinstance(handler.stream, _ThreadRouter), timeout=10)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "the cell's own log line" in err
    assert "epoch 1 logged" not in err and "epoch 2 logged" not in err  # nothing leaked
    assert "epoch 1 logged" in handle.output and "epoch 2 logged" in handle.output
    assert handler.stream is sys.stderr  # the handler writes where it did before the run


def test_attach_replays_the_curves_so_far_then_follows(fast_cfg):
    seen_step = threading.Event()

    def slow(ev):
        if ev.type == "step":
            time.sleep(0.02)
            if ev.step >= 4:
                seen_step.set()

    handle = nbtrain.finetune(
        {**fast_cfg, "name": "watched", "epochs": 6, "logging_steps": 1},
        display="none",
        on_event=slow,
        background=True,
    )
    assert seen_step.wait(120)
    rec = Recorder()
    assert nbtrain.attach("watched", display=rec) is handle
    first = rec.frames[0]
    assert "watched" in first and "<svg" in first and "polyline" in first  # curves so far
    handle.wait(300)
    assert len(rec.frames) > 2 and "finished" in rec.last


def test_attach_follows_a_run_another_process_writes(tmp_path):
    """A run folder whose events.jsonl grows (the CLI, accelerate launch): attach reads the
    curves so far, then the new lines as they are appended, until the end event."""
    from nbtrain.events import Evaluated, Logged, RunEnded, RunStarted

    run = tmp_path / "elsewhere"
    run.mkdir()
    (run / "config.yaml").write_text("model: x\n")
    log = run / "events.jsonl"

    def write(ev):
        with open(log, "a") as fh:
            fh.write(json.dumps(ev.to_dict()) + "\n")

    write(RunStarted(run="elsewhere", run_dir=str(run), total_steps=20, batch_size=8))
    for s in range(1, 6):
        write(Logged(step=s, epoch=s / 10, values={"loss": 1.0 / s, "learning_rate": 1e-3}))
    rec = Recorder()
    follower = nbtrain.display.attach("elsewhere", tmp_path, display=rec, poll=0.05)
    assert follower is not None and "step <b>5</b>/20" in rec.frames[-1]
    for s in range(6, 11):
        write(Logged(step=s, epoch=s / 10, values={"loss": 1.0 / s, "learning_rate": 1e-3}))
    write(Evaluated(step=10, epoch=1.0, metrics={"accuracy": 0.9, "loss": 0.2}))
    with open(log, "a") as fh:  # a torn line: the writer is mid-write
        fh.write('{"type": "log", "step": 11')
    deadline = time.monotonic() + 10
    while "step <b>10</b>/20" not in rec.last and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "step <b>10</b>/20" in rec.last and "0.9000" in rec.last
    with open(log, "a") as fh:
        fh.write(', "epoch": 1.1, "values": {"loss": 0.05}}\n')
    write(RunEnded(step=11, status="finished", metrics={"eval_accuracy": 0.9}))
    follower.join(10)
    assert not follower.following and "finished" in rec.last


def test_a_stale_unfinished_run_is_shown_as_left(tmp_path):
    import os

    from nbtrain.events import RunStarted

    run = tmp_path / "dead"
    run.mkdir()
    (run / "config.yaml").write_text("model: x\n")
    log = run / "events.jsonl"
    log.write_text(json.dumps(RunStarted(run="dead", total_steps=9).to_dict()) + "\n")
    old = time.time() - 3600
    os.utime(log, (old, old))
    rec = Recorder()
    assert nbtrain.display.attach("dead", tmp_path, display=rec) is None
    assert "not training" in rec.last
    from nbtrain.runs import run_status

    assert run_status(run).status == "unfinished"  # cut off, waiting to be resumed
    os.utime(log, None)  # written just now: another process is training it
    assert run_status(run).status == "running"


def test_a_foreground_run_waits_behind_a_background_one(fast_cfg):
    from nbtrain.display.live import HtmlRenderer

    ended = {}

    def mark(ev):
        if ev.type == "end":
            ended["bg"] = time.monotonic()

    bg = nbtrain.finetune(
        {**fast_cfg, "name": "bgfirst", "epochs": 3},
        display="none",
        on_event=mark,
        background=True,
    )
    rec = Recorder()
    started = {}

    def start(ev):
        if ev.type == "start":
            started["fg"] = time.monotonic()

    nbtrain.finetune(
        {**fast_cfg, "name": "fgsecond"},
        display=HtmlRenderer(display=rec, write_card=False),
        on_event=start,
    )
    assert bg.done and started["fg"] > ended["bg"]
    assert any("queued behind bgfirst" in f for f in rec.frames)


def _slow_steps(seconds=0.02):
    """An on_event that slows each step a little, so a tiny run is still training when looked at."""

    def on_event(ev):
        if ev.type == "step":
            time.sleep(seconds)

    return on_event


def _wait_until(cond, timeout=120):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_kernel_interrupt_does_not_stop_a_background_run(fast_cfg):
    """The kernel's interrupt (SIGINT) interrupts the executing cell, not the run on its worker
    thread: it trains on to the end."""
    import signal

    handle = nbtrain.finetune(
        {**fast_cfg, "name": "uninterrupted", "epochs": 4},
        display="none",
        on_event=_slow_steps(),
        background=True,
    )
    _wait_until(lambda: handle.state.step >= 2)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # what the executing cell gets
        signal.raise_signal(signal.SIGINT)
        time.sleep(5)
        pytest.fail(f"SIGINT went to {handler!r}, not the cell")
    from nbtrain.errors import RunInterrupted

    try:
        result = handle.wait(300)
    except RunInterrupted as e:  # a KeyboardInterrupt: fail this test, not the whole session
        pytest.fail(f"the kernel interrupt stopped the background run: {e}")
    assert handle.status == result.status == "finished" and handle.error is None
    assert handle.state.step == handle.state.total_steps > 2  # every step trained


def test_runs_lists_background_progress_and_the_queue(fast_cfg, runs_dir):
    """``%nbtrain runs``: a background run of this kernel with its progress, a queued one with
    what it waits for."""
    from nbtrain.runviews import runs_view

    first = nbtrain.finetune(
        {**fast_cfg, "name": "listed", "epochs": 30},
        display="none",
        on_event=_slow_steps(),
        background=True,
    )
    second = nbtrain.finetune({**fast_cfg, "name": "waiting"}, display="none", background=True)
    _wait_until(lambda: first.status == "running" and first.state.step >= 3)
    text = runs_view(runs_dir).text
    row = next(line for line in text.splitlines() if line.startswith("listed"))
    m = re.search(r"running (\d+)% \(background\)", row)
    assert m, row
    pct = int(m.group(1))
    assert 0 < pct < 100 and abs(pct - 100 * first.state.fraction) <= 10
    waiting = next(line for line in text.splitlines() if line.startswith("waiting"))
    assert "queued behind listed" in waiting
    second.stop()
    first.stop()
    assert first.wait(300).status == "stopped" and second.wait(60) is None


def test_the_widget_view_shows_progress_and_curves_and_its_stop_button_stops(fast_cfg, runs_dir):
    """The ipywidgets view of a background run: the live HTML (progress, curves) in a widget,
    Stop ends the run at a step boundary with a checkpoint, and the card replaces the widgets."""
    from nbtrain.display.frontend import Frontend
    from nbtrain.display.live import WidgetRenderer
    from nbtrain.runs import newest_complete

    shown = []

    class Display:
        def __call__(self, obj):
            shown.append(obj)
            return self

        def update(self, obj):
            shown.append(obj)

    view = WidgetRenderer(display=Display(), frontend=Frontend.JUPYTER, write_card=False)
    handle = nbtrain.finetune(
        {**fast_cfg, "name": "widgeted", "epochs": 30, "logging_steps": 1},
        display=view,
        on_event=_slow_steps(),
        background=True,
    )
    view.on_stop = handle.stop  # what _view(display, on_stop=handle.stop) wires for "auto"
    _wait_until(lambda: handle.state.step >= 4 and "polyline" in view.body.value)
    assert shown and shown[0] is view.box  # the widgets, displayed once
    body = view.body.value
    assert "widgeted" in body and re.search(r"step <b>\d+</b>/", body) and "<svg" in body
    view.stop_button.click()  # what a click in the frontend does
    assert view.stop_button.disabled and "stopping" in view.status.value
    result = handle.wait(300)
    assert handle.status == result.status == "stopped"
    ckpt = newest_complete(runs_dir / "widgeted")
    assert ckpt is not None and ckpt.step == handle.state.step < handle.state.total_steps
    final = shown[-1]
    assert final is not view.box and f"stopped at step {ckpt.step}" in final._repr_html_()


def _autocast_probe(seen: list):
    """A callback recording, at every forward of the first Linear, whether bf16 autocast is on."""
    import torch
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            def hook(module, inputs, output):
                seen.append(torch.is_autocast_enabled("cpu"))

            linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            linear.register_forward_hook(hook)

    return Probe()


@pytest.fixture
def wide_bf16(tmp_path, sentiment_csv):
    """A 128-wide BERT on a CPU taken to have bf16 instructions: it trains under bf16 autocast."""
    from nbtrain.engine.model import DeviceInfo, simulated_device
    from tests.conftest import build_tiny_bert

    cfg = {
        "model": str(build_tiny_bert(tmp_path / "wide", hidden_size=128)),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "batch_size": 16,
        "runs_dir": str(tmp_path / "runs"),
        "cpu_threads": 1,
    }
    with simulated_device(DeviceInfo("cpu", "CPU with AVX512-BF16", bf16=True, fp16=False)):
        yield cfg


def test_a_dry_run_beside_a_background_run_leaves_its_training_alone(wide_bf16):
    """A dry run times steps with its own TrainingArguments, and transformers resets
    accelerate's one-per-process state on each: the background run lost its bf16 autocast, or
    failed with "'AcceleratorState' object has no attribute 'parallelism_config'" (seen in CI
    with two parallel runs)."""
    seen: list[bool] = []
    handle = nbtrain.finetune(
        {**wide_bf16, "name": "beside", "epochs": 3, "callbacks": [_autocast_probe(seen)]},
        display="none",
        on_event=_slow_steps(0.05),
        background=True,
    )
    _wait_until(lambda: handle.state.step >= 2)
    report = nbtrain.inspect({**wide_bf16, "precision": "fp32"})  # its own set-up, mid-run
    assert report.time is not None, report.time_error
    assert not handle.done  # the dry run really ran beside the training
    result = handle.wait(300)
    assert result.status == "finished"
    assert seen and all(seen), f"autocast off in {seen.count(False)} of {len(seen)} forwards"


def test_a_parallel_run_in_another_precision_is_refused_not_mixed(wide_bf16):
    first = nbtrain.finetune(
        {**wide_bf16, "name": "bf16-first", "epochs": 3},
        display="none",
        on_event=_slow_steps(0.05),
        background=True,
    )
    _wait_until(lambda: first.state.step >= 1)
    second = nbtrain.finetune(
        {**wide_bf16, "name": "fp32-second", "precision": "fp32"},
        display="none",
        background=True,
        parallel=True,
    )
    with pytest.raises(nbtrain.ConfigError, match="bf16-first") as e:
        second.wait(300)
    assert "precision: bf16" in str(e.value) and "queue" in str(e.value)
    assert first.wait(300).status == "finished"
    # queued instead, it trains after the first in its own precision
    third = nbtrain.finetune(
        {**wide_bf16, "name": "fp32-second", "precision": "fp32", "epochs": 1},
        display="none",
        background=True,
    )
    assert third.wait(300).status == "finished"


def test_a_run_handler_left_installed_passes_ctrl_c_on():
    """A run's SIGINT handler that outlives its run (found installed after a run, a cause we
    could not pin down) must not swallow the next Ctrl-C: the cell gets its KeyboardInterrupt."""
    import signal

    from nbtrain.engine.stop import StopController

    stop = StopController()
    with stop.signals():
        handler = signal.getsignal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not handler  # restored on exit
    signal.signal(signal.SIGINT, handler)  # ...but say it is back
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the stale handler swallowed Ctrl-C")
        assert not stop.requested
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
