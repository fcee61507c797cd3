"""The widget form and checkpoint browser without a browser: real widgets, real runs, no mocks."""

from __future__ import annotations

import dataclasses
import html
import time
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from nbtrain.config import Config, DataConfig, LoraConfig, load_config, to_yaml
from nbtrain.errors import ConfigError
from nbtrain.ui import spec as S
from nbtrain.ui.form import FinetuneForm, FormFallback, form


def _filled(**extra) -> FinetuneForm:
    f = FinetuneForm()
    f.inputs["model"].value = "bert-base-uncased"
    f.inputs["data.train"].value = "data/train.csv"
    for key, value in extra.items():
        f.inputs[key.replace("__", ".")].value = value
    return f


def _error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    return str(e.value)


# -- generated from the schema -----------------------------------------------------------------


def test_every_schema_field_is_a_form_input_in_its_section():
    f = FinetuneForm()
    expected = set()
    for cls, prefix in ((Config, ""), (DataConfig, "data."), (LoraConfig, "lora.")):
        for fl in dataclasses.fields(cls):
            # a sweep: section is written as YAML (docs/experiments.md), not a form field
            if fl.metadata.get("kind") not in ("runtime", "section", "lora", "sweep"):
                expected.add(prefix + fl.name)
    assert expected <= set(f.inputs)
    assert list(f.section_names[:7]) == list(S.SECTIONS)
    groups = S.sections()
    assert [s.key for s in groups["Model"] if s.common] == ["model", "task", "name"]
    # common fields first, the rest under one "Advanced" accordion per section
    training = f.tabs.children[f.section_names.index("Training")]
    assert training.children[-1].get_title(0).startswith("Advanced")


def test_a_form_sends_few_widget_messages(monkeypatch):
    """Every widget model is a message to the browser, and so is each later change. A form
    sent ~1,460 at once (its own layout and style per widget, classes added one by one),
    more than the kernel's IOPub queue holds (1,000) when the frontend reads slowly: dropped
    ones left the form half-rendered, or a notebook client waiting for the end of the cell."""
    import comm

    sent: list[str] = []

    class Counting(comm.DummyComm):
        def publish_msg(self, msg_type, *args, **kwargs):
            sent.append(msg_type)

    monkeypatch.setattr(comm, "create_comm", lambda *a, **kw: Counting(*a, **kw))
    f = FinetuneForm()
    fields = len(f.inputs)
    assert fields > 60
    assert sent.count("comm_open") <= 5 * fields + 40, len(sent)
    assert len(sent) <= 6 * fields + 60, (len(sent), fields)
    assert len({id(w.layout) for w in f.inputs.values()}) == 1  # one shared Layout
    assert f.inputs["model"]._dom_classes == ("nbt-input", "nbt-field-model")


def test_widget_values_make_the_config():
    f = _filled(learning_rate="2e-5", num_train_epochs="1", data__text="0", data__label="1")
    f.inputs["lora"].value = True
    f.inputs["lora.r"].value = "4"
    f.inputs["eval_strategy"].value = "epoch"
    f.inputs["load_best_model_at_end"].value = False
    assert f.errors == {}
    assert f.config == load_config(
        {
            "model": "bert-base-uncased",
            "data": {"train": "data/train.csv", "text": 0, "label": 1},
            "lr": 2e-5,
            "epochs": 1,
            "lora": {"r": 4},
            "eval_strategy": "epoch",
            "load_best_model_at_end": False,
        }
    )
    assert not f.train_button.disabled


RICH = {
    "model": "bert-base-uncased",
    "task": "text-classification",
    "name": "rich-run",
    "data": {"train": "a.csv", "eval": "b.csv", "text": 0, "label": 2, "label_names": ["n", "p"]},
    "lr": 3e-5,
    "save_total_limit": None,  # differs from its default (2): must survive the round trip
    "report_to": ["tensorboard"],
    "class_weights": [1.0, 2.5],
    "optim": "adafactor",
    "eval_strategy": "steps",
    "eval_steps": 50,
    "greater_is_better": False,
    "lora": {"r": 4, "target_modules": ["query", "value"]},
    "training_args": {"adam_beta1": 0.8},
}


