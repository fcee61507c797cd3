"""What the model does, on the live view and the card: example predictions (classification, the
most confident mistakes first) and generated samples (causal-lm, seq2seq), from the eval events."""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path

import numpy as np
import pytest

from nbtrain.events import Evaluated, RunStarted, read_events

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _task_with_eval(texts: list[str], labels: list[int], order: list[int] | None, **cfg):
    import datasets

    from nbtrain.config import load_config
    from nbtrain.engine.tasks import get_task
    from nbtrain.engine.tasks.base import Prepared

    c = load_config({"model": "m", "data": {"train": "t.csv"}, **cfg})
    task = get_task("text-classification", c)
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels}).cast_column(
        "label", datasets.ClassLabel(names=["neg", "pos"])
    )
    task.prepared = Prepared(train=ds, eval=ds, labels=["neg", "pos"], problem_type="single_label")
    task.eval_order = order
    return task


def test_mistakes_most_confident_first_then_the_least_sure_correct_rows() -> None:
    texts = [f"row {i}" for i in range(12)]
    labels = [i % 2 for i in range(12)]
    order = [11, 3, 0, 7, 5, 1, 2, 4, 6, 8, 9, 10]  # evaluated in this (length-sorted) order
    task = _task_with_eval(texts, labels, order)
    # p(pos) for each evaluated position
    p_pos = np.array([0.2, 0.9, 0.6, 0.35, 0.45, 0.99, 0.55, 0.1, 0.8, 0.3, 0.7, 0.52])
    logits = np.log(np.stack([1 - p_pos, p_pos], 1))
    y = np.array([labels[i] for i in order])
    rows = task._example_predictions(logits, y)
    assert len(rows) == 8  # bounded
    pred = (p_pos > 0.5).astype(int)
    conf = np.where(pred == 1, p_pos, 1 - p_pos)
    wrong = [i for i in range(12) if pred[i] != y[i]]
    right = [i for i in range(12) if pred[i] == y[i]]
    expect = sorted(wrong, key=lambda i: -conf[i]) + sorted(right, key=lambda i: conf[i])
    assert [r["text"] for r in rows] == [texts[order[i]] for i in expect[:8]]
    assert [r["correct"] for r in rows] == [False] * len(wrong) + [True] * (8 - len(wrong))
    assert rows[0]["confidence"] == pytest.approx(conf[expect[0]], abs=1e-4)
    for r, i in zip(rows, expect):
        assert r["label"] == ["neg", "pos"][y[i]] and r["predicted"] == ["neg", "pos"][pred[i]]

    # labels in another order than the dataset's: the texts would be wrong, so none are shown
    assert task._example_predictions(logits, y[::-1].copy()) == []
    off = _task_with_eval(texts, labels, order, eval_samples=0)
    assert off._example_predictions(logits, y) == []


def test_samples_table_is_generic_and_escapes() -> None:
    from nbtrain.display.html import samples_table

    rows = [{"a": "<b>x</b>", "n": 0.123456, "ok": False}, {"a": "y", "ok": True}] * 6
    html = samples_table(rows, [("a", "A"), ("n", "N")], title="T", mark="ok", limit=3)
    assert html.count("<tr style=") == 3
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "0.1235" in html and "✗" in html and "✓" in html and ">T<" in html
    assert samples_table([], [("a", "A")]) == ""


def test_generated_samples_are_shown_in_the_view_and_the_card() -> None:
    from nbtrain.display.card import card_html
    from nbtrain.display.live import HtmlRenderer

    samples = [
        {"prompt": "Translate: cat", "output": "chat <3", "reference": "chat"},
        {"prompt": "Translate: dog", "output": "chien", "reference": "chien"},
    ]
    view = HtmlRenderer(display=lambda v: None, write_card=False)
    view(RunStarted(run="s2s", total_steps=8))
    view(Evaluated(step=4, epoch=1.0, metrics={"loss": 0.5}, details={"samples": samples}))
    html = view.html()
    assert "Generated samples at step 4" in html
    assert "Translate: dog" in html and escape("chat <3") in html
    card = card_html(view.state, None)
    assert "Generated samples at step 4" in card and "chien" in card


