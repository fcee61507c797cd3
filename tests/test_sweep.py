"""Sweeps: the sweep: section, trials as runs in the store, resume after stop / Ctrl-C / a dead
kernel, pruning, the trial panel and the text view. Tiny models only (a trial is a second or two)."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
from pathlib import Path

import pytest

import nbtrain
from nbtrain.config import load_config
from nbtrain.errors import ConfigError, RunInterrupted
from nbtrain.events import read_events
from nbtrain.format import fmt_short

optuna = pytest.importorskip("optuna")


def sweep_cfg(fast_cfg: dict, trials: int = 3, **sweep) -> dict:
    cfg = {k: v for k, v in fast_cfg.items() if k != "epochs"}
    cfg.update(
        name="sw",
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        sweep={
            "trials": trials,
            "params": {"lr": {"low": 1e-4, "high": 3e-2, "log": True}, "batch_size": [8, 16]},
            **sweep,
        },
    )
    return cfg


def starts(run_dir: Path) -> list:
    return [ev for ev in read_events(run_dir) if ev.type == "start"]


# -- the config section ------------------------------------------------------------------------


def _cfg(params: str, extra: str = "") -> str:
    return (
        f"model: x\ndata: {{train: a.csv}}\n{extra}sweep:\n  trials: 4\n  params:\n    {params}\n"
    )


def test_sweep_section_is_validated_and_normalised():
    cfg = load_config(
        _cfg(
            "lr: {low: 1e-5, high: 1e-3, log: true}\n    batch_size: [16, 32]\n"
            "    warmup_ratio: {low: 0.0, high: 0.2}\n    max_length: {low: 32, high: 128}"
        )
    )
    assert cfg.sweep.trials == 4
    assert cfg.sweep.params == {
        "lr": {"low": 1e-5, "high": 1e-3, "log": True},  # YAML's "1e-5" strings read as floats
        "batch_size": [16, 32],
        "warmup_ratio": {"low": 0.0, "high": 0.2},
        "max_length": {"low": 32, "high": 128},  # whole-number bounds: an int range
    }
    assert cfg.to_dict()["sweep"]["params"]["batch_size"] == [16, 32]
    assert "sweep" not in load_config("model: x\ndata: {train: a.csv}\n").to_dict()


@pytest.mark.parametrize(
    "params, words",
    [
        ("lrr: {low: 1e-5, high: 1e-3}", ["'lrr'", "Did you mean 'lr'"]),
        ("name: [a, b]", ["'name'", "name, runs_dir and display do not"]),
        ("warmup_ratio: {low: 0.0, high: 2.0}", ["sweep.params.warmup_ratio", "at most 1"]),
        ("lr: {low: 0, high: 1e-3, log: true}", ["log range needs low > 0"]),
        ("lr: {low: 1e-3, high: 1e-5}", ["must be below high"]),
        ("lr: {low: 1e-5, hi: 1e-3}", ["low, high and optionally log", "Did you mean 'high'"]),
        ("eval_strategy: [epoch, epochs]", ["eval_strategy", "Did you mean 'epoch'"]),
        ("lr: 3e-5", ["not a search space", "[16, 32] for choices"]),
        ("lr: []", ["empty list"]),
        ("lr: [1e-5]\n    learning_rate: [1e-4]", ["learning_rate is given twice"]),
    ],
)
def test_bad_search_spaces_get_one_paragraph(params, words):
    with pytest.raises(ConfigError) as e:
        load_config(_cfg(params))
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_sweep_needs_params():
    with pytest.raises(ConfigError, match="needs params"):
        load_config("model: x\ndata: {train: a.csv}\nsweep: {trials: 3}\n")


def test_missing_optuna_names_the_extra(fast_cfg, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    with pytest.raises(ConfigError) as e:
        nbtrain.finetune(sweep_cfg(fast_cfg), display="none")
    assert "pip install 'nbtrain[hpo]'" in str(e.value)
    assert "\n" not in str(e.value)


# -- running -----------------------------------------------------------------------------------


def test_sweep_runs_trials_as_runs_and_returns_a_sweep_result(fast_cfg, runs_dir):
    from nbtrain.display.sweep import SweepPanel

    shown = []

    class Handle:
        def update(self, view):
            shown.append(view._repr_html_())

    def display(view):
        shown.append(view._repr_html_())
        return Handle()

    panel = SweepPanel(display=display)
    res = nbtrain.finetune(sweep_cfg(fast_cfg), display=panel)
    folder = runs_dir / "sw"
    assert isinstance(res, nbtrain.SweepResult) and res.status == "finished"
    assert (folder / "study.db").is_file() and (folder / "sweep.yaml").is_file()
    df = res.trials
    assert list(df["run"]) == ["trial-0", "trial-1", "trial-2"]
    assert {"lr", "batch_size", "eval_accuracy", "state", "duration_s"} <= set(df.columns)
    assert set(df["state"]) <= {"finished", "pruned"}
    for run in df["run"]:
        assert (folder / run / "card.html").is_file()  # every trial is a run with its card
        assert (folder / run / "config.yaml").is_file()
    # every trial trained with its own params
    for _, row in df.iterrows():
        cfg = load_config(folder / row["run"] / "config.yaml")
        assert cfg.learning_rate == pytest.approx(row["lr"])
        assert cfg.per_device_train_batch_size == row["batch_size"]
    finished = df[df["state"] == "finished"]
    best = res.best
    assert best.metrics["eval_accuracy"] == pytest.approx(finished["eval_accuracy"].max())
    # best_config: one plain run of the best params, re-runnable
    best_cfg = load_config(res.best_config)
    assert best_cfg.sweep is None and best_cfg.name == "sw-best"
    assert best_cfg.learning_rate == pytest.approx(res.best_params["lr"])
    assert (folder / "best_config.yaml").read_text() == res.best_config
    assert res.plot().data[:4] == b"\x89PNG"
    assert "SweepResult('sw', status='finished', trials=3" in repr(res)
    # the panel: one handle, the trial table, the nested live view while a trial trained
    assert any("current trial: trial-1" in h and "<progress" in h for h in shown)
    final = shown[-1]
    assert final.count("<tr") >= 4 and "★ trial-" in final and "3/3 trials" in final
    assert "per trial" in final  # the metric-per-trial figure
    assert "parameter importances" in final  # Optuna's visualisations at the end
    assert [ev.type for ev in read_events(folder / "sweep.jsonl")][-1] == "sweep_end"
    # load_sweep reads the same from disk
    again = nbtrain.load_sweep("sw", runs_dir)
    assert again.best_params == res.best_params and again.status == "finished"
    # after a disconnect, attach rebuilds the panel from the sweep's events
    from nbtrain.display import attach

    shown.clear()
    attach("sw", runs_dir, display=display)
    assert len(shown) == 1 and "★ trial-" in shown[0] and "3/3 trials" in shown[0]


def test_stopped_sweep_resumes_with_the_trials_it_had(fast_cfg, runs_dir):
    from nbtrain.engine.callbacks import StopController

    stop = StopController()

    def stop_in_trial_1(ev):
        if ev.type == "step" and ev.step == 3 and stop_in_trial_1.trial == 1:
            stop.request("stopped")  # the Stop button: save the current trial, end the sweep
        if ev.type == "trial_start":
            stop_in_trial_1.trial = ev.number

    stop_in_trial_1.trial = -1
    cfg = sweep_cfg(fast_cfg)
    res = nbtrain.finetune(cfg, display="none", on_event=stop_in_trial_1, stop=stop)
    folder = runs_dir / "sw"
    assert res.status == "stopped"
    assert list(res.trials["run"]) == ["trial-0"]  # the stopped one is queued again
    assert (folder / "trial-1" / "checkpoint-3").is_dir()
    trial0_mtime = (folder / "trial-0" / "events.jsonl").stat().st_mtime_ns

    res = nbtrain.finetune(cfg, display="none")
    assert res.status == "finished"
    assert list(res.trials["run"]) == ["trial-0", "trial-1", "trial-2"]
    assert (folder / "trial-0" / "events.jsonl").stat().st_mtime_ns == trial0_mtime  # kept
    s = starts(folder / "trial-1")
    assert len(s) == 2 and s[-1].resumed_from.endswith("checkpoint-3")  # resumed, not redone
    params = json.loads((folder / "trial-1" / "identity.json").read_text())
    assert params["learning_rate"] == pytest.approx(
        res.trials.set_index("run").loc["trial-1", "lr"]
    )
    # A new trial after the resume is a new draw: the sampler does not start its random sequence
    # over (a seeded sampler recreated as it was would repeat trial-0's params for trial-2).
    df = res.trials.set_index("run")
    assert df.loc["trial-2", "lr"] != df.loc["trial-0", "lr"], df


@pytest.mark.parametrize("keep", ["best", "models", "all"])
def test_a_sweep_keeps_what_sweep_keep_says_on_disk(fast_cfg, runs_dir, keep):
    # A finished or pruned trial never resumes: its checkpoints are dead weight (a MiniLM trial
    # leaves two of 270 MB each). keep: best (the default) also drops the final model of every
    # trial but the best one, so a sweep costs about one model on disk.
    cfg = sweep_cfg(fast_cfg, prune=False)
    if keep != "best":
        cfg["sweep"]["keep"] = keep
    res = nbtrain.finetune(cfg, display="none")
    folder = runs_dir / "sw"
    runs = list(res.trials["run"])
    best = res.best_trial.user_attrs["run"]
    assert len(runs) == 3
    for run in runs:
        ckpts = [p for p in (folder / run).iterdir() if p.name.startswith("checkpoint-")]
        assert bool(ckpts) == (keep == "all"), (run, ckpts)
        has_model = (folder / run / "final" / "config.json").is_file()
        assert has_model == (keep != "best" or run == best), run
        assert (folder / run / "card.html").is_file()  # the record of every trial stays
    assert res.best.model is not None
    if keep == "best":
        other = next(r for r in runs if r != best)
        with pytest.raises(FileNotFoundError, match=r"sweep\.keep: models"):
            _ = nbtrain.load_run(other, folder).model


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to ourselves")
def test_ctrl_c_interrupts_the_sweep_and_a_rerun_continues(fast_cfg, runs_dir):
    def ctrl_c(ev):
        if ev.type == "trial_start":
            ctrl_c.trial = ev.number
        if ev.type == "step" and ev.step == 2 and ctrl_c.trial == 0:
            os.kill(os.getpid(), signal.SIGINT)

    ctrl_c.trial = -1
    cfg = sweep_cfg(fast_cfg, trials=2)
    with pytest.raises(RunInterrupted, match="resumes from its checkpoint"):
        nbtrain.finetune(cfg, display="none", on_event=ctrl_c)
    res = nbtrain.finetune(cfg, display="none")
    assert list(res.trials["run"]) == ["trial-0", "trial-1"]
    assert starts(runs_dir / "sw" / "trial-0")[-1].resumed_from is not None


def test_a_trial_left_running_by_a_dead_kernel_is_run_again(fast_cfg, runs_dir):
    cfg = sweep_cfg(fast_cfg, trials=1)
    nbtrain.finetune(cfg, display="none")
    from nbtrain.runs import load_study

    study = load_study(runs_dir / "sw")
    t = study.ask()  # what a killed process leaves: a RUNNING trial with its params
    t.suggest_float("lr", 1e-4, 3e-2, log=True)
    t.suggest_categorical("batch_size", [8, 16])
    t.set_user_attr("run", "trial-1")
    lr = t.params["lr"]

    cfg["sweep"]["trials"] = 2  # more trials continue the same sweep
    res = nbtrain.finetune(cfg, display="none")
    df = res.trials.set_index("run")
    assert list(df.index) == ["trial-0", "trial-1"]
    assert df.loc["trial-1", "lr"] == pytest.approx(lr)  # the same params, retried
    assert df.loc["trial-1", "state"] == "finished"


def test_a_changed_sweep_is_refused_and_restart_starts_over(fast_cfg, runs_dir):
    cfg = sweep_cfg(fast_cfg, trials=1)
    nbtrain.finetune(cfg, display="none")
    cfg["sweep"]["params"]["batch_size"] = [4, 8]
    with pytest.raises(ConfigError, match=r"different config \(changed: sweep.params.batch_size"):
        nbtrain.finetune(cfg, display="none")
    res = nbtrain.finetune(cfg, display="none", restart=True)
    assert set(res.trials["batch_size"]) <= {4, 8}


def test_a_bad_metric_name_is_a_config_error(fast_cfg):
    with pytest.raises(ConfigError, match="'eval_bleu' is not among the trial's final metrics"):
        nbtrain.finetune(sweep_cfg(fast_cfg, trials=1, metric="bleu"), display="none")


def test_trial_hook_reports_and_prunes_with_a_clean_stop():
    from nbtrain.engine.callbacks import StopController
    from nbtrain.events import Evaluated, StepEnd
    from nbtrain.sweep import _TrialHook

    class FakeTrial:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return len(self.reports) >= 2

    trial, sweep_stop, trial_stop = FakeTrial(), StopController(), StopController()
    hook = _TrialHook(trial, "eval_accuracy", sweep_stop, trial_stop, prune=True)
    hook(Evaluated(step=2, metrics={"accuracy": 0.5, "loss": 0.7}))
    assert not trial_stop.requested
    hook(Evaluated(step=4, metrics={"accuracy": 0.4}))
    assert trial.reports == [(2, 0.5), (4, 0.4)]
    assert hook.pruned and trial_stop.reason == "stopped"  # the run stops at its next step
    # a sweep Stop reaches the running trial at its next step
    trial_stop2 = StopController()
    hook2 = _TrialHook(FakeTrial(), "eval_accuracy", sweep_stop, trial_stop2, prune=False)
    sweep_stop.request("stopped")
    hook2(StepEnd(step=1))
    assert trial_stop2.requested


def test_median_pruning_stops_bad_trials(fast_cfg, runs_dir):
    # With sampler seed 6 the trials draw lr 1e-3, 1e-3, 1e-7 (Optuna's seeded random startup).
    # The first two learn; the third stays at its starting loss and is above their median at its
    # first evaluation, so it is pruned there and its run stops cleanly with a checkpoint.
    cfg = sweep_cfg(fast_cfg, trials=3, startup_trials=1, metric="eval_loss", seed=6)
    cfg["max_steps"] = 8
    cfg["sweep"]["params"] = {"lr": [1e-3, 1e-7]}
    res = nbtrain.finetune(cfg, display="none")
    df = res.trials.set_index("run")
    assert list(df["lr"]) == [1e-3, 1e-3, 1e-7], df
    assert res.direction == "minimize"
    assert list(df["state"]) == ["finished", "finished", "pruned"], df
    from nbtrain.runs import run_status

    status = run_status(runs_dir / "sw" / "trial-2")
    assert status.status == "stopped" and status.steps < 8  # stopped cleanly, early
    assert res.best.name in ("trial-0", "trial-1")


def test_cli_runs_a_sweep_with_the_text_view(fast_cfg, runs_dir, tmp_path, capsys):
    import yaml

    from nbtrain.cli import main

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_cfg(fast_cfg, trials=2)))
    assert main(["run", str(path)]) == 0
    err = capsys.readouterr().err
    assert "Sweep sw: 2 trials, maximize eval_accuracy" in err
    assert "-- trial-0 [1/2]: " in err and "lr=" in err and "-- trial-1: finished" in err
    assert "Best: trial-" in err and "best_config.yaml" in err


# -- the run listing -----------------------------------------------------------------------------


def test_runs_lists_a_sweep_as_one_row(fast_cfg, runs_dir, capsys):
    from nbtrain.cli import main
    from nbtrain.engine.callbacks import StopController
    from nbtrain.runviews import runs_view

    stop = StopController()

    def stop_at_trial_1(ev):
        if ev.type == "trial_start" and ev.number == 1:
            stop.request("stopped")

    cfg = sweep_cfg(fast_cfg, trials=2)
    nbtrain.finetune(cfg, display="none", on_event=stop_at_trial_1, stop=stop)
    nbtrain.finetune({**fast_cfg, "name": "plain"}, display="none")

    def row(text: str, name: str) -> list[str]:
        lines = [ln.split() for ln in text.splitlines() if ln.split()[:1] == [name]]
        assert len(lines) == 1, text
        return lines[0]

    text = runs_view(runs_dir).text
    assert text.splitlines()[0].split() == ["name", "kind", "status", "steps", "metric", "size"]
    assert row(text, "sw")[1:5] == ["sweep", "stopped", "1/2", "trials"]
    assert row(text, "plain")[1:3] == ["run", "finished"]
    assert "trial-0 " not in text.replace("(trial-0)", "")  # its trials are inside its row

    res = nbtrain.finetune(cfg, display="none")  # continue it to the end
    best = res.best_trial
    text = runs_view(runs_dir).text
    sw = row(text, "sw")
    assert sw[1:5] == ["sweep", "finished", "2/2", "trials"]
    run = best.user_attrs["run"]  # trial-1 was stopped and retried: its run, not its number
    assert sw[5:8] == ["best", f"accuracy={fmt_short(best.value)}", f"({run})"]
    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    cli = row(out, "sw")
    assert cli[1:5] == ["sweep", "finished", "2/2", "trials"]
    assert cli[5:8] == ["best", f"accuracy={best.value:.4f}", f"({run})"]


def test_a_sweep_without_an_end_is_running_while_its_logs_move(tmp_path):
    import os
    import time

    from nbtrain.events import EventLog, SweepStarted, TrialEnded, TrialStarted
    from nbtrain.runs import STALE_S, list_sweeps, sweep_status

    folder = tmp_path / "runs" / "live"
    folder.mkdir(parents=True)
    (folder / "study.db").write_bytes(b"")
    log = EventLog(folder / "sweep.jsonl")
    log(
        SweepStarted(
            sweep="live", sweep_dir=str(folder), metric="eval_loss", direction="minimize", trials=4
        )
    )
    for n, value in ((0, 0.5), (1, 0.3)):
        log(TrialStarted(number=n, run=f"trial-{n}", run_dir=str(folder / f"trial-{n}")))
        log(TrialEnded(number=n, run=f"trial-{n}", state="finished", value=value))
    log(TrialStarted(number=2, run="trial-2", run_dir=str(folder / "trial-2")))
    info = sweep_status(folder)
    assert (info.status, info.trials_done, info.trials_total) == ("running", 2, 4)
    assert (info.best_run, info.best_value) == ("trial-1", 0.3)  # minimised
    old = time.time() - STALE_S - 10
    os.utime(folder / "sweep.jsonl", (old, old))
    assert sweep_status(folder).status == "unfinished"  # cut off: waiting to be continued
    assert [s.name for s in list_sweeps(tmp_path / "runs")] == ["live"]


@pytest.mark.parametrize(
    "lrs",
    [
        (2e-5, 5e-5, 1.6e-4, 2.2e-4),  # about a decade: matplotlib labels the minor ticks too
        (2.24e-3, 2.25e-3, 2.29e-3, 2.31e-3),  # inside one decade: no decade tick at all
        (2.237e-3, 2.288e-3, 2.26e-3, 2.27e-3),  # closer still: two-digit ticks fall outside
    ],
)
def test_study_plots_draw_importances_and_a_readable_slice_plot(monkeypatch, lrs):
    # The panel's end: Optuna's importances and slice plot. On a log axis over about a decade,
    # or inside one, matplotlib's labels ("2 × 10⁻⁵", "3 × 10⁻⁵", ...) run into each other in
    # the slice plot's narrow panels: the learning rate's labels must not overlap.
    from optuna.visualization import matplotlib as ovm

    from nbtrain.display.sweep import study_png

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for lr, bs in zip(lrs, (16, 32, 16, 32)):
        study.enqueue_trial({"learning_rate": lr, "batch_size": bs})
    study.optimize(
        lambda t: (
            -abs(math.log10(t.suggest_float("learning_rate", 1e-5, 1e-2, log=True) / 1.5e-4))
            + 0.01 * (t.suggest_categorical("batch_size", [16, 32]) == 32)
        ),
        n_trials=4,
    )
    drawn = {}
    for name in ("plot_param_importances", "plot_slice"):
        real = getattr(ovm, name)

        def spy(study, real=real, name=name):
            drawn[name] = real(study)
            return drawn[name]

        monkeypatch.setattr(ovm, name, spy)
    png, note = study_png(study)
    assert png[:4] == b"\x89PNG" and note == ""
    assert set(drawn) == {"plot_param_importances", "plot_slice"}
    axes = list(drawn["plot_slice"].flat)
    fig = axes[0].figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot closed it: draw it again here
    fig.draw(renderer)
    (lr_ax,) = [ax for ax in axes if ax.get_xlabel() == "learning_rate"]
    assert lr_ax.get_xscale() == "log"
    lo, hi = lr_ax.get_xlim()
    labels = [
        t
        for t in lr_ax.xaxis.get_majorticklabels() + lr_ax.xaxis.get_minorticklabels()
        if t.get_visible() and t.get_text() and lo <= t.get_position()[0] <= hi
    ]
    assert len(labels) >= 2, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    for left, right in itertools.pairwise(boxes):
        assert left.x1 <= right.x0, [t.get_text() for t in labels]  # side by side, not on top


def test_the_metric_per_trial_is_placed_at_the_trial_the_table_shows():
    # A stopped trial is queued again under a new Optuna number: trial-1 retried is number 2,
    # trial-2 number 3. The figure's x is the trial-K of the table, not Optuna's number.
    from nbtrain.display.sweep import SweepState, TrialRow, trials_figure

    s = SweepState(sweep="sw", metric="eval_accuracy", direction="maximize", total=3)
    for number, run, state, value in (
        (0, "trial-0", "finished", 0.8),
        (2, "trial-1", "finished", 0.9),
        (3, "trial-2", "pruned", 0.6),
    ):
        s.trials[number] = TrialRow(number=number, run=run, params={}, state=state, value=value)
    (ax,) = trials_figure(s).axes
    points = {
        c.get_label(): [tuple(xy) for xy in c.get_offsets()]
        for c in ax.collections
        if c.get_label() in ("finished", "pruned")
    }
    assert points == {"finished": [(0, 0.8), (1, 0.9)], "pruned": [(2, 0.6)]}
    assert list(ax.get_xticks()) == [0, 1, 2]
