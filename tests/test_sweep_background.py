"""A sweep in the background: the run handle's mechanism (returns at once, one training slot,
stop with a checkpoint, attach), its view the trial panel, ``wait()`` the SweepResult. Tiny models
only (a trial is a second or two)."""

from __future__ import annotations

import threading
import time

import pytest

import nbtrain
from nbtrain.background import RUNS, RunHandle, SweepHandle
from nbtrain.errors import ConfigError
from tests.test_background import Recorder, _no_leftover_runs  # noqa: F401 (autouse fixture)
from tests.test_sweep import starts, sweep_cfg

optuna = pytest.importorskip("optuna")


def _table(res) -> list[tuple]:
    df = res.trials
    return [
        (r["run"], r["lr"], r["batch_size"], r["eval_accuracy"], r["state"])
        for _, r in df.iterrows()
    ]


def test_a_background_sweep_returns_at_once_and_equals_the_foreground_sweep(fast_cfg, runs_dir):
    from nbtrain.display.sweep import SweepPanel

    fg = nbtrain.finetune({**sweep_cfg(fast_cfg), "name": "swfg"}, display="none")
    rec = Recorder()
    t0 = time.perf_counter()
    handle = nbtrain.finetune(
        {**sweep_cfg(fast_cfg), "name": "swbg"}, display=SweepPanel(display=rec), background=True
    )
    returned_after = time.perf_counter() - t0
    assert isinstance(handle, SweepHandle) and isinstance(handle, RunHandle)
    assert returned_after < 2.0  # the study, data and trials are on the worker thread
    assert not handle.done and RUNS["swbg"] is handle
    res = handle.wait(timeout=600)
    assert isinstance(res, nbtrain.SweepResult) and handle.result is res
    assert handle.status == res.status == "finished" and handle.progress == 1.0
    # the same seed, the same trials: params, metric and state of each, and the best params
    assert _table(res) == _table(fg) and res.best_params == fg.best_params
    assert (runs_dir / "swbg" / "trial-2" / "card.html").is_file()  # trials write their cards
    # the handle's view is the trial panel: the nested live view while a trial trained
    assert any("current trial: trial-1" in f and "<progress" in f for f in rec.frames)
    assert "3/3 trials" in rec.last and "★ trial-" in rec.last
    html = handle._repr_html_()
    assert "sweep swbg" in html and "3/3 trials" in html
    assert repr(handle).startswith("SweepHandle('swbg', finished, 3/3 trials, best trial-")


def test_stop_ends_a_background_sweep_and_a_rerun_resumes_it(fast_cfg, runs_dir):
    from nbtrain.magics import _stop

    cfg = sweep_cfg(fast_cfg)
    current = {"trial": -1}

    def stop_in_trial_1(ev):
        if ev.type == "trial_start":
            current["trial"] = ev.number
        if ev.type == "step" and ev.step == 3 and current["trial"] == 1:
            _stop("sw")  # %nbtrain stop sw

    handle = nbtrain.finetune(cfg, display="none", on_event=stop_in_trial_1, background=True)
    res = handle.wait(600)
    assert handle.status == res.status == "stopped"
    folder = runs_dir / "sw"
    assert list(res.trials["run"]) == ["trial-0"]  # trial-1 is queued again
    assert (folder / "trial-1" / "checkpoint-3").is_dir()  # saved before the sweep stopped

    again = nbtrain.finetune(cfg, display="none", background=True)
    res = again.wait(600)
    assert again.status == "finished" and list(res.trials["run"]) == [
        "trial-0",
        "trial-1",
        "trial-2",
    ]
    assert starts(folder / "trial-1")[-1].resumed_from.endswith("checkpoint-3")  # resumed


def test_a_run_queues_behind_a_background_sweep(fast_cfg):
    times: dict[str, float] = {}

    def mark(ev):
        if ev.type == "sweep_end":
            times["sweep_end"] = time.monotonic()
        elif ev.type == "start" and ev.run == "after":
            times["run_start"] = time.monotonic()

    sweep = nbtrain.finetune(
        sweep_cfg(fast_cfg, trials=2), display="none", on_event=mark, background=True
    )
    run = nbtrain.finetune(
        {**fast_cfg, "name": "after"}, display="none", on_event=mark, background=True
    )
    assert run.status == "queued" and run.queued_behind == "sw"
    assert "queued behind sw" in repr(run)
    from nbtrain.runviews import runs_view

    listing = runs_view(fast_cfg["runs_dir"]).text
    assert "queued behind sw" in listing
    run.wait(600)
    assert sweep.done and sweep.status == "finished"
    assert times["run_start"] > times["sweep_end"]  # it waited for the whole sweep


