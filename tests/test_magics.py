"""%%finetune and %nbtrain in a real IPython shell (no mocks of IPython or of the engine)."""

from __future__ import annotations

import gc
import json
import time
import weakref
from pathlib import Path

import pytest
import yaml
from IPython.core.error import UsageError

from nbtrain.events import read_events
from nbtrain.magics import RunStopped, View


@pytest.fixture(scope="module")
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbtrain")
    return shell


@pytest.fixture(autouse=True)
def _clean_ns(ip):
    before = set(ip.user_ns)
    yield
    for k in set(ip.user_ns) - before:
        ip.user_ns.pop(k, None)


def body(cfg: dict, *extra: str) -> str:
    """A cell body: the config as YAML, plus raw lines (for {name} references)."""
    return yaml.safe_dump(cfg, sort_keys=False) + "".join(line + "\n" for line in extra)


def no_name(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "name"}


def step_counter():
    from transformers import TrainerCallback

    class Count(TrainerCallback):
        def __init__(self) -> None:
            self.steps = 0

        def on_step_end(self, args, state, control, **kw):
            self.steps += 1

    return Count()


# -- training, binding, display -------------------------------------------------------------


def test_finetune_trains_binds_and_shows_text_view(ip, fast_cfg, runs_dir, capsys):
    ip.run_cell_magic("finetune", "tiny --display text", body(no_name(fast_cfg)))
    run = ip.user_ns["tiny"]  # bound to NAME, an identifier
    assert run.status == "finished"
    assert 0.0 <= run.metrics["eval_accuracy"] <= 1.0
    assert (runs_dir / "tiny" / "final").is_dir()
    out = capsys.readouterr()
    assert "Training tiny" in out.err  # the text renderer ran
    assert "tiny = RunResult('tiny', status='finished'" in out.out

    # Without an identifier NAME the result is bound to `run`; --out picks the variable.
    ip.run_cell_magic("finetune", "--display none", body(fast_cfg))
    assert ip.user_ns["run"].name == "tiny"
    ip.run_cell_magic("finetune", "--out result --display none", body(fast_cfg))
    assert ip.user_ns["result"].name == "tiny"

    # %nbtrain reads the run store the cells wrote (both HTML and text forms).
    runs = ip.run_line_magic("nbtrain", "runs")
    assert isinstance(runs, View)
    assert "tiny" in repr(runs) and "finished" in repr(runs)
    assert "<table>" in runs._repr_html_() and "tiny" in runs._repr_html_()
    show = ip.run_line_magic("nbtrain", f"show tiny --runs-dir {runs_dir}")
    assert "run tiny: finished" in repr(show) and "eval_accuracy" in repr(show)
    assert "tiny" in show._repr_html_()
    conf = ip.run_line_magic("nbtrain", "config tiny")
    assert "name: tiny" in repr(conf) and "<pre>" in conf._repr_html_()
    version = ip.run_line_magic("nbtrain", "version")
    assert "transformers" in repr(version) and "torch" in repr(version)
    assert "device" in repr(version) and "<table>" in version._repr_html_()
    with pytest.raises(UsageError, match="Did you mean 'tiny'"):
        ip.run_line_magic("nbtrain", "show tinny")
    with pytest.raises(UsageError, match="Did you mean 'runs'"):
        ip.run_line_magic("nbtrain", "rusn")
    with pytest.raises(UsageError, match="show NAME"):
        ip.run_line_magic("nbtrain", "show")


def test_attach_and_checkpoints_dispatch_or_say_unavailable(ip, tmp_path):
    import importlib.util

    import nbtrain.display

    if hasattr(nbtrain.display, "attach"):
        with pytest.raises(UsageError, match="No run named 'x'"):
            ip.run_line_magic("nbtrain", f"attach x --runs-dir {tmp_path}")
    else:
        view = ip.run_line_magic("nbtrain", f"attach x --runs-dir {tmp_path}")
        assert "not available in this version" in repr(view)
    if importlib.util.find_spec("nbtrain.ui") is None:
        view = ip.run_line_magic("nbtrain", f"checkpoints --runs-dir {tmp_path}")
        assert "not available in this version" in repr(view)
    empty = ip.run_line_magic("nbtrain", f"runs --runs-dir {tmp_path}")
    assert "No runs" in repr(empty)