def test_classification_run_records_bounded_predictions_shown_in_view_and_card(
    fast_cfg: dict, sentiment_csv: dict[str, Path]
) -> None:
    import nbtrain
    from nbtrain.display.live import HtmlRenderer

    run = nbtrain.finetune({**fast_cfg, "epochs": 3, "lr": 3e-3}, display="none")
    with open(sentiment_csv["dev"], newline="") as fh:
        truth = {r["text"]: r["label"] for r in csv.DictReader(fh)}
    events = list(read_events(run.output_dir))
    evals = [e for e in events if e.type == "eval"]
    assert evals
    for ev in evals:
        rows = ev.details["predictions"]
        assert 1 <= len(rows) <= 8
        for r in rows:  # each row is an eval row with its own true label
            assert truth[r["text"]] == r["label"]
            assert r["correct"] == (r["label"] == r["predicted"])
        wrong = [r for r in rows if not r["correct"]]
        assert rows[: len(wrong)] == wrong  # mistakes first ...
        conf = [r["confidence"] for r in wrong]
        assert conf == sorted(conf, reverse=True)  # ... the most confident first
    assert any(not r["correct"] for ev in evals for r in ev.details["predictions"])

    # The final model's predictions agree with the rows of its evaluation.
    end = next(e for e in events if e.type == "end")
    step = int(end.best_checkpoint.rsplit("-", 1)[1])
    kept = next(e for e in evals if e.step == step).details["predictions"]
    preds = run.predict([r["text"] for r in kept])
    for r, p in zip(kept, preds):
        assert p["label"] == r["predicted"]
        assert p["score"] == pytest.approx(r["confidence"], abs=2e-3)

    view = HtmlRenderer(display=lambda v: None, write_card=False)
    for ev in events:
        if ev.type != "end":
            view(ev)
    first = evals[-1].details["predictions"][0]
    html = view.html()
    assert "Example predictions at step" in html and escape(first["text"]) in html
    card = (run.output_dir / "card.html").read_text()  # written when the run ended
    assert f"Example predictions at step {step}" in card
    assert escape(kept[0]["text"]) in card


def test_causal_lm_samples_on_the_view_and_the_card(tmp_path: Path, runs_dir: Path) -> None:
    import nbtrain
    from nbtrain.display.live import HtmlRenderer
    from tests.tiny_models import build_tiny_gpt2, instruction_rows

    gpt2 = build_tiny_gpt2(tmp_path / "gpt2")
    rows = instruction_rows(16)
    frames: list = []
    view = HtmlRenderer(display=lambda v: frames.append(v) or _Handle(frames), write_card=False)
    run = nbtrain.finetune(
        {
            "model": str(gpt2),
            "data": {"train": rows, "eval": rows[:4]},
            "epochs": 1,
            "batch_size": 8,
            "runs_dir": str(runs_dir),
            "name": "sft",
            "max_new_tokens": 2,
            "eval_samples": 2,
        },
        display=view,
    )
    assert run.status == "finished"
    ev = next(e for e in read_events(run.output_dir) if e.type == "eval")
    samples = ev.details["samples"]
    live = next(f.html for f in frames if "Generated samples" in f.html)  # a live frame
    card = (run.output_dir / "card.html").read_text()
    for html in (live, card):
        assert "Generated samples at step" in html
        for s in samples:
            assert escape(s["prompt"]) in html and escape(s["reference"]) in html
    assert "Generated samples" in frames[-1].html  # the last frame is the card


class _Handle:
    def __init__(self, frames: list) -> None:
        self.frames = frames

    def update(self, v) -> None:
        self.frames.append(v)


def test_sentence_pairs_and_a_clean_sheet() -> None:
    from nbtrain.display.html import model_outputs
    from nbtrain.display.state import RunState

    state = RunState()
    state.update(RunStarted(run="nli", total_steps=8))
    row = {
        "text": "A man sleeps.",
        "text_pair": "Nobody sleeps.",
        "label": "no",
        "predicted": "no",
        "confidence": 0.91,
        "correct": True,
    }
    state.update(Evaluated(step=8, epoch=1.0, metrics={}, details={"predictions": [row]}))
    html = model_outputs(state, final=True)
    assert "A man sleeps.\n— Nobody sleeps." in html
    assert "Example predictions at step 8, no mistakes among them" in html and "✓" in html
