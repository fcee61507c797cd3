"""Early stopping you can see: the reason on the live view, the card, the text view and in
``RunResult.stopped_early``, from one ``notice`` event (so replayed views show it too)."""

from __future__ import annotations

import io

import nbtrain
from nbtrain.display.live import HtmlRenderer
from nbtrain.display.text import TextRenderer
from nbtrain.events import read_events

LINE = "stopped early at epoch 2: no improvement of eval_accuracy in 1 evaluation"


def test_early_stop_is_visible_everywhere(fast_cfg, runs_dir):
    frames = []

    class Handle:
        def update(self, view):
            frames.append(view.html)

    def display(view):
        frames.append(view.html)
        return Handle()

    live = HtmlRenderer(display=display, clock=lambda: 0.0)
    stream = io.StringIO()
    text = TextRenderer(stream=stream, tty=False)
    # A learning rate too small to change anything: the second evaluation does not improve.
    cfg = {**fast_cfg, "epochs": 6, "lr": 1e-12, "early_stopping_patience": 1}
    run = nbtrain.finetune(cfg, display=live, on_event=text)
    assert run.status == "finished"
    assert run.stopped_early == LINE
    assert LINE in repr(run)
    notice = next(
        ev for ev in read_events(run.output_dir) if ev.type == "notice" and ev.kind == "early_stop"
    )
    assert notice.data["metric"] == "eval_accuracy" and notice.data["patience"] == 1
    ends = [ev for ev in read_events(run.output_dir) if ev.type == "end"]
    assert ends[-1].step < 6 * 6  # 96 rows / 16 = 6 steps an epoch: it stopped after epoch 2
    assert (
        "Stopped early at epoch 2: no improvement of eval_accuracy in 1 evaluation." in frames[-1]
    )
    card = (run.output_dir / "card.html").read_text()
    assert "Stopped early at epoch 2" in card
    assert f"Early stopping: {LINE}" in stream.getvalue()


def test_a_run_that_runs_to_its_end_did_not_stop_early(fast_cfg):
    run = nbtrain.finetune({**fast_cfg, "epochs": 1, "early_stopping_patience": 3}, display="none")
    assert run.stopped_early is None
