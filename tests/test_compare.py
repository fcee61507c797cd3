"""Comparing runs: two tiny finished runs and one still training, in every form, and the magic."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from nbtrain.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def runs(tiny_bert: Path, sentiment_csv: dict[str, Path], tmp_path_factory) -> Path:
    """Two finished tiny-BERT runs that differ in learning rate and seed, and a copy of the
    second cut after step 8 with no end event: a run that is still training."""
    import nbtrain

    root = tmp_path_factory.mktemp("cmp") / "runs"
    base = {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 2,
        "batch_size": 16,
        "runs_dir": str(root),
        "save_total_limit": None,
        "logging_steps": 1,
    }
    nbtrain.finetune({**base, "name": "slow-lr", "lr": 1e-4}, display="none")
    nbtrain.finetune({**base, "name": "fast-lr", "lr": 5e-3, "seed": 7}, display="none")
    live = root / "live"
    live.mkdir()
    shutil.copy(root / "fast-lr" / "config.yaml", live / "config.yaml")
    lines = []
    for line in (root / "fast-lr" / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["type"] == "end" or (ev["type"] in ("log", "eval", "checkpoint") and ev["step"] > 8):
            continue
        if ev["type"] == "start":
            ev["run"], ev["run_dir"] = "live", str(live)
            ev["config"] = {**ev["config"], "name": "live"}
        lines.append(json.dumps(ev))
    (live / "events.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _events(run_dir: Path, kind: str) -> list[dict]:
    out = []
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["type"] == kind:
            out.append(ev)
    return out


def _kept_eval(run_dir: Path) -> dict:
    """The evaluation of the checkpoint the run kept (its end event names it)."""
    end = _events(run_dir, "end")[-1]
    step = int(end["best_checkpoint"].rsplit("-", 1)[1])
    return next(e for e in _events(run_dir, "eval") if e["step"] == step)["metrics"]


def test_curves_of_every_run_are_overlaid_against_each_axis(runs: Path) -> None:
    import nbtrain
    from nbtrain.display.compare import charts, run_color

    cmp = nbtrain.compare(["slow-lr", "fast-lr", "live"], runs_dir=runs)
    assert [r.name for r in cmp.runs] == ["slow-lr", "fast-lr", "live"]
    assert cmp.metric == ("accuracy", True)
    assert [c.title for c in charts(cmp)] == ["Train loss", "Eval loss", "Eval accuracy"]

    losses = [(e["step"], e["values"]["loss"]) for e in _events(runs / "fast-lr", "log")]
    assert cmp.runs[1].train_loss("step") == [(float(s), v) for s, v in losses]
    # samples seen = step x the start event's batch size; epochs from the events themselves
    assert _events(runs / "fast-lr", "start")[0]["batch_size"] == 16
    assert cmp.runs[1].train_loss("samples") == [(s * 16.0, v) for s, v in losses]
    evals = _events(runs / "fast-lr", "eval")
    assert cmp.runs[1].eval_curve("accuracy", "epoch") == [
        (e["epoch"], e["metrics"]["accuracy"]) for e in evals
    ]
    # the running run: what its log holds now, drawn on the same axes as the finished ones
    assert max(x for x, _ in cmp.runs[2].train_loss("step")) == 8.0

    html = cmp._repr_html_()
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:  # every chart has a line or points in each run's colour
        for i in range(3):
            assert f"stroke='{run_color(i)}'" in svg or f"fill='{run_color(i)}'" in svg
    assert "curves against optimizer step" in html
    by_epoch = nbtrain.compare(["slow-lr", "fast-lr"], runs_dir=runs, x="epoch")
    assert "curves against epoch" in by_epoch._repr_html_()
    assert "samples seen" in nbtrain.compare(["slow-lr", "live"], runs_dir=runs, x="samples").html()


def test_table_marks_the_best_run_per_metric(runs: Path) -> None:
    import nbtrain

    cmp = nbtrain.compare(["slow-lr", "fast-lr"], runs_dir=runs)
    kept = [_kept_eval(runs / n) for n in ("slow-lr", "fast-lr")]
    html = cmp._repr_html_()
    table = html[html.index(">Metrics<") : html.index("Config differences")]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    assert len(rows) == len(cmp.runs)
    marked = [
        [
            text
            for style, text in re.findall(r"<td style='([^']*)'>(.*?)</td>", row, flags=re.S)
            if "rgba(17,119,51" in style
        ]
        for row in rows
    ]
    single = 0
    for metric, pick in (("loss", min), ("accuracy", max), ("f1", max)):  # loss: lower is better
        values = [k[metric] for k in kept]
        winners = [i for i, v in enumerate(values) if v == pick(values)]
        expect = [] if len(winners) == len(values) else winners  # all equal: nobody is best
        assert cmp.best_runs(metric) == expect, metric
        single += len(expect) == 1
        for i in range(2):
            shown = any(f"{values[i]:.4f}" in t for t in marked[i])
            assert shown == (i in expect), metric
        if metric == "accuracy":  # the main metric gets the star
            for i in range(2):
                assert ("★ " in rows[i]) == (i in expect)
                line = next(ln for ln in repr(cmp).splitlines() if ln.startswith(cmp.runs[i].name))
                assert (f"★ {values[i]:.4f}" in line) == (i in expect)
    assert single, "the two runs should differ on at least one metric"


def test_config_diff_shows_only_the_keys_that_differ(runs: Path) -> None:
    import nbtrain

    cmp = nbtrain.compare(["slow-lr", "fast-lr"], runs_dir=runs)
    assert cmp.config_diff() == [("learning_rate", [1e-4, 5e-3]), ("seed", [42, 7])]
    html = cmp._repr_html_()
    diff = html[html.index("Config differences") :]
    assert "<code>learning_rate</code>" in diff and "<code>seed</code>" in diff
    for same in ("per_device_train_batch_size", "num_train_epochs", "model", "data.train", "name"):
        assert f"<code>{same}</code>" not in diff
    text = repr(cmp)
    assert "Config differences:" in text
    diff_text = text[text.index("Config differences:") :]
    assert "learning_rate" in diff_text and "seed" in diff_text
    assert "num_train_epochs" not in diff_text

    same = nbtrain.compare(["fast-lr", "live"], runs_dir=runs)  # same config, other name
    assert same.config_diff() == []
    assert "The configs are the same" in same.html()


def test_a_running_run_shows_what_its_log_holds(runs: Path) -> None:
    import nbtrain

    live = runs / "live"
    os.utime(live / "events.jsonl")  # written just now: training
    cmp = nbtrain.compare(["fast-lr", "live"], runs_dir=runs)
    run = cmp.runs[1]
    assert run.status == "training"
    assert run.state.step == 8 and run.state.total_steps == 12
    assert "training" in cmp.html() and "8/12" in repr(cmp)
    old = time.time() - 3600  # no end and nothing written for an hour: not training now
    os.utime(live / "events.jsonl", (old, old))
    assert nbtrain.compare(["fast-lr", "live"], runs_dir=runs).runs[1].status == "unfinished"


def test_a_queued_background_run_of_this_kernel(runs: Path, monkeypatch) -> None:
    import nbtrain
    from nbtrain.background import RUNS, RunHandle
    from nbtrain.config import load_config

    cfg = load_config({"model": "m", "data": {"train": "t.csv"}, "name": "waiting", "lr": 0.1})
    handle = RunHandle(cfg, target=lambda *a, **k: None)  # never started: queued
    monkeypatch.setitem(RUNS, "waiting", handle)
    cmp = nbtrain.compare(["fast-lr", "waiting"], runs_dir=runs)
    assert cmp.runs[1].status == "queued" and cmp.runs[1].state.evals == []
    assert ("learning_rate", [5e-3, 0.1]) in cmp.config_diff()
    assert "queued" in cmp.html()
    # RunResult objects work too
    a = nbtrain.load_run("slow-lr", runs_dir=runs)
    assert [r.name for r in nbtrain.compare([a, "fast-lr"], runs_dir=runs).runs] == [
        "slow-lr",
        "fast-lr",
    ]


def test_png_has_the_overlaid_curves(runs: Path) -> None:
    import io

    from PIL import Image

    import nbtrain

    img = nbtrain.compare(["slow-lr", "fast-lr", "live"], runs_dir=runs).plot()
    assert img.data[:8] == b"\x89PNG\r\n\x1a\n"
    pic = Image.open(io.BytesIO(img.data)).convert("RGB")
    assert pic.width > 1000
    colours = {c for _, c in pic.getcolors(maxcolors=1 << 20)}
    for hex_ in ("#0072B2", "#D55E00", "#009E73"):  # each run's line is drawn
        rgb = tuple(int(hex_[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, hex_


def test_errors_name_the_runs_that_exist(runs: Path) -> None:
    import nbtrain

    with pytest.raises(ConfigError, match=r"No run named 'fast-l'.*Did you mean 'fast-lr'"):
        nbtrain.compare(["slow-lr", "fast-l"], runs_dir=runs)
    with pytest.raises(ConfigError, match="at least two runs"):
        nbtrain.compare("slow-lr", runs_dir=runs)
    with pytest.raises(ConfigError, match="named twice"):
        nbtrain.compare(["slow-lr", "slow-lr"], runs_dir=runs)
    with pytest.raises(ConfigError, match=r"x='epochs'.*Did you mean 'epoch'"):
        nbtrain.compare(["slow-lr", "fast-lr"], runs_dir=runs, x="epochs")


def test_nan_never_wins_and_configured_direction_is_used(tmp_path: Path) -> None:
    """Hand-written logs: a NaN metric is never marked best; metric_for_best_model with
    greater_is_better: false is honoured for a name that looks higher-is-better."""
    import nbtrain

    def write(name: str, value: float) -> None:
        d = tmp_path / name
        d.mkdir()
        cfg = {"name": name, "metric_for_best_model": "score", "greater_is_better": False}
        evs = [
            {"type": "start", "step": 0, "run": name, "total_steps": 4, "config": cfg},
            {"type": "eval", "step": 4, "epoch": 1.0, "metrics": {"score": value, "loss": 1.0}},
            {"type": "end", "step": 4, "status": "finished"},
        ]
        (d / "events.jsonl").write_text("\n".join(json.dumps(e) for e in evs) + "\n")

    write("a", 0.3)
    write("b", float("nan"))
    write("c", 0.2)
    write("d", 0.2)
    cmp = nbtrain.compare(["b", "a", "c"], runs_dir=tmp_path)  # the NaN run first
    assert cmp.metric == ("score", False)
    assert cmp.best_runs("score") == [2]
    assert math.isnan(cmp.runs[0].best_eval.metrics["score"])
    assert "score (↓)" in repr(cmp)
    # a tie for the best marks both; the same value everywhere marks none
    assert nbtrain.compare(["a", "c", "d"], runs_dir=tmp_path).best_runs("score") == [1, 2]
    same = nbtrain.compare(["c", "d"], runs_dir=tmp_path)
    assert same.best_runs("score") == [] and same.best_runs("loss") == []
    assert "★" not in same.html().split(">Metrics<")[1].split("</tbody>")[0]


def test_magic_compares_and_rejects_bad_input(runs: Path) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    try:
        _magic_checks(ip, runs, UsageError)
    finally:
        # A shell left behind would make later tests see IPython where a script has none.
        InteractiveShell.clear_instance()


def _magic_checks(ip, runs: Path, UsageError) -> None:
    ip.run_line_magic("load_ext", "nbtrain")
    out = ip.run_line_magic("nbtrain", f"compare slow-lr fast-lr --x epoch --runs-dir {runs}")
    assert type(out).__name__ == "Comparison" and out.x == "epoch"
    assert [r.name for r in out.runs] == ["slow-lr", "fast-lr"]
    out = ip.run_line_magic("nbtrain", f"compare slow-lr live --x=samples --runs-dir {runs}")
    assert out.x == "samples"
    with pytest.raises(UsageError, match="Did you mean 'fast-lr'"):
        ip.run_line_magic("nbtrain", f"compare slow-lr fastlr --runs-dir {runs}")
    with pytest.raises(UsageError, match="unknown option '--y'"):
        ip.run_line_magic("nbtrain", f"compare slow-lr fast-lr --y step --runs-dir {runs}")
    with pytest.raises(UsageError, match="at least two runs"):
        ip.run_line_magic("nbtrain", f"compare slow-lr --runs-dir {runs}")
    with pytest.raises(UsageError, match="--x needs"):
        ip.run_line_magic("nbtrain", f"compare slow-lr fast-lr --runs-dir {runs} --x")
    with pytest.raises(UsageError, match="compare A B"):
        ip.run_line_magic("nbtrain", "")  # the usage line lists compare