def test_config_to_form_to_config_is_lossless():
    cfg = load_config(RICH)
    f = FinetuneForm(cfg)
    assert f.errors == {}
    assert f.config == cfg


def test_form_to_cell_to_config_to_form_round_trip():
    f = FinetuneForm(load_config(RICH))
    text = f.cell_text()
    assert text.startswith("%%finetune rich-run\n")
    assert "lr" not in text.split("\n", 1)[1].split(":")[0]
    cfg = S.parse_cell(text)
    assert cfg == f.config
    again = FinetuneForm(cfg)
    assert again.values == f.values
    assert again.cell_text() == text


def test_copy_as_cell_sets_the_next_input():
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    f = FinetuneForm(load_config(RICH))
    f.copy_button.click()
    assert shell.rl_next_input == f.cell_text() == f.cell_box.value
    assert f.cell_box.layout.display is None
    assert "%%finetune cell" in f.status.value


def test_cell_writes_notebook_objects_as_references():
    import pandas as pd

    df = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    f = FinetuneForm(namespace={"df": df})
    f.inputs["model"].value = "m"
    f.inputs["data.train"].value = "{df}"
    assert f.errors == {}
    assert f.config.data.train.value is df
    assert "train: {df}" in f.cell_text()
    assert S.parse_cell(f.cell_text(), {"df": df}).data.train.value is df
    f.inputs["data.train"].value = "{nope}"
    assert "names no variable" in f.errors["data.train"]


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "bad", "raw"),
    [
        ("learning_rate", "abc", {"learning_rate": "abc"}),
        ("learning_rate", "2", {"learning_rate": 2.0}),
        ("per_device_train_batch_size", "0", {"per_device_train_batch_size": 0}),
        ("data.max_length", "-3", {"data": {"max_length": -3}}),
        ("data.eval_split", "0.9", {"data": {"eval_split": 0.9}}),
        ("lora.r", "0", {"lora": {"r": 0}}),
        ("report_to", "tensorbord", {"report_to": "tensorbord"}),
        ("class_weights", "1, x", {"class_weights": ["1", "x"]}),
    ],
)
def test_field_message_is_the_config_error(key, bad, raw):
    f = _filled()
    if key.startswith("lora."):
        f.inputs["lora"].value = True
    f.inputs[key].value = bad
    full = {"model": "bert-base-uncased", "data": {"train": "data/train.csv"}}
    for k, v in raw.items():
        full[k] = {**full.get(k, {}), **v} if isinstance(v, dict) else v
    assert f.errors == {key: _error_of(full)}
    assert _error_of(full) in f.messages[key].value.replace("&#x27;", "'")
    assert f.train_button.disabled
    assert f.copy_button.disabled
    section = next(s.group for s in f.specs if s.key == key)
    assert section + " ⚠" in f.tabs.titles
    f.inputs[key].value = ""  # back to the default: valid again
    assert f.errors == {}
    assert not f.train_button.disabled
    assert f.messages[key].value == ""


def test_cross_field_and_required_messages():
    f = FinetuneForm()
    assert f.errors == {"model": _error_of({"data": {"train": "x.csv"}})}
    assert f.train_button.disabled
    f = _filled(eval_strategy="steps")
    assert f.errors == {
        "eval_steps": _error_of(
            {
                "model": "bert-base-uncased",
                "data": {"train": "data/train.csv"},
                "eval_strategy": "steps",
            }
        )
    }
    f.inputs["eval_steps"].value = "10"
    assert f.errors == {}


def test_training_args_box():
    f = _filled(training_args="adam_beta1: 0.85\ndataloader_num_workers: 0")
    assert f.errors == {}
    assert f.config.training_args == {"adam_beta1": 0.85, "dataloader_num_workers": 0}
    f.inputs["training_args"].value = "adam_beta: 0.85"
    assert "adam_beta" in f.errors["training_args"]
    assert f.errors["training_args"] == _error_of(
        {"model": "m", "data": {"train": "t"}, "adam_beta": 0.85}
    )


