"""The LR finder: the suggestion rules, the ramp on a tiny model (weights untouched, nothing on
disk), ``learning_rate: find`` (the suggestion trains and is written to config.yaml, kept on a
re-run). The magics are in test_magics_lr_find.py."""

from __future__ import annotations

import math

import pytest
import yaml

import nbtrain
from nbtrain.config import load_config
from nbtrain.engine.lr_find import smooth, suggest, trim
from nbtrain.errors import ConfigError
from nbtrain.events import read_events


def synthetic(n: int = 100) -> tuple[list[float], list[float]]:
    """A range-test curve: flat, a long descent between 1e-5 and 1e-3, a cliff after 1e-2."""
    lrs = [1e-7 * (1e7) ** (i / (n - 1)) for i in range(n)]
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        loss = 0.7 - 0.4 / (1 + math.exp(-3 * (x + 4)))  # falls fastest at 1e-4
        if x > -2:
            loss += 2 * (x + 2) ** 2  # diverges
        losses.append(loss)
    return lrs, losses


def test_rules_read_the_descent_off_the_curve():
    lrs, losses = synthetic()
    sm = smooth(losses, beta=0.0)  # no smoothing: the synthetic curve has no noise
    steep = suggest(lrs, sm, "steep")
    assert 5e-5 < steep < 2e-4  # the steepest point of the descent is 1e-4
    valley = suggest(lrs, sm, "valley")
    assert 1e-5 < valley < 1e-2  # inside the descent, before the cliff
    minimum = suggest(lrs, sm, "minimum")
    assert 1e-4 < minimum < 1e-2
    with pytest.raises(ValueError):
        suggest(lrs, sm, "median")
    with pytest.raises(ValueError):
        suggest(lrs[:3], sm[:3])


def test_rules_skip_the_smoothing_warm_up_and_the_last_points_as_fastai_does():
    # The debiased average of the first few batches is mostly the first batch: a high one fades
    # over the first steps and looks like a descent at learning rates too small to matter.
    n = 100
    lrs = [1e-7 * (1e7) ** (i / (n - 1)) for i in range(n)]

    def curve(warm_up: bool) -> list[float]:
        out = []
        for i in range(n):
            if i < 10:
                v = 1.0 - 0.03 * i if warm_up else 0.7
            elif i < 30:
                v = 0.7  # nothing moves yet
            elif i < 70:
                v = 0.7 - 0.01 * (i - 30)  # the descent: steps 30 to 69
            else:
                v = 0.3 + 0.05 * (i - 70)  # the cliff
            out.append(v)
        return out

    # fastai's valley on the descent alone: start 29, a third of 40 is 13, half of that 6.
    assert suggest(lrs, curve(warm_up=False)) == lrs[29 + 13 + 6]
    assert suggest(lrs, curve(warm_up=True)) == lrs[29 + 13 + 6]  # the warm-up moves nothing
    assert trim(100) == (10, 95) and trim(60, steps=100) == (10, 55)
    assert trim(12) == (1, 7) and trim(9) == (0, 9)  # too short to trim: read whole


def test_smoothing_is_debiased():
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])


def test_lr_find_leaves_model_and_disk_untouched(fast_cfg, runs_dir, tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = {**fast_cfg, "model": model, "tokenizer": str(tiny_bert)}
    res = nbtrain.lr_find(cfg, steps=30, start_lr=1e-6, end_lr=1.0)
    from nbtrain.lr_finder import LRFindResult

    assert isinstance(res, LRFindResult)
    assert 1e-6 <= res.suggestion <= 1.0
    assert 5 <= len(res.lrs) <= 30 and len(res.losses) == len(res.lrs)
    assert all(b > a for a, b in zip(res.lrs, res.lrs[1:]))  # an exponential ramp
    assert res.lrs[1] / res.lrs[0] == pytest.approx((1.0 / 1e-6) ** (1 / 29))
    assert set(res.candidates) == {"valley", "steep", "minimum"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the user's model keeps its starting weights
    assert not runs_dir.exists()  # no run folder left behind
    assert res.plot().data[:4] == b"\x89PNG"
    assert "suggested learning_rate" in res._repr_html_()
    assert repr(res).startswith("LRFindResult(suggestion=")


def test_lr_find_rejects_bad_arguments(fast_cfg):
    with pytest.raises(ConfigError, match="method"):
        nbtrain.lr_find(fast_cfg, method="median")
    with pytest.raises(ConfigError, match="start_lr"):
        nbtrain.lr_find(fast_cfg, start_lr=1.0, end_lr=1e-3)


def test_learning_rate_find_trains_with_the_suggestion(fast_cfg, runs_dir, monkeypatch):
    import nbtrain.engine.lr_find as engine_lr

    real = engine_lr.find_lr
    calls = []

    def short(cfg, **kw):
        calls.append(cfg.learning_rate)
        return real(cfg, **{**kw, "steps": 20})

    monkeypatch.setattr(engine_lr, "find_lr", short)
    cfg = {**fast_cfg, "lr": "find", "epochs": 1}
    assert load_config(cfg).learning_rate == "find"
    run = nbtrain.finetune(cfg, display="none")
    folder = runs_dir / "tiny"
    written = yaml.safe_load((folder / "config.yaml").read_text())["learning_rate"]
    assert isinstance(written, float) and written > 0  # the resolved config: a number
    found = yaml.safe_load((folder / "lr_find.json").read_text())
    assert written == pytest.approx(found["suggestion"])
    assert (folder / "lr_find.png").is_file()
    start = next(ev for ev in read_events(folder) if ev.type == "start")
    assert start.config["learning_rate"] == pytest.approx(written)
    notes = [ev.message for ev in read_events(folder) if ev.type == "notice"]
    assert any(m.startswith("learning_rate: find → ") for m in notes)
    assert run.status == "finished" and len(calls) == 1
    # Re-running the same cell shows the run again: no second search, the same learning rate.
    again = nbtrain.finetune(cfg, display="none")
    assert len(calls) == 1 and again.status == "finished"


def test_the_curve_marks_the_suggestion():
    from nbtrain.display.lr_plot import lr_figure
    from nbtrain.engine.lr_find import LRCurve

    lrs, losses = synthetic()
    sm = smooth(losses, beta=0.0)
    lr = suggest(lrs, sm, "valley")
    curve = LRCurve(lrs, losses, sm, lr, "valley", lrs[0], lrs[-1], len(lrs), 16)
    (ax,) = lr_figure(curve).axes
    assert ax.get_xscale() == "log"
    vertical = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [lr, lr]]
    assert len(vertical) == 1  # a line at the suggested learning rate
    (dot,) = ax.collections  # and a point on the smoothed curve there
    x, y = dot.get_offsets()[0]
    assert x == pytest.approx(lr) and y == pytest.approx(sm[lrs.index(lr)])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("suggestion ") and "(valley)" in t for t in labels), labels