# -- {name} references ------------------------------------------------------------------------


def test_references_of_each_kind(ip, fast_cfg, tiny_bert, sentiment_csv, runs_dir):
    import numpy as np
    import pandas as pd
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, Trainer

    class CustomTrainer(Trainer):
        """The tutorial's trainer with a class-weighted loss."""

        calls = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            type(self).calls += 1
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            w = torch.tensor([1.0, 3.0], device=outputs.logits.device)
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=w)
            return (loss, outputs) if return_outputs else loss

    seen = {}

    def compute_metrics(eval_pred):
        seen["called"] = True
        return {"custom": 0.5}

    model = BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    counter = step_counter()
    ip.user_ns.update(
        train_df=pd.read_csv(sentiment_csv["train"]),
        eval_df=pd.read_csv(sentiment_csv["dev"]),
        my_model=model,
        my_tok=AutoTokenizer.from_pretrained(str(tiny_bert)),
        my_metrics=compute_metrics,
        my_callbacks=[counter],
        CustomTrainer=CustomTrainer,
        weights=np.array([1.0, 3.0]),
        epochs=1,
    )
    cfg = {k: v for k, v in fast_cfg.items() if k not in ("model", "data", "epochs")}
    cell = body(
        cfg,
        "model: {my_model}",
        "tokenizer: {my_tok}",
        "data:",
        "  train: {train_df}",
        '  eval: "{eval_df}"',  # quoted works too
        "compute_metrics: {my_metrics}",
        "callbacks: {my_callbacks}",
        "trainer_class: {CustomTrainer}",
        "class_weights: {weights}",
        "epochs: {epochs}",  # a plain value is put in as is
    )
    ip.run_cell_magic("finetune", "refs --display none", cell)
    run = ip.user_ns["refs"]
    assert run.status == "finished"
    assert seen["called"] and run.metrics["eval_custom"] == 0.5
    assert counter.steps == 6  # 96 rows / 16, one epoch: the callback ran on every step
    assert CustomTrainer.calls >= 6
    assert not torch.equal(before, model.bert.embeddings.word_embeddings.weight)  # trained in place
    saved = (runs_dir / "refs" / "config.yaml").read_text()
    assert "'{train_df}'" in saved and "'{my_model}'" in saved and "num_train_epochs: 1" in saved


def test_datasets_object_and_set_overrides_in_dry_run(
    ip, fast_cfg, sentiment_csv, runs_dir, capsys
):
    import datasets
    import pandas as pd

    ip.user_ns["ds"] = datasets.Dataset.from_pandas(pd.read_csv(sentiment_csv["train"]))
    ip.user_ns["other"] = pd.read_csv(sentiment_csv["train"]).head(64)
    cfg = {k: v for k, v in fast_cfg.items() if k != "data"}
    ip.run_cell_magic("finetune", "dry --dry-run", body(cfg, "data:", "  train: {ds}"))
    out = capsys.readouterr().out
    assert "total steps     12" in out  # 96 rows less the held-out eval split? see below
    assert "Tokenized examples" in out and "[CLS]" in out
    assert "Resolved config" in out and "learning_rate: 0.001" in out
    assert not (runs_dir / "dry").exists()  # a dry run creates no run folder

    line = "dry --dry-run --set epochs=1 --set batch_size=32 --set data.train={other}"
    ip.run_cell_magic("finetune", line, body(cfg, "data:", "  train: {ds}"))
    out = capsys.readouterr().out
    assert "total steps     2" in out  # 64 rows / 32, one epoch