# -- presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(S.PRESETS))
def test_presets_apply_to_the_form(preset):
    f = _filled()
    f.preset.value = preset
    assert f.errors == {}
    cfg = f.config
    assert cfg.model == "bert-base-uncased" and cfg.data.train == "data/train.csv"
    spec_keys = {s.key for s in S.field_specs()}
    for key, value in S.PRESETS[preset].items():
        assert key in spec_keys
        if key == S.LORA_SWITCH:
            assert (cfg.lora is not None) is value
        else:
            section, _, name = key.rpartition(".")
            assert getattr(getattr(cfg, section) if section else cfg, name) == value


def test_presets_differ_where_they_should():
    f = _filled()
    f.apply_preset("Small GPU with LoRA")
    assert f.config.lora is not None and f.config.lora.r == 16
    f.apply_preset("Quick CPU check")
    assert f.config.lora is None and f.config.max_steps == 20 and f.config.precision == "fp32"
    with pytest.raises(ConfigError, match="Did you mean 'Quick CPU check'"):
        f.apply_preset("Quick CPU chek")


# -- fallbacks and the magic -------------------------------------------------------------------


def test_without_widgets_one_message_and_the_cell(monkeypatch):
    out = form({"model": "m", "data": {"train": "t.csv"}, "lr": 1e-4})
    assert isinstance(out, FormFallback)  # not in a kernel: no widgets
    assert "not running in a notebook kernel" in repr(out)
    assert "learning_rate: 0.0001" in out._repr_html_()
    monkeypatch.setenv("NBTRAIN_WIDGETS", "0")
    assert "widgets are turned off" in repr(form(widgets=None))
    assert isinstance(form(widgets=True), FinetuneForm)


def test_finetune_form_magic_line(tmp_path):
    from nbtrain.ui.magics import finetune_form_line

    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(load_config({**RICH, "name": "old"})))
    f = finetune_form_line(f"new --from old --runs-dir {tmp_path / 'runs'}")
    assert isinstance(f, FormFallback)  # outside a kernel; the config is what matters
    assert f.config == load_config({**RICH, "name": "new", "runs_dir": str(tmp_path / "runs")})
    fresh = finetune_form_line("fresh --runs-dir elsewhere")  # no model yet: the form asks
    assert fresh.config.name == "fresh" and fresh.config.runs_dir == "elsewhere"
    assert fresh.config.model is None
    partial = form({"lr": 1e-4, "data": {"text": "review"}}, widgets=True)
    assert partial.values["learning_rate"] == "0.0001" and partial.values["data.text"] == "review"
    assert set(partial.errors) == {"model"}
    with pytest.raises(Exception, match=r"Unknown option --form\. Did you mean '--from'"):
        finetune_form_line("x --form old")
    with pytest.raises(ConfigError, match=r"No run named 'olt'.*Did you mean 'old'"):
        finetune_form_line(f"--from olt --runs-dir {tmp_path / 'runs'}")


# -- training from the form, stopping, browsing ------------------------------------------------


def _wait(cond, timeout=120.0):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.slow
def test_train_then_stop_from_another_thread(fast_cfg, runs_dir):
    f = FinetuneForm(load_config({**fast_cfg, "epochs": 2, "batch_size": 16}))
    run = f.train()
    assert f.train_button.disabled and not f.stop_button.disabled
    assert run.wait(120).status == "finished"
    html = f.output.outputs[0]["data"]["text/html"]
    assert "nbtrain run card" in html and "finished" in html and "eval_accuracy" in html
    assert f.status.value == "Run tiny: finished." and not f.train_button.disabled

    g = FinetuneForm(
        load_config({**fast_cfg, "name": "long", "epochs": 200, "eval_strategy": "no"})
    )
    run = g.train()
    _wait(lambda: run.state.step >= 3)
    g.stop()  # what the Stop button calls, from this (not the training) thread
    assert run.wait(60).status == "stopped"
    step = run.state.end.step
    assert step < 100
    ckpt = runs_dir / "long" / f"checkpoint-{step}"
    assert (ckpt / "model.safetensors").is_file()
    assert "stopped" in g.output.outputs[0]["data"]["text/html"]
    assert not g.train_button.disabled


