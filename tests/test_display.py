"""The live view, its throttling, frontend choice, the run card and attach.

A recording display stands in for IPython's (it records what the view would show); the view,
the state, the plots and the card are the real ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbtrain.display import attach, make_renderer, resolve_mode, set_default, write_card
from nbtrain.display.card import CardWriter
from nbtrain.display.frontend import ENV_VAR, Frontend, detect_frontend
from nbtrain.display.live import HtmlRenderer
from nbtrain.display.text import TextRenderer
from nbtrain.errors import ConfigError
from nbtrain.events import (
    ErrorEvent,
    Evaluated,
    EventLog,
    Logged,
    RunEnded,
    RunStarted,
    Stage,
    StepEnd,
)

T0 = 1_000_000.0


class Recorder:
    """``display(obj) -> handle``: records the first display and every in-place update."""

    def __init__(self) -> None:
        self.displays: list = []
        self.updates: list = []

    def __call__(self, obj):
        self.displays.append(obj)
        return self

    def update(self, obj) -> None:
        self.updates.append(obj)

    @property
    def last(self) -> str:
        return (self.updates or self.displays)[-1].html

    @property
    def count(self) -> int:
        return len(self.displays) + len(self.updates)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def start_event(**kw) -> RunStarted:
    base = dict(
        step=0,
        time=T0,
        run="demo",
        run_dir="",
        task="text-classification",
        model="tiny-bert",
        device="CPU",
        total_steps=100,
        num_epochs=2.0,
        train_samples=800,
        eval_samples=64,
        batch_size=16,
        labels=["neg", "pos"],
        config={"metric_for_best_model": None},
    )
    base.update(kw)
    return RunStarted(**base)


def renderer(rec: Recorder, clock: FakeClock | None = None, **kw) -> HtmlRenderer:
    return HtmlRenderer(
        display=rec, clock=clock or FakeClock(), frontend=Frontend.JUPYTER, write_card=False, **kw
    )


# -- the state follows the events ---------------------------------------------------------------


def test_view_state_follows_events() -> None:
    rec, clock = Recorder(), FakeClock()
    view = renderer(rec, clock)
    view(Stage(name="load_data", status="start", detail="train.csv", time=T0 - 5))
    assert "Reading data" in rec.last and "train.csv" in rec.last
    view(Stage(name="tokenize", status="start", total=864, time=T0 - 4))
    view(Stage(name="tokenize", status="progress", done=400, total=864, time=T0 - 3))
    clock.now += 1
    view(Stage(name="tokenize", status="progress", done=400, total=864, time=T0 - 3))
    assert "400/864" in rec.last  # preparation has its own progress, never a silent cell
    view(start_event())
    assert view.state.eta is None and "ETA –" in rec.last  # no step timed yet

    # 10 steps in 5 s: 2 steps/s, 32 samples/s, 90 steps left -> 45 s.
    for i in range(1, 11):
        clock.now += 1
        view(StepEnd(step=i, epoch=i / 50, total_steps=100, time=T0 + i * 0.5))
    assert view.state.eta == pytest.approx(45.0)
    assert view.state.samples_per_second == pytest.approx(32.0)
    assert "ETA 00:45" in rec.last and "step <b>10</b>/100" in rec.last
    assert "32.0 samples/s" in rec.last

    view(Logged(step=10, epoch=0.2, values={"loss": 0.69, "learning_rate": 1e-4}, time=T0 + 5))
    for step, acc in ((20, 0.60), (40, 0.80), (60, 0.70)):
        view(
            Evaluated(
                step=step,
                epoch=step / 50,
                metrics={"loss": 1 - acc, "accuracy": acc},
                time=T0 + step / 2,
            )
        )
    assert [r.step for r in view.state.evals] == [20, 40, 60]
    assert view.state.best_index == 1
    rows = re.findall(r"<tr style='([^']*)'><td[^>]*>(★ )?([\d,]+)</td>", rec.last)
    assert [(bool(star), step) for _, star, step in rows] == [
        (False, "20"),
        (True, "40"),
        (False, "60"),
    ]
    assert "accuracy ★" in rec.last  # the column that picks the best row
    # Evaluations always redraw, curves included: the eval point shows at once.
    assert rec.last.count("<svg") == 3 and "best 0.8" in rec.last


def test_best_row_follows_the_engine_choice() -> None:
    rec = Recorder()
    view = renderer(rec)
    view(start_event(config={"metric_for_best_model": "eval_loss"}))
    for step, loss in ((10, 0.5), (20, 0.4), (30, 0.45)):
        view(Evaluated(step=step, metrics={"loss": loss, "accuracy": 0.5}, time=T0 + step))
    assert view.state.best_metric == ("loss", False)
    assert view.state.best_index == 1
    # At the end, the checkpoint the Trainer kept is the authority.
    view(RunEnded(step=30, status="finished", best_checkpoint="/r/checkpoint-30", time=T0 + 40))
    assert view.state.best_index == 2


def test_one_handle_updated_in_place() -> None:
    rec, clock = Recorder(), FakeClock()
    view = renderer(rec, clock)
    view(start_event())
    for i in range(1, 50):
        clock.now += 1
        view(StepEnd(step=i, total_steps=100, time=T0 + i))
    view(RunEnded(step=49, status="stopped", duration_s=49, time=T0 + 50))
    assert len(rec.displays) == 1 and len(rec.updates) >= 49
    assert "stopped at step 49" in rec.last and "No checkpoint was written" in rec.last


def test_a_run_refused_before_training_says_so_in_its_text_form_too() -> None:
    """The text/plain beside the HTML (what a terminal, a log or a diff of the notebook shows)
    said "nbtrain: preparing" for ever after a data error."""
    rec = Recorder()
    view = renderer(rec)
    view(ErrorEvent(kind="data", message="the train data has no column 'text'", advice=""))
    view(RunEnded(status="failed"))
    text = repr((rec.updates or rec.displays)[-1])
    assert "preparing" not in text
    assert "failed before training: the train data has no column 'text'" in text


# -- throttling ----------------------------------------------------------------------------------


def test_throttling_bounds_updates_for_10000_fast_steps() -> None:
    rec, clock = Recorder(), FakeClock()
    view = renderer(rec, clock)  # default: at most one redraw every 0.5 s
    view(start_event(total_steps=10_000))
    for i in range(1, 10_001):
        clock.now += 0.001  # 1 ms a step: 10 s of training
        view(StepEnd(step=i, total_steps=10_000, time=T0 + i / 1000))
        if i % 100 == 0:
            view(Logged(step=i, values={"loss": 1 / i, "learning_rate": 1e-4}, time=T0 + i / 1000))
    view(RunEnded(step=10_000, status="finished", duration_s=10, time=T0 + 10))
    # 10 s at <= 2 redraws/s, plus the start and the end: ~22, never 10,000.
    assert 10 <= rec.count <= 10 / 0.5 + 3
    assert "finished" in rec.last and "data:image/png;base64," in rec.last  # the end: the card


def test_vscode_redraws_less_often() -> None:
    counts = {}
    for fe in (Frontend.JUPYTER, Frontend.VSCODE):
        rec, clock = Recorder(), FakeClock()
        view = HtmlRenderer(display=rec, clock=clock, frontend=fe, write_card=False)
        view(start_event())
        for i in range(1, 1001):
            clock.now += 0.01
            view(StepEnd(step=i, total_steps=1000, time=T0 + i / 100))
        counts[fe] = rec.count
    assert counts[Frontend.VSCODE] < counts[Frontend.JUPYTER]


# -- frontend and mode ---------------------------------------------------------------------------


def test_mode_from_frontend_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    for fe in (Frontend.JUPYTER, Frontend.VSCODE, Frontend.COLAB):
        assert resolve_mode("auto", fe) == "html"
        assert isinstance(make_renderer("auto", frontend=fe), HtmlRenderer)
    for fe in (Frontend.IPYTHON_TERMINAL, Frontend.NO_IPYTHON):
        assert resolve_mode("auto", fe) == "text"
        assert isinstance(make_renderer("auto", frontend=fe), TextRenderer)
    assert make_renderer("none") is None

    monkeypatch.setenv(ENV_VAR, "text")
    assert resolve_mode("auto", Frontend.JUPYTER) == "text"
    set_default("html")
    try:
        assert resolve_mode("auto", Frontend.IPYTHON_TERMINAL) == "html"
        assert resolve_mode("none", Frontend.JUPYTER) == "none"  # an explicit mode wins
    finally:
        set_default(None)

    widgets = make_renderer("widgets", frontend=Frontend.JUPYTER)
    assert isinstance(widgets, HtmlRenderer) and "showing the HTML view instead" in widgets.note
    assert "not running in a notebook kernel" in widgets.note  # says why

    with pytest.raises(ConfigError, match="Did you mean 'html'"):
        set_default("htm")
    monkeypatch.setenv(ENV_VAR, "txt")
    with pytest.raises(ConfigError, match=ENV_VAR):
        resolve_mode("auto", Frontend.JUPYTER)


def test_widget_view_has_a_stop_button_only_where_a_click_can_stop_the_run(monkeypatch) -> None:
    """A foreground run keeps the kernel busy: a click would reach nobody until the cell ends,
    so its widget view has no Stop button and says how to stop; a background run's view has one."""
    import nbtrain.display.frontend as fe
    from nbtrain.api import _view
    from nbtrain.display.live import WidgetRenderer

    monkeypatch.setattr(fe, "widgets_available", lambda: (True, ""))
    monkeypatch.setattr(fe, "detect_frontend", lambda: Frontend.JUPYTER)
    foreground = _view("widgets")  # what finetune(display="widgets") shows
    assert isinstance(foreground, WidgetRenderer)
    assert foreground.stop_button.layout.display == "none"
    assert "interrupt the kernel" in foreground.status.value
    stops: list[str] = []
    background = _view("widgets", on_stop=lambda: stops.append("bg"))
    assert background.stop_button.layout.display != "none"
    assert "interrupt the kernel" not in background.status.value
    background.stop_button.click()
    assert stops == ["bg"] and "stopping" in background.status.value
    foreground.on_stop = lambda: stops.append("later")  # wired after it was made: it shows
    assert foreground.stop_button.layout.display != "none" and foreground.status.value == ""
    foreground.stop_button.click()
    assert stops == ["bg", "later"]