# -- errors -----------------------------------------------------------------------------------


def test_unknown_reference_lists_similar_names(ip, fast_cfg):
    ip.user_ns["train_df"] = object()
    cfg = {k: v for k, v in fast_cfg.items() if k != "data"}
    with pytest.raises(UsageError, match=r"data\.train: \{trian_df\}.*Did you mean 'train_df'"):
        ip.run_cell_magic("finetune", "x", body(cfg, "data:", "  train: {trian_df}"))
    with pytest.raises(UsageError, match=r"Variables in the notebook: .*train_df"):
        ip.run_cell_magic("finetune", "x", body(cfg, "data:", "  train: {zzz}"))


def test_yaml_syntax_error_names_the_cell_line(ip):
    cell = "model: x\ndata:\n  train: a.csv\n   eval: b.csv\n"  # line 5 of the cell
    with pytest.raises(UsageError, match=r"line 5") as e:
        ip.run_cell_magic("finetune", "x", cell)
    assert "not valid YAML" in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_and_bad_values(ip, fast_cfg):
    with pytest.raises(UsageError, match="Did you mean 'epochs'"):
        ip.run_cell_magic("finetune", "x", body(fast_cfg, "epohcs: 1"))
    with pytest.raises(UsageError, match="learning_rate"):
        ip.run_cell_magic("finetune", "x --set lr=-1", body(fast_cfg))
    with pytest.raises(UsageError, match="key=value"):
        ip.run_cell_magic("finetune", "x --set epochs", body(fast_cfg))
    with pytest.raises(UsageError, match="model is required"):
        ip.run_cell_magic("finetune", "x", "epochs: 1\n")


def test_bad_flags_are_rejected(ip, fast_cfg):
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        ip.run_cell_magic("finetune", "x --bogus", body(fast_cfg))
    with pytest.raises(UsageError, match="invalid choice: 'fancy'"):
        ip.run_cell_magic("finetune", "x --display fancy", body(fast_cfg))
    with pytest.raises(UsageError, match="not a Python variable name"):
        ip.run_cell_magic("finetune", "x --out 1x", body(fast_cfg))


def test_errors_show_one_line_without_traceback(ip, fast_cfg, capsys):
    result = ip.run_cell("%%finetune x\nmodel: m\ndata: {train: a.csv}\nepohcs: 1\n")
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert "UsageError: Unknown config key 'epohcs'" in err and "Traceback" not in err


# -- idempotent cells -------------------------------------------------------------------------


def test_rerun_reuses_finished_run_refuses_changed_config_and_restarts(ip, fast_cfg, capsys):
    counter = step_counter()
    ip.user_ns["cbs"] = [counter]
    cell = body(fast_cfg, "callbacks: {cbs}")
    ip.run_cell_magic("finetune", "--display none", cell)
    first = ip.user_ns["run"].metrics
    assert counter.steps == 12
    capsys.readouterr()

    ip.run_cell_magic("finetune", "--display none", cell)  # same name, same config
    assert counter.steps == 12  # nothing trained
    assert ip.user_ns["run"].metrics == first
    assert "already finished" in capsys.readouterr().out

    with pytest.raises(UsageError, match=r"different config \(changed: learning_rate\).*--restart"):
        ip.run_cell_magic("finetune", "--display none --set lr=0.01", cell)

    ip.run_cell_magic("finetune", "--display none --restart --set lr=0.01", cell)
    assert counter.steps == 24  # trained again from scratch
    assert ip.user_ns["run"].status == "finished"


# -- interrupt --------------------------------------------------------------------------------


def _interrupt_at(k: int):
    from transformers import TrainerCallback

    class InterruptOnce(TrainerCallback):
        """Raises KeyboardInterrupt (a kernel interrupt) once, at the end of step k."""

        def __init__(self) -> None:
            self.fired = False
            self.model_ref = None

        def on_train_begin(self, args, state, control, model=None, **kw):
            self.model_ref = weakref.ref(model)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == k and not self.fired:
                self.fired = True
                raise KeyboardInterrupt

    return InterruptOnce()