@pytest.mark.slow
def test_browser_lists_deletes_and_tries(fast_cfg, runs_dir):
    from nbtrain import finetune
    from nbtrain.ui.browser import CheckpointBrowser, CheckpointTable, browse

    cfg = {**fast_cfg, "epochs": 3, "eval_strategy": "epoch", "save_strategy": "epoch"}
    finetune(cfg, display="none")
    b = CheckpointBrowser(runs_dir)
    ckpts = b.checkpoints
    assert [c.step for c in ckpts] == [6, 12, 18]
    assert sum(c.is_best for c in ckpts) == 1 and ckpts[-1].is_newest
    text = repr(CheckpointTable(runs_dir))
    assert "★ best" in text and "checkpoint-6" in text and "accuracy" in text
    assert "★ best" in browse(runs_dir=runs_dir, widgets=False)._repr_html_()
    assert "★ best" in browse(runs_dir / "tiny", widgets=False)._repr_html_()
    grid = b.table.children[0]
    deletes = [w for w in grid.children if getattr(w, "description", "") == "Delete"]
    protected = [c.is_best or c.is_newest for c in ckpts]
    assert [d.disabled for d in deletes] == protected
    victim = next(c for c, p in zip(ckpts, protected) if not p)
    b.ask_delete(victim)
    assert "cannot be undone" in b.confirm_box.children[0].value
    assert victim.path.is_dir()  # nothing deleted before the confirmation
    b.confirm_box.children[1].click()
    assert not victim.path.exists()
    assert victim.name not in [c.name for c in b.checkpoints]
    b.delete(next(c for c in b.checkpoints if c.is_newest))
    assert "is kept" in b.message.value
    out = b.try_html(b.checkpoints[-1], "a great and lovely film")
    assert "predicted:" in out and ("pos" in out or "neg" in out)
    card = runs_dir / "tiny" / "card.html"
    assert card.is_file()  # every run writes its card when it ends
    b.open_card()
    shown = html.unescape(b.card_view.value)  # the card is the iframe's srcdoc
    assert "nbt-card-frame" in shown and card.read_text(encoding="utf-8") in shown
    card.unlink()
    b.card_view.value = ""
    b.open_card()
    assert "no card yet" in b.message.value and b.card_view.value == ""


@pytest.mark.slow
def test_browser_resumes_a_run_trained_on_a_notebook_dataframe(fast_cfg, runs_dir):
    """config.yaml records {train_df}: Resume takes train_df from the notebook again."""
    import pandas as pd
    from transformers import TrainerCallback

    from nbtrain import RunInterrupted, finetune
    from nbtrain.config import Ref
    from nbtrain.events import read_events
    from nbtrain.ui.browser import CheckpointBrowser

    from .conftest import make_texts

    class InterruptAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    df = pd.DataFrame(make_texts(64, 0), columns=["text", "label"])
    cfg = {**fast_cfg, "data": {"train": Ref("train_df", df)}, "save_strategy": "no"}
    with pytest.raises(RunInterrupted):
        finetune({**cfg, "callbacks": [InterruptAt3()]}, display="none")
    assert "'{train_df}'" in (runs_dir / "tiny" / "config.yaml").read_text()

    b = CheckpointBrowser(runs_dir, "tiny", namespace={})
    assert b.resume() is None  # nothing started: the message says what is needed
    assert "Define train_df in this notebook with the same data" in html.unescape(b.message.value)
    b.namespace = {"train_df": df.iloc[:40]}
    assert b.resume() is None
    assert "is not the data run 'tiny' trained on" in html.unescape(b.message.value)
    b.namespace = {"train_df": df}
    run = b.resume()
    run.wait(120)
    assert run.error is None, run.error
    assert run.result.status == "finished"
    starts = [e for e in read_events(runs_dir / "tiny") if e.type == "start"]
    assert starts[-1].resumed_from.endswith("checkpoint-3")


def test_browser_names_a_missing_run(runs_dir):
    from nbtrain.ui.browser import browse

    with pytest.raises(ConfigError, match="No run named 'x'"):
        browse("x", runs_dir, widgets=False)
    assert "No runs in" in repr(browse(runs_dir=Path(runs_dir), widgets=False))
