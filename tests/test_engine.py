"""The engine end to end on a tiny BERT: run folder, events, result, predict, reuse, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import nbtrain
from nbtrain.events import read_events


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert, sentiment_csv):
    runs = tmp_path_factory.mktemp("runs")
    cfg = {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 6,
        "lr": 3e-3,
        "runs_dir": str(runs),
        "name": "clf",
    }
    seen = []
    result = nbtrain.finetune(cfg, display="none", on_event=seen.append)
    return cfg, result, seen


def test_run_folder_contents(finished):
    _, result, _ = finished
    d = result.output_dir
    for name in ("config.yaml", "env.json", "events.jsonl", "final"):
        assert (d / name).exists(), name
    env = json.loads((d / "env.json").read_text())
    assert env["versions"]["transformers"] and env["seed"] == 42 and env["device"]["kind"] == "cpu"
    assert any(p.name.startswith("checkpoint-") for p in d.iterdir())


def test_config_yaml_is_rerunnable(finished, tmp_path):
    _, result, _ = finished
    raw = yaml.safe_load((result.output_dir / "config.yaml").read_text())
    assert raw["name"] == "clf" and raw["num_train_epochs"] == 6.0
    assert nbtrain.load_config(result.output_dir / "config.yaml").learning_rate == pytest.approx(
        3e-3
    )


def test_events_jsonl(finished):
    _, result, seen = finished
    lines = (result.output_dir / "events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all("type" in r and "step" in r for r in records)
    types = [r["type"] for r in records]
    assert types[-1] == "end" and "start" in types and "eval" in types and "checkpoint" in types
    assert "step" not in types  # per-step progress goes to subscribers only
    assert any(e.type == "step" for e in seen)
    start = next(r for r in records if r["type"] == "start")
    assert start["total_steps"] == 36 and start["labels"] == ["neg", "pos"]
    assert start["params_trainable"] == start["params_total"] > 0
    evals = [e for e in read_events(result.output_dir) if e.type == "eval"]
    assert len(evals) == 6 and "accuracy" in evals[-1].metrics
    assert evals[-1].details["confusion_matrix"] and "pos" in evals[-1].details["per_class"]


def test_result_metrics_history_predict(finished):
    _, result, _ = finished
    assert result.status == "finished"
    assert result.metrics["eval_accuracy"] >= 0.75, result.metrics
    assert {"train_loss", "eval_loss", "eval_f1"} <= set(result.metrics)
    hist = result.history
    assert {"step", "loss", "learning_rate", "eval_accuracy"} <= set(hist.columns)
    assert hist["loss"].dropna().iloc[-1] < hist["loss"].dropna().iloc[0]
    preds = result.predict(["the movie was great and superb", "awful boring plot"])
    assert [p["label"] for p in preds] == ["pos", "neg"]
    assert sum(preds[0]["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "eval_accuracy" in repr(result) and "<table>" in result._repr_html_()


def test_final_loads_with_from_pretrained(finished):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, result, _ = finished
    model = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    AutoTokenizer.from_pretrained(result.final_dir)
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_same_name_same_config_reuses(finished):
    cfg, result, _ = finished
    n_lines = len((result.output_dir / "events.jsonl").read_text().splitlines())
    again = nbtrain.finetune(cfg, display="none")
    assert again.status == "finished" and again.metrics == result.metrics
    assert len((result.output_dir / "events.jsonl").read_text().splitlines()) == n_lines
    loaded = nbtrain.load_run("clf", runs_dir=cfg["runs_dir"])
    assert loaded.predict("superb film")[0]["label"] == "pos"


def test_same_name_other_config_is_refused(finished):
    cfg, _, _ = finished
    with pytest.raises(nbtrain.ConfigError) as info:
        nbtrain.finetune({**cfg, "lr": 1e-4, "epochs": 1}, display="none")
    msg = str(info.value)
    assert "learning_rate" in msg and "num_train_epochs" in msg and "restart" in msg


def test_restart_and_user_metrics_and_weights(fast_cfg):
    import numpy as np
    from transformers import Trainer, TrainerCallback

    calls = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            calls.append(state.global_step)

    def my_metrics(p):
        return {"mean_pred": float(np.asarray(p.predictions).argmax(-1).mean())}

    class MyTrainer(Trainer):
        used = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            MyTrainer.used = True
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    cfg = {
        **fast_cfg,
        "epochs": 1,
        "callbacks": [Count()],
        "compute_metrics": my_metrics,
        "trainer_class": MyTrainer,
    }
    r = nbtrain.finetune(cfg, display="none")
    assert calls and MyTrainer.used
    assert "eval_mean_pred" in r.metrics and "eval_accuracy" in r.metrics
    r2 = nbtrain.finetune({**cfg, "class_weights": [1.0, 3.0]}, display="none", restart=True)
    assert r2.status == "finished"


def test_text_renderer_output(fast_cfg, capsys):
    import io

    from nbtrain.display.text import TextRenderer

    buf = io.StringIO()
    nbtrain.finetune({**fast_cfg, "epochs": 1, "name": "txt"}, display=TextRenderer(buf))
    out = buf.getvalue()
    assert "Training txt" in out and "eval @ step" in out and "Finished" in out
    assert capsys.readouterr().out == ""  # the engine itself prints nothing


def test_cli_run_and_runs(fast_cfg, tmp_path):
    cfg = {**fast_cfg, "epochs": 1}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env_cmd = [sys.executable, "-m", "nbtrain"]
    out = subprocess.run(
        [*env_cmd, "run", str(path), "--set", "name=cli", "--set", "lr=2e-3"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "Finished" in out.stderr
    listing = subprocess.run(
        [*env_cmd, "runs", "--runs-dir", cfg["runs_dir"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "cli" in listing and "finished" in listing and "accuracy=" in listing
    bad = subprocess.run(
        [*env_cmd, "run", str(path), "--set", "lr=-1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "learning_rate" in bad.stderr and "Traceback" not in bad.stderr


def test_distributed_ranks_share_one_folder(fast_cfg, monkeypatch):
    """Under accelerate launch every rank derives the same run folder; only rank 0 writes."""
    from nbtrain.config import load_config
    from nbtrain.engine.runner import create_run, default_name, locate_run

    cfg = load_config({**fast_cfg, "name": None})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert default_name(cfg) == default_name(cfg)
    run_dir, name, existing = locate_run(cfg, restart=False)
    create_run(cfg, run_dir, name)
    assert not existing and not run_dir.exists()  # rank 1 writes nothing
    monkeypatch.setenv("RANK", "0")
    run_dir0, name0, _ = locate_run(cfg, restart=False)
    create_run(cfg, run_dir0, name0)
    assert run_dir0 == run_dir and (run_dir / "config.yaml").exists()


def test_freeze_embeddings(fast_cfg):
    seen = []
    r = nbtrain.finetune(
        {**fast_cfg, "epochs": 1, "name": "frozen", "freeze_embeddings": True},
        display="none",
        on_event=seen.append,
    )
    start = next(e for e in seen if e.type == "start")
    assert start.params_trainable < start.params_total
    emb = r.model.get_input_embeddings().weight
    from transformers import AutoModel

    before = AutoModel.from_pretrained(fast_cfg["model"]).get_input_embeddings().weight
    import torch

    assert torch.equal(emb.detach(), before.detach())  # untouched by training


def test_plot_returns_a_png_of_the_curves(finished, tmp_path):
    _, result, _ = finished
    img = result.plot()
    assert img._repr_png_().startswith(b"\x89PNG")
    assert img.save(tmp_path / "curves.png").stat().st_size > 10_000


def test_errors_before_training_leave_nothing_on_disk(fast_cfg, runs_dir, tmp_path):
    """A data error, a config error the Trainer finds, a crash while building the Trainer:
    nothing is written, so `runs/` holds no failed stub."""
    bad_data = tmp_path / "bad.csv"
    bad_data.write_text("text,label\n")  # no rows
    seen = []
    with pytest.raises(nbtrain.ConfigError):
        nbtrain.finetune(
            {**fast_cfg, "data": {"train": str(bad_data)}}, display="none", on_event=seen.append
        )
    assert [e.type for e in seen][-2:] == ["error", "end"]  # the view still hears why
    with pytest.raises(nbtrain.ConfigError, match="TrainingArguments rejected"):
        nbtrain.finetune({**fast_cfg, "dataloader_prefetch_factor": 2}, display="none")

    class Broken:  # a callback whose construction by the Trainer fails
        def __init__(self) -> None:
            raise RuntimeError("broken callback")

    with pytest.raises(RuntimeError, match="broken callback"):
        nbtrain.finetune({**fast_cfg, "callbacks": [Broken]}, display="none")
    assert list(runs_dir.iterdir()) == []


def test_a_refused_restart_keeps_the_old_run(fast_cfg, runs_dir, tmp_path):
    from nbtrain.runs import run_status

    nbtrain.finetune({**fast_cfg, "epochs": 1}, display="none")
    events_before = (runs_dir / "tiny" / "events.jsonl").read_text()
    bad_data = tmp_path / "bad.csv"
    bad_data.write_text("text,label\n")
    with pytest.raises(nbtrain.ConfigError):
        nbtrain.finetune(
            {**fast_cfg, "epochs": 1, "data": {"train": str(bad_data)}},
            restart=True,
            display="none",
        )
    assert run_status(runs_dir / "tiny").status == "finished"
    assert (runs_dir / "tiny" / "events.jsonl").read_text() == events_before
    assert (runs_dir / "tiny" / "final").is_dir()


def test_batch_size_in_events_counts_every_process(fast_cfg, monkeypatch):
    """samples/step = per device x accumulation x processes (WORLD_SIZE under accelerate)."""
    from nbtrain.config import load_config
    from nbtrain.engine import runner
    from nbtrain.engine.runner import _Session  # white-box: no second process needed
    from nbtrain.events import EventBus

    cfg = load_config({**fast_cfg, "gradient_accumulation_steps": 2})
    seen = []
    monkeypatch.setattr(runner, "world_size", lambda: 3)  # as accelerate launch would set it
    s = _Session(cfg, Path(fast_cfg["runs_dir"]) / "x", "x", EventBus([seen.append]), None)
    s.prepare()
    s.build()
    s.event_cb.on_train_begin(s.args, s.trainer.state, s.trainer.control)
    start = next(e for e in seen if e.type == "start")
    assert start.batch_size == 16 * 2 * 3
    s.release()


def test_finetune_uses_a_config_it_is_handed_as_it_is(finished, monkeypatch):
    """A Config was validated when it was built: finetune does not load it a second time."""
    from nbtrain import api

    cfg, result, _ = finished
    config = nbtrain.load_config(cfg)

    def reload(*args, **kwargs):
        raise AssertionError("finetune loaded a Config it was handed again")

    monkeypatch.setattr(api, "load_config", reload)
    again = nbtrain.finetune(config, display="none")
    assert again.status == "finished" and again.metrics == result.metrics
    with pytest.raises(AssertionError, match="loaded a Config"):  # overrides do make a new one
        nbtrain.finetune(config, display="none", epochs=1)


def test_class_weights_reach_the_trainers_loss(fast_cfg):
    """The Trainer's loss is the weighted cross-entropy, not the model's own (plain) loss."""
    import torch

    from nbtrain.config import load_config
    from nbtrain.engine.runner import _Session  # white-box: the loss of one batch, no training
    from nbtrain.events import EventBus

    cfg = load_config({**fast_cfg, "class_weights": [1.0, 9.0]})
    s = _Session(cfg, Path(fast_cfg["runs_dir"]) / "cw", "cw", EventBus([]), None)
    s.prepare()
    s.build()
    try:
        model = s.trainer.model.eval()  # no dropout: the same logits twice
        batch = next(iter(s.trainer.get_train_dataloader()))
        labels = batch["labels"]
        assert 0 < int(labels.sum()) < len(labels)  # both classes, so the weights matter
        with torch.no_grad():
            loss = s.trainer.compute_loss(model, dict(batch))
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        weighted = torch.nn.functional.cross_entropy(
            logits, labels, weight=torch.tensor([1.0, 9.0])
        )
        plain = torch.nn.functional.cross_entropy(logits, labels)
        assert torch.isclose(loss, weighted, atol=1e-5), (loss, weighted, plain)
        assert not torch.isclose(loss, plain, atol=1e-4)
    finally:
        s.release()