def test_attach_shows_the_trial_panel_live_then_from_disk(fast_cfg, runs_dir):
    in_trial_1 = threading.Event()
    go_on = threading.Event()

    def hold(ev):
        if ev.type == "trial_start" and ev.number == 1:
            in_trial_1.set()
            go_on.wait(60)  # hold the sweep while the test attaches

    handle = nbtrain.finetune(sweep_cfg(fast_cfg), display="none", on_event=hold, background=True)
    assert in_trial_1.wait(300)
    rec = Recorder()
    assert nbtrain.attach("sw", runs_dir, display=rec) is handle  # %nbtrain attach sw
    first = rec.frames[0]
    assert "sweep sw" in first and "trial-0" in first and "1/3 trials" in first
    go_on.set()
    handle.wait(600)
    assert "3/3 trials" in rec.last  # the attached panel followed the sweep to its end
    # The sweep has ended: attach rebuilds the panel from sweep.jsonl.
    later = Recorder()
    nbtrain.attach("sw", runs_dir, display=later)
    assert len(later.frames) == 1 and "3/3 trials" in later.frames[0]


def test_a_changed_background_sweep_is_refused_before_it_starts(fast_cfg):
    cfg = sweep_cfg(fast_cfg, trials=1)
    nbtrain.finetune(cfg, display="none")
    cfg["sweep"]["params"]["batch_size"] = [4, 8]
    with pytest.raises(ConfigError, match=r"different config \(changed: sweep.params.batch_size"):
        nbtrain.finetune(cfg, display="none", background=True)
    assert "sw" not in RUNS


def test_finetune_magic_starts_a_sweep_in_the_background(fast_cfg, runs_dir):
    import contextlib
    import io

    import yaml
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbtrain")
    cfg = {**sweep_cfg(fast_cfg, trials=3), "display": "none", "max_steps": 40}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        shell.run_cell_magic("finetune", "swmagic --background", yaml.safe_dump(cfg))
    handle = shell.user_ns.pop("swmagic")
    assert isinstance(handle, SweepHandle) and "training in the background" in buf.getvalue()
    t0 = time.time()
    while handle.trial_state.step < 2 and time.time() - t0 < 300:
        time.sleep(0.05)
    listing = repr(shell.run_line_magic("nbtrain", f"runs --runs-dir {runs_dir}"))
    line = next(ln for ln in listing.splitlines() if ln.startswith("swmagic "))
    assert "sweep" in line and "running trial 1/3 (background)" in line
    stopped = shell.run_line_magic("nbtrain", "stop swmagic")
    assert "Stopping sweep 'swmagic'" in repr(stopped)
    res = handle.wait(300)
    assert res.status == "stopped" and len(res.trials) == 0  # trial-0 resumes next time
    assert any(
        p.name.startswith("checkpoint-") for p in (runs_dir / "swmagic" / "trial-0").iterdir()
    )


def test_a_sweep_queued_behind_a_run_says_so_and_a_stop_cancels_it(fast_cfg, runs_dir):
    first = nbtrain.finetune(
        {**fast_cfg, "name": "first", "epochs": 3}, display="none", background=True
    )
    rec = Recorder()
    from nbtrain.display.sweep import SweepPanel

    sweep = nbtrain.finetune(
        sweep_cfg(fast_cfg, trials=1), display=SweepPanel(display=rec), background=True
    )
    assert sweep.status == "queued" and sweep.queued_behind == "first"
    assert "queued behind first" in repr(sweep)
    assert "sweep sw" in rec.last and "queued behind first" in rec.last  # its panel says why
    assert "queued behind first" in sweep._repr_html_()
    sweep.stop()  # a queued sweep that is stopped never starts
    assert sweep.wait(60) is None and sweep.status == "stopped"
    first.wait(300)
    assert not (runs_dir / "sw").exists()