def _weights(final_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(final_dir / "model.safetensors"))


def test_interrupt_saves_checkpoint_and_rerun_matches_straight_run(ip, fast_cfg, runs_dir, capsys):
    import torch

    from nbtrain.runs import list_checkpoints, newest_complete

    cb = _interrupt_at(5)
    ip.user_ns["cbs"] = [cb]
    cfg = dict(fast_cfg, save_strategy="no")  # the only checkpoint is the interrupt's
    cell = "%%finetune --display none\n" + body(cfg, "callbacks: {cbs}")
    result = ip.run_cell(cell)
    assert isinstance(result.error_in_exec, RunStopped)
    out = capsys.readouterr()
    assert "was interrupted" in out.out and "re-run the cell" in out.out
    assert "Traceback" not in out.out + out.err
    run_dir = runs_dir / "tiny"
    ckpt = newest_complete(run_dir)
    assert ckpt is not None and ckpt.step == 5
    assert all(c.complete for c in list_checkpoints(run_dir))  # nothing half-written
    assert ip.user_ns["run"].status == "interrupted"
    gc.collect()
    assert cb.model_ref() is None  # the model's memory is free: nothing keeps it alive

    result = ip.run_cell(cell)  # re-running the cell resumes and finishes
    assert result.success, result.error_in_exec
    assert ip.user_ns["run"].status == "finished"

    straight = dict(cfg, name="straight")
    ip.run_cell_magic("finetune", "--display none", body(straight))
    a, b = _weights(run_dir / "final"), _weights(runs_dir / "straight" / "final")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from a straight run: {different[:5]}"


def test_unnamed_cell_gets_a_stable_name_and_resumes(ip, fast_cfg, runs_dir, capsys):
    """A cell without a name is named by its content, so re-running it resumes the same run."""
    from nbtrain.events import read_events

    cb = _interrupt_at(3)
    ip.user_ns["cbs"] = [cb]
    cell = "%%finetune --display none\n" + body(no_name(fast_cfg), "callbacks: {cbs}")
    result = ip.run_cell(cell)
    assert isinstance(result.error_in_exec, RunStopped)
    (folder,) = runs_dir.iterdir()
    assert folder.name.startswith("tiny-bert-") and len(folder.name) == len("tiny-bert-") + 8
    capsys.readouterr()

    result = ip.run_cell(cell)  # the same cell again: the same folder, resumed
    assert result.success, result.error_in_exec
    assert [p.name for p in runs_dir.iterdir()] == [folder.name]
    starts = [e for e in read_events(folder) if e.type == "start"]
    assert len(starts) == 2 and starts[1].resumed_from.endswith("checkpoint-3")
    assert ip.user_ns["run"].status == "finished"


def test_unnamed_cli_config_reuses_its_run(fast_cfg, runs_dir, tmp_path, capsys):
    from nbtrain.cli import main

    path = tmp_path / "sst2.yaml"
    path.write_text(yaml.safe_dump(dict(no_name(fast_cfg), max_steps=2)))
    from nbtrain.events import read_events

    assert main(["run", str(path), "--quiet"]) == 0
    (folder,) = runs_dir.iterdir()
    assert main(["run", str(path), "--quiet"]) == 0  # the same file again: the same run, reused
    assert [p.name for p in runs_dir.iterdir()] == [folder.name]
    assert [e.type for e in read_events(folder)].count("start") == 1  # nothing trained again
    assert f"RunResult({folder.name!r}, status='finished'" in capsys.readouterr().out


# -- dry run report ---------------------------------------------------------------------------