def test_detects_no_ipython_in_a_script() -> None:
    assert detect_frontend() is Frontend.NO_IPYTHON  # pytest runs no IPython shell
    code = (
        "import sys, nbtrain, nbtrain.display as d; print(d.detect_frontend().value); "
        "print(sorted(m for m in ('matplotlib', 'IPython', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["none", "[]"]


def test_detects_ipython_terminal() -> None:
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    TerminalInteractiveShell.instance()
    try:
        assert detect_frontend() is Frontend.IPYTHON_TERMINAL
    finally:
        TerminalInteractiveShell.clear_instance()


# -- cards ---------------------------------------------------------------------------------------


@pytest.mark.slow  # a real (tiny) training run: ~40 s on a busy 2-core machine
def test_card_of_a_real_run(fast_cfg: dict, runs_dir: Path) -> None:
    import nbtrain

    result = nbtrain.finetune(fast_cfg, display="none")
    card, png = runs_dir / "tiny" / "card.html", runs_dir / "tiny" / "card.png"
    assert card.is_file() and png.is_file()  # written by the engine's CardWriter, no notebook
    html = card.read_text()
    for key in ("eval_accuracy", "eval_loss", "train_loss"):
        value = result.metrics[key]
        assert key in html and f"{value:.4f}" in html
    assert "data:image/png;base64," in html and "finished" in html
    assert "Per class" in html and ">neg<" in html and ">pos<" in html
    _assert_png_not_blank(png)

    # Regenerated from events.jsonl alone (the CLI and a reopened notebook do this).
    card.unlink()
    png.unlink()
    assert write_card(runs_dir / "tiny") == card
    assert f"{result.metrics['eval_accuracy']:.4f}" in card.read_text()
    _assert_png_not_blank(png)

    # Attach to an ended run: the static card, from the events.
    rec = Recorder()
    attach("tiny", runs_dir, display=rec)
    assert len(rec.displays) == 1 and "finished" in rec.last and "<img" in rec.last
    assert f"{result.metrics['eval_accuracy']:.4f}" in rec.last


def _assert_png_not_blank(path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert float(np.std(pixels[..., :3])) > 0.05  # lines and text, not an empty canvas


def _write_events(run_dir: Path, events: list) -> None:
    log = EventLog(run_dir / "events.jsonl")
    for ev in events:
        log(ev)


def test_failed_card_says_what_failed_and_what_to_do(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "broken"
    _write_events(
        run_dir,
        [
            start_event(run="broken", run_dir=str(run_dir)),
            Logged(step=10, values={"loss": 0.7, "learning_rate": 1e-3}, time=T0 + 1),
            Logged(step=20, values={"loss": float("nan"), "learning_rate": 1e-3}, time=T0 + 2),
            ErrorEvent(
                step=20,
                kind="nan",
                message="The training loss became NaN/inf at step 20.",
                advice="Lower learning_rate (e.g. by 10x).",
                time=T0 + 2,
            ),
            RunEnded(
                step=20,
                status="failed",
                resume_checkpoint=str(run_dir / "checkpoint-10"),
                duration_s=2,
                time=T0 + 3,
            ),
        ],
    )
    html = write_card(run_dir).read_text()
    assert "failed" in html and "NaN/inf at step 20" in html and "Lower learning_rate" in html
    assert "checkpoint-10" in html and "resume" in html
    assert (run_dir / "card.png").is_file()


def test_card_writer_never_breaks_a_run(tmp_path: Path) -> None:
    writer = CardWriter()
    writer(start_event(run_dir=str(tmp_path / "gone")))  # no events.jsonl there
    writer(RunEnded(status="finished"))
    assert writer.error and "events.jsonl" in writer.error
    with pytest.raises(ConfigError, match="not an nbtrain run"):
        write_card(tmp_path)


def test_renderer_writes_the_card_at_the_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    events = [
        start_event(run="r", run_dir=str(run_dir)),
        Logged(step=50, values={"loss": 0.5, "learning_rate": 1e-4}, time=T0 + 5),
        Evaluated(
            step=100,
            epoch=2.0,
            metrics={"loss": 0.4, "accuracy": 0.875},
            details={
                "labels": ["neg", "pos"],
                "confusion_matrix": [[30, 2], [6, 26]],
                "per_class": {
                    "neg": {"precision": 0.83, "recall": 0.94, "f1": 0.88, "support": 32}
                },
            },
            time=T0 + 10,
        ),
        RunEnded(
            step=100,
            status="finished",
            duration_s=10,
            metrics={"eval_accuracy": 0.875, "train_loss": 0.5},
            time=T0 + 11,
        ),
    ]
    _write_events(run_dir, events)
    rec = Recorder()
    view = HtmlRenderer(display=rec, clock=FakeClock(), frontend=Frontend.JUPYTER)
    for ev in events:
        view(ev)
    assert view.card_path == run_dir / "card.html"
    assert rec.last in view.card_path.read_text()  # the view became the card on disk
    assert "0.8750" in rec.last and "Per class" in rec.last
    from nbtrain.display.card import card_is_current

    assert card_is_current(run_dir)  # the engine's CardWriter then skips the work


# -- attach --------------------------------------------------------------------------------------


def test_attach_to_a_run_that_is_not_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "half"
    _write_events(
        run_dir,
        [
            start_event(run="half", run_dir=str(run_dir)),
            Logged(step=30, values={"loss": 0.6}, time=T0 + 3),
        ],
    )
    (run_dir / "config.yaml").write_text("model: x\n")
    old = time.time() - 3600  # nobody has written to it for an hour
    os.utime(run_dir / "events.jsonl", (old, old))
    rec = Recorder()
    attach("half", tmp_path, display=rec)
    assert "not training" in rec.last and "step <b>30</b>/100" in rec.last
    with pytest.raises(ConfigError, match="Did you mean 'half'"):
        attach("hal", tmp_path)


def test_events_roundtrip_gives_the_same_state(tmp_path: Path) -> None:
    from nbtrain.display.state import state_from_events
    from nbtrain.events import read_events

    events = [
        start_event(),
        Logged(step=5, values={"loss": 0.9}, time=T0 + 2),
        Evaluated(step=10, metrics={"accuracy": 0.5}, time=T0 + 4),
    ]
    _write_events(tmp_path, events)
    live, replayed = state_from_events(events), state_from_events(read_events(tmp_path))
    assert json.dumps(live.final_metrics) == json.dumps(replayed.final_metrics)
    assert (live.step, live.eta, live.best_index) == (replayed.step, replayed.eta, 0)


def test_html_outside_ipython_falls_back_to_text_with_one_note(
    capsys: pytest.CaptureFixture,
) -> None:
    view = make_renderer("html", frontend=Frontend.NO_IPYTHON)
    assert isinstance(view, TextRenderer)
    err = capsys.readouterr().err
    assert err.count("needs IPython or Jupyter; showing text instead") == 1


def test_attach_in_a_script_prints_the_text_view(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "done"
    _write_events(
        run_dir,
        [
            start_event(run="done", run_dir=str(run_dir)),
            RunEnded(
                step=100,
                status="finished",
                duration_s=65,
                time=T0 + 65,
                metrics={"eval_accuracy": 0.91},
            ),
        ],
    )
    attach("done", tmp_path)  # pytest runs no IPython shell: text, on stdout
    out = capsys.readouterr().out
    assert "Training done" in out and "Finished in 01:05. eval_accuracy=0.9100" in out


def test_a_resumed_run_shows_each_step_once() -> None:
    from nbtrain.display.state import state_from_events

    first = [
        start_event(),
        Logged(step=10, values={"loss": 0.9}, time=T0 + 1),
        Evaluated(step=20, metrics={"accuracy": 0.6}, time=T0 + 2),
        Logged(step=30, values={"loss": 0.7}, time=T0 + 3),
        RunEnded(step=30, status="interrupted", resume_checkpoint="/r/checkpoint-20", time=T0 + 4),
    ]
    second = [
        start_event(step=20, resumed_from="/r/checkpoint-20", time=T0 + 100),
        Logged(step=30, values={"loss": 0.6}, time=T0 + 103),
    ]
    state = state_from_events(first + second)
    assert state.train_loss == [(10, 0.9), (30, 0.6)]
    assert [r.step for r in state.evals] == [20] and state.status == "training"


def test_card_details_come_from_the_kept_best_evaluation():
    from nbtrain.display.state import RunState
    from nbtrain.events import Evaluated, RunEnded

    state = RunState()
    good = {"labels": ["a", "b"], "confusion_matrix": [[5, 0], [0, 5]], "per_class": {}}
    worse = {"labels": ["a", "b"], "confusion_matrix": [[5, 0], [5, 0]], "per_class": {}}
    state.update(Evaluated(step=6, metrics={"accuracy": 1.0}, details=good))
    state.update(Evaluated(step=12, metrics={"accuracy": 0.5}, details=worse))
    assert state.final_details == worse  # still training: the latest
    state.update(RunEnded(step=12, best_checkpoint="runs/x/checkpoint-6"))
    assert state.final_details == good  # the final model is the best checkpoint's


def test_live_view_lists_the_first_best_and_latest_evaluations_only():
    from nbtrain.display import html as H
    from nbtrain.display.state import RunState
    from nbtrain.events import Evaluated, RunStarted

    state = RunState()
    state.update(RunStarted(run="r", task="text-classification", total_steps=200))
    for k in range(1, 21):
        acc = 0.9 if k == 5 else 0.5 + k / 100  # the best is the 5th, early in the run
        state.update(Evaluated(step=10 * k, epoch=k / 2, metrics={"loss": 1 / k, "accuracy": acc}))
    live = H.eval_table(state, limit=H.LIVE_EVAL_ROWS)
    steps = [
        int(s.replace(",", ""))
        for s in re.findall(r"<td style='[^']*'>(?:★ )?([\d,]+)</td><td", live)
    ]
    assert steps == [10, 50, 150, 160, 170, 180, 190, 200]  # first, best, the last six
    assert "… 3 more evaluations" in live and "… 9 more evaluations" in live
    full = H.eval_table(state)
    assert len(re.findall("<tr", full)) == 21 and "more evaluation" not in full


def test_curves_keep_up_with_training_and_an_evaluation_shows_at_once() -> None:
    """At 60 % of a short run the curves hold (nearly) 60 % of its points, not a frame that is
    seconds old; an evaluation draws its point in the same call, with no time having passed."""
    rec, clock = Recorder(), FakeClock()
    view = renderer(rec, clock)  # the default cadence
    view(start_event(total_steps=100))
    for i in range(1, 61):  # 0.1 s a step, a log every step: 6 s of training
        clock.now += 0.1
        view(StepEnd(step=i, total_steps=100, time=T0 + i / 10))
        view(Logged(step=i, values={"loss": 1 / i, "learning_rate": 1e-4}, time=T0 + i / 10))

    def raw_loss_points(html: str) -> int:  # the faint raw train-loss line of the Loss chart
        line = re.search(r"<polyline points='([^']*)'[^>]*stroke-opacity='0.3'", html)
        return len(line.group(1).split()) if line else 0

    # The last frame lags by at most the 0.5 s cadence (5 steps here), never by 5 s (50 steps).
    assert raw_loss_points(rec.last) >= 60 - 5 - 1
    assert "step <b>6" in rec.last  # step 55-60 on the progress line

    frames = rec.count
    orange_dots = rec.last.count("fill='#D55E00'")  # eval points on the Loss chart
    view(Evaluated(step=60, metrics={"loss": 0.4, "accuracy": 0.8}, time=T0 + 6))  # no time passes
    assert rec.count == frames + 1  # drawn at once
    assert rec.last.count("fill='#D55E00'") == orange_dots + 1  # the eval loss point
    assert "0.8000" in rec.last and "best 0.8" in rec.last  # its row and its starred point