def test_dry_run_report_forms_and_sections(fast_cfg, tmp_path, capsys):
    from nbtrain.cli import main
    from nbtrain.config import load_config
    from nbtrain.engine.dryrun import dry_run
    from nbtrain.preflight import inspect

    report = dry_run(load_config(fast_cfg), timing=False)
    assert (report.train_rows, report.eval_rows) == (96, 32)
    assert report.labels == ["neg", "pos"]
    assert (report.steps_per_epoch, report.total_steps) == (6, 12)
    assert report.examples[0]["tokens"][0] == "[CLS]"
    view = inspect(fast_cfg, timing=False)
    html = view._repr_html_()
    for title in ("Token lengths", "Labels", "Parameters and memory", "Tokenized examples"):
        assert f"== {title} ==" in view.text() and f">{title}</h4>" in html
    assert "<svg" in html and "max_length 64" in html

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(fast_cfg))
    assert main(["run", str(path), "--dry-run", "--set", "epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "total steps     6" in out and "== Time ==" in out and "Estimated training time" in out
    assert main(["run", str(path), "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_steps"] == 12 and data["data"]["lengths"][0]["split"] == "train"
    assert data["memory"]["total_bytes"] > 0 and data["time"]["total_s"] > 0
    assert not Path(fast_cfg["runs_dir"]).exists()


def test_stop_and_attach_magics(ip, fast_cfg, runs_dir):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="no background run named 'nope'"):
        ip.run_line_magic("nbtrain", "stop nope")
    cfg_text = "\n".join(
        [
            f"model: {fast_cfg['model']}",
            f"data: {{train: {fast_cfg['data']['train']}}}",
            "epochs: 40",
            f"runs_dir: {runs_dir}",
            "display: none",
        ]
    )
    import io

    buf = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(buf):
        ip.run_cell_magic("finetune", "bgmagic --background", cfg_text)
    from nbtrain.background import RunHandle

    handle = ip.user_ns["bgmagic"]
    assert isinstance(handle, RunHandle) and "training in the background" in buf.getvalue()
    t0 = time.time()
    while handle.status != "running" and time.time() - t0 < 120:
        time.sleep(0.1)
    view = ip.run_line_magic("nbtrain", f"runs --runs-dir {runs_dir}")
    assert "bgmagic" in repr(view) and "background" in repr(view)
    ip.run_line_magic("nbtrain", "stop bgmagic")
    result = handle.wait(300)
    assert result.status == "stopped"


# -- attach to a run another process writes -------------------------------------------------


@pytest.mark.slow
def test_attach_shows_the_curves_of_a_run_another_process_is_writing(
    ip, fast_cfg, runs_dir, tmp_path, monkeypatch
):
    import signal

    from .test_signals import _start, _wait_for_line

    # The HTML view whichever IPython shell an earlier test left as the singleton: a terminal
    # shell gets the text view and its formatter drops text/html.
    monkeypatch.setenv("NBTRAIN_DISPLAY", "html")
    monkeypatch.setattr(ip.display_formatter, "active_types", ["text/plain", "text/html"])
    proc = _start(tmp_path, fast_cfg, slow_step=7, pause=300)  # steps 1-7 logged, then it waits
    try:
        _wait_for_line(proc, "SLOW 7")
        shown = []
        monkeypatch.setattr(
            ip.display_pub, "publish", lambda data, *a, **kw: shown.append(data), raising=True
        )
        ip.run_line_magic("nbtrain", f"attach tiny --runs-dir {runs_dir}")
        html = "".join(d.get("text/html", "") for d in shown)
        assert "training in another process" in html  # the view follows its event log
        # Its progress so far, read from events.jsonl: per-step events are not written to the
        # log, so the view knows the last logged step (7 steps ran; logging is every few steps).
        logged = max(e.step for e in read_events(runs_dir / "tiny") if e.type == "log")
        assert 5 <= logged <= 7 and f"step <b>{logged}</b>/300" in html
        assert "<svg" in html and "polyline" in html and "Loss" in html  # the curves so far
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
