"""The usual Trainer tutorial's code, run as written (issue 18): each wall it hit has a test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import nbtrain


def _no_dropout_bert(tiny_bert: Path, tmp_path: Path) -> Path:
    """The tiny BERT without dropout: runs with different batch shapes see the same maths."""
    folder = tmp_path / "bert-nodrop"
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _old_signature_trainer(weights: list[float] | None = None) -> type:
    """The tutorial's CustomTrainer, transformers-4 signature (no num_items_in_batch)."""
    import torch
    from transformers import Trainer

    train_losses: list[float] = []  # what the override returned for each training micro-batch

    class CustomTrainer(Trainer):
        calls = 0

        def compute_loss(self, model, inputs, return_outputs=False):
            type(self).calls += 1
            labels = inputs.get("labels")
            outputs = model(**inputs)
            logits = outputs.get("logits")
            w = None if weights is None else torch.tensor(weights, device=logits.device)
            loss_fct = torch.nn.CrossEntropyLoss(weight=w)
            loss = loss_fct(logits.view(-1, self.model.config.num_labels), labels.view(-1))
            if model.training:
                train_losses.append(loss.item())
            return (loss, outputs) if return_outputs else loss

    CustomTrainer.train_losses = train_losses
    return CustomTrainer


def test_old_signature_compute_loss_runs_as_written(fast_cfg):
    trainer_cls = _old_signature_trainer([1.0, 2.0])
    run = nbtrain.finetune(
        {**fast_cfg, "epochs": 1, "gradient_accumulation_steps": 2, "trainer_class": trainer_cls},
        display="none",
    )
    assert run.status == "finished"
    assert trainer_cls.calls >= 6  # 96 rows / 16 per micro-step, and the evaluations
    # 6 micro-batches, 2 per optimizer step: train_loss is the mean of the losses the override
    # returned (a per-example mean), not their sum over the accumulated micro-batches
    assert len(trainer_cls.train_losses) == 6
    mean = sum(trainer_cls.train_losses) / len(trainer_cls.train_losses)
    assert run.metrics["train_loss"] == pytest.approx(mean, rel=1e-4)


@pytest.mark.slow
def test_gradient_accumulation_loss_matches_the_trainers_own(fast_cfg, tiny_bert, tmp_path):
    """4 micro-batches of 4 with the old-signature override == one batch of 16, Trainer's own loss."""
    model = str(_no_dropout_bert(tiny_bert, tmp_path))
    base = {
        **fast_cfg,
        "model": model,
        "epochs": 1,
        "save_strategy": "no",
        "group_by_length": False,
        "warmup_ratio": 0.0,
    }
    own = nbtrain.finetune({**base, "name": "own", "batch_size": 16}, display="none")
    accum = nbtrain.finetune(
        {
            **base,
            "name": "accum",
            "batch_size": 4,
            "gradient_accumulation_steps": 4,
            "trainer_class": _old_signature_trainer(),
        },
        display="none",
    )
    plain_accum = nbtrain.finetune(
        {**base, "name": "plain", "batch_size": 4, "gradient_accumulation_steps": 4},
        display="none",
    )
    ref = own.metrics["train_loss"]
    assert accum.metrics["train_loss"] == pytest.approx(ref, rel=1e-4)
    assert plain_accum.metrics["train_loss"] == pytest.approx(ref, rel=1e-4)
    assert accum.metrics["eval_loss"] == pytest.approx(own.metrics["eval_loss"], rel=1e-4)


# -- lora: takes peft's own LoraConfig fields -------------------------------------------------


@pytest.mark.slow
def test_lora_accepts_every_peft_field(fast_cfg):
    from nbtrain.config import load_config

    lora = {
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "task_type": "SEQ_CLS",
        "use_rslora": True,
        "use_dora": True,
        "init_lora_weights": "gaussian",
        "layers_to_transform": [0],
        "rank_pattern": {"query": 2},
        "target_modules": ["query", "value"],
    }
    cfg = load_config({**fast_cfg, "epochs": 1, "lora": lora})
    assert cfg.lora.alpha == 8 and cfg.lora.dropout == 0.1  # peft's names: nbtrain's aliases
    assert cfg.lora.peft_args["use_dora"] is True
    assert cfg.to_dict()["lora"]["use_rslora"] is True  # config.yaml keeps peft's spelling
    run = nbtrain.finetune(cfg, display="none")
    assert run.status == "finished"
    peft_cfg = run.model.peft_config["default"]
    assert peft_cfg.use_dora and peft_cfg.use_rslora and peft_cfg.layers_to_transform == [0]
    assert peft_cfg.rank_pattern == {"query": 2} and peft_cfg.init_lora_weights == "gaussian"
    assert peft_cfg.lora_alpha == 8 and peft_cfg.lora_dropout == 0.1
    names = [n for n, _ in run.model.named_modules() if n.endswith("lora_magnitude_vector")]
    assert names and all(".layer.0." in n for n in names)  # DoRA, on layer 0 only


def test_lora_unknown_peft_key_has_did_you_mean(fast_cfg):
    from nbtrain.config import load_config
    from nbtrain.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config({**fast_cfg, "lora": {"use_dorra": True}})
    msg = str(e.value)
    assert "Unknown key 'lora.use_dorra'" in msg and "Did you mean 'use_dora'" in msg
    assert "any field of the installed peft's LoraConfig" in msg
    with pytest.raises(ConfigError, match="peft sets it"):
        load_config({**fast_cfg, "lora": {"peft_type": "LORA"}})


def test_lora_from_a_peft_object_and_wrong_task_type(fast_cfg):
    from peft import LoraConfig, TaskType

    from nbtrain.config import load_config
    from nbtrain.errors import ConfigError

    obj = LoraConfig(
        r=4, lora_alpha=16, target_modules=["query"], task_type=TaskType.SEQ_CLS, use_rslora=True
    )
    cfg = load_config({**fast_cfg, "lora": obj})
    assert cfg.lora.r == 4 and cfg.lora.alpha == 16 and cfg.lora.dropout == 0.0
    assert cfg.lora.peft_args == {"task_type": "SEQ_CLS", "use_rslora": True}
    with pytest.raises(ConfigError, match=r"lora\.task_type: 'CAUSAL_LM' does not fit"):
        nbtrain.finetune({**fast_cfg, "lora": {"task_type": "CAUSAL_LM"}}, display="none")


# -- resume_from_checkpoint -------------------------------------------------------------------


def _resume_cfg(tiny_bert: Path, sentiment_csv: dict[str, Path], runs: Path, name: str) -> dict:
    return {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 2,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,  # 6 optimizer steps per epoch
        "lr": 1e-3,
        "runs_dir": str(runs),
        "name": name,
        "save_total_limit": None,
        "load_best_model_at_end": False,
    }


def _starts(run_dir: Path) -> list[tuple[int, str | None]]:
    from nbtrain.events import read_events

    return [(ev.step, ev.resumed_from) for ev in read_events(run_dir) if ev.type == "start"]


@pytest.mark.slow
def test_resume_from_an_older_checkpoint_of_the_run(tiny_bert, sentiment_csv, runs_dir):
    import torch

    from nbtrain.events import read_events

    cfg = _resume_cfg(tiny_bert, sentiment_csv, runs_dir, "older")
    first = nbtrain.finetune(cfg, display="none")
    straight = {k: v.clone() for k, v in first.model.state_dict().items()}
    run_dir = runs_dir / "older"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]

    for folder in ("checkpoint-12", "final"):  # gone after the resume: removed, not overwritten
        (run_dir / folder / "from-the-first-training").write_text("x")
    again = nbtrain.finetune(
        {**cfg, "resume_from_checkpoint": str(run_dir / "checkpoint-6")}, display="none"
    )
    assert again.status == "finished" and len(_starts(run_dir)) == 2  # trained again
    assert _starts(run_dir)[-1] == (6, str((run_dir / "checkpoint-6").resolve()))
    notices = [e.message for e in read_events(run_dir) if e.type == "notice"]
    assert any(
        "Resuming from checkpoint-6 (step 6) of this run; the training after it is replaced: "
        "checkpoint-12, final removed." in m
        for m in notices
    )
    assert not list(run_dir.glob("*/from-the-first-training"))
    # nbtrain's own checkpoint: the exact-resume guarantee holds (same weights, bit for bit)
    resumed = again.model.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)

    # The same cell once more: the run already went on from checkpoint-6; it is reused.
    third = nbtrain.finetune({**cfg, "resume_from_checkpoint": "checkpoint-6"}, display="none")
    assert third.status == "finished" and len(_starts(run_dir)) == 2


def _plain_trainer_checkpoint(tiny_bert: Path, sentiment_csv: dict[str, Path], out: Path) -> Path:
    """The tutorial's own Trainer run (no nbtrain): one epoch, a checkpoint at its end."""
    import pandas as pd
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    df = pd.read_csv(sentiment_csv["train"])
    df["label"] = (df["label"] == "pos").astype(int)
    ds = Dataset.from_pandas(df).map(lambda b: tok(b["text"], truncation=True), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=16,
        save_strategy="epoch",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
    )
    trainer.train()
    return out / "checkpoint-6"


@pytest.mark.slow
def test_resume_from_a_plain_trainer_checkpoint(tiny_bert, sentiment_csv, runs_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    ckpt = _plain_trainer_checkpoint(tiny_bert, sentiment_csv, tmp_path / "results")
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    saved = load_file(str(ckpt / "model.safetensors"))
    seen = {}

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            if "w" not in seen:
                seen["step"] = state.global_step
                seen["w"] = model.classifier.weight.detach().clone()

    cfg = {
        **_resume_cfg(tiny_bert, sentiment_csv, runs_dir, "from-plain"),
        "gradient_accumulation_steps": 1,
        "batch_size": 16,
        "resume_from_checkpoint": str(ckpt),
        "callbacks": [FirstStep()],
    }
    run = nbtrain.finetune(cfg, display="none")
    assert run.status == "finished"
    assert seen["step"] == 6 and (seen["w"] == saved["classifier.weight"]).all()
    assert _starts(run.output_dir) == [(6, str(ckpt.resolve()))]
    assert (run.output_dir / "checkpoint-12").is_dir()
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before  # only read

    # With checkpoints of its own, the run cannot also start from the outside one.
    other = tmp_path / "results2"
    shutil.copytree(ckpt.parent, other)
    with pytest.raises(nbtrain.ConfigError, match="would mix two trainings"):
        nbtrain.finetune(
            {**cfg, "resume_from_checkpoint": str(other / "checkpoint-6")}, display="none"
        )


def test_resume_from_a_missing_or_incomplete_checkpoint(fast_cfg, tmp_path):
    (tmp_path / "results" / "checkpoint-500").mkdir(parents=True)
    (tmp_path / "results" / "checkpoint-500" / "trainer_state.json").write_text("{}")
    with pytest.raises(nbtrain.ConfigError) as e:
        nbtrain.finetune(
            {**fast_cfg, "resume_from_checkpoint": str(tmp_path / "results" / "checkpoint-1000")},
            display="none",
        )
    assert "does not exist" in str(e.value) and "checkpoint-500" in str(e.value)
    with pytest.raises(nbtrain.ConfigError) as e:
        nbtrain.finetune(
            {**fast_cfg, "resume_from_checkpoint": str(tmp_path / "results" / "checkpoint-500")},
            display="none",
        )
    assert "not a complete checkpoint (missing the model weights, optimizer.pt" in str(e.value)
    assert not (Path(fast_cfg["runs_dir"]) / fast_cfg["name"]).exists()  # nothing written


# -- logging_dir: ./logs and tensorboard --logdir ./logs --------------------------------------


@pytest.mark.slow
def test_logging_dir_is_where_tensorboard_logdir_finds_the_run(fast_cfg, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from nbtrain.events import read_events

    monkeypatch.chdir(tmp_path)
    cfg = {**fast_cfg, "epochs": 1, "report_to": ["tensorboard"], "logging_dir": "./logs"}
    run = nbtrain.finetune(cfg, display="none")
    assert run.status == "finished"
    # what `tensorboard --logdir ./logs` reads: one run per sub-folder, named after the run
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "logs"))
    mux.Reload()
    assert list(mux.Runs()) == ["tiny"]
    assert "train/loss" in mux.Runs()["tiny"]["scalars"]
    notices = [e.message for e in read_events(run.output_dir) if e.type == "notice"]
    assert any(
        "TensorBoard logs go to logs/tiny; see them with: tensorboard --logdir ./logs" in m
        for m in notices
    )


def test_logging_dir_without_tensorboard_says_so(fast_cfg):
    from nbtrain.config import load_config
    from nbtrain.engine.runner import _logging_dir_notice

    msg = _logging_dir_notice(load_config({**fast_cfg, "logging_dir": "./logs"}), Path("r/x"))
    assert "report_to does not name tensorboard" in msg


# -- callbacks given as classes ----------------------------------------------------------------


@pytest.fixture
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbtrain")
    return shell


def _cell(cfg: dict, *lines: str) -> str:
    import yaml

    return yaml.safe_dump(cfg, sort_keys=False) + "".join(line + "\n" for line in lines)


@pytest.mark.slow
def test_callback_class_runs_and_prints_inside_the_runs_output(ip, fast_cfg):
    import contextlib
    import io

    from transformers import TrainerCallback

    class CustomCallback(TrainerCallback):  # the tutorial's: a class, not an instance
        def on_epoch_end(self, args, state, control, **kwargs):
            print(f"CustomCallback: epoch {state.epoch:.0f} done at step {state.global_step}")

    ip.user_ns["CustomCallback"] = CustomCallback
    cfg = {k: v for k, v in fast_cfg.items() if k != "name"}
    cell = _cell(cfg, "callbacks: [{CustomCallback}]")
    both = io.StringIO()  # the cell's output: the text view (stderr) and prints (stdout)
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        ip.run_cell_magic("finetune", "cbrun --display text", cell)
    assert ip.user_ns["cbrun"].status == "finished"
    lines = both.getvalue().splitlines()
    prints = [i for i, line in enumerate(lines) if line.startswith("CustomCallback:")]
    assert [lines[i] for i in prints] == [
        "CustomCallback: epoch 1 done at step 6",
        "CustomCallback: epoch 2 done at step 12",
    ]
    # inside the run's output: after the view's training began, before its end line
    started = next(i for i, line in enumerate(lines) if line.startswith("Training cbrun"))
    ended = next(i for i, line in enumerate(lines) if line.startswith("Finished in"))
    assert started < prints[0] and prints[-1] < ended, lines


# -- hyperparameter search: hp_space(trial) and model_init ------------------------------------


def optuna_hp_space(trial):  # the tutorial's, verbatim
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", [16, 32, 64]
        ),
    }


def test_hp_space_function_reads_as_sweep_params():
    from nbtrain.config.hp_space import hp_space_params

    assert hp_space_params(optuna_hp_space) == {
        "learning_rate": {"low": 1e-6, "high": 1e-4, "log": True},
        "per_device_train_batch_size": [16, 32, 64],
    }

    def old_api(trial):
        return {
            "weight_decay": trial.suggest_uniform("weight_decay", 0.0, 0.1),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5, step=2),
            "seed": 7,
        }

    assert hp_space_params(old_api) == {
        "weight_decay": {"low": 0.0, "high": 0.1},
        "num_train_epochs": [1, 3, 5],
        "seed": [7],
    }


def test_hp_space_that_is_not_a_fixed_space_is_refused():
    from nbtrain.config.hp_space import hp_space_params
    from nbtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="computed from a suggestion"):
        hp_space_params(lambda t: {"per_device_train_batch_size": 2 ** t.suggest_int("k", 3, 6)})
    with pytest.raises(ConfigError, match=r"trial\.report"):
        hp_space_params(lambda t: t.report(0.5, 1))
    with pytest.raises(ConfigError, match="must return a dict"):
        hp_space_params(lambda t: None)


@pytest.mark.slow
def test_model_init_gives_the_model(fast_cfg, tiny_bert):
    from transformers import AutoModelForSequenceClassification

    calls = []

    def model_init(trial):  # the tutorial's signature
        calls.append(trial)
        return AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)

    run = nbtrain.finetune({**fast_cfg, "epochs": 1, "model_init": model_init}, display="none")
    assert run.status == "finished" and calls == [None]
    assert run.model.config.num_labels == 2
    with pytest.raises(nbtrain.ConfigError, match="model_init must be a function"):
        nbtrain.finetune({**fast_cfg, "model_init": "bert"}, display="none")


# -- report_to: ["wandb"] without wandb --------------------------------------------------------


def test_report_to_wandb_without_wandb_fails_before_training(fast_cfg, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(nbtrain.ConfigError) as e:
        nbtrain.finetune({**fast_cfg, "report_to": ["wandb"]}, display="none")
    msg = str(e.value)
    assert "\n" not in msg and "report_to: wandb" in msg and "pip install wandb" in msg
    assert not (Path(fast_cfg["runs_dir"]) / fast_cfg["name"]).exists()


def test_sweep_takes_hp_space_as_written():
    """`sweep: {hp_space: {optuna_hp_space}, direction: maximize, n_trials: 4}`."""
    from nbtrain.config import load_config

    cfg = load_config(
        {
            "model": "m",
            "data": {"train": "x.csv"},
            "sweep": {"hp_space": optuna_hp_space, "direction": "maximize", "n_trials": 4},
        }
    )
    assert cfg.sweep.trials == 4 and cfg.sweep.direction == "maximize"
    assert cfg.sweep.params == {
        "learning_rate": {"low": 1e-6, "high": 1e-4, "log": True},
        "per_device_train_batch_size": [16, 32, 64],
    }


# -- deepspeed: ds_config.json (the tutorial's, "auto" everywhere) ---------------------------


def test_deepspeed_on_cpu_is_refused_before_the_data_or_model_load(fast_cfg, tmp_path, monkeypatch):
    from nbtrain.engine import runner
    from nbtrain.engine.model import simulated_device
    from tests.test_distributed_config import TUTORIAL_DS

    (tmp_path / "ds_config.json").write_text(json.dumps(TUTORIAL_DS))

    def no_data(*a, **kw):
        raise AssertionError("the data was read before the DeepSpeed check")

    monkeypatch.setattr(runner, "prepare", no_data)
    with simulated_device("cpu"), pytest.raises(nbtrain.ConfigError) as e:
        nbtrain.finetune(
            {**fast_cfg, "deepspeed": str(tmp_path / "ds_config.json")}, display="none"
        )
    assert "DeepSpeed trains on CUDA GPUs" in str(e.value) and "checked out" in str(e.value)
    assert not (Path(fast_cfg["runs_dir"]) / fast_cfg["name"]).exists()  # nothing written
    # a batch size that disagrees with the config is named before any work, too
    (tmp_path / "ds_config.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 4}))
    with simulated_device("cpu"), pytest.raises(nbtrain.ConfigError, match="is 4 but the config"):
        nbtrain.finetune(
            {**fast_cfg, "deepspeed": str(tmp_path / "ds_config.json")}, display="none"
        )


def test_deepspeed_config_is_passed_to_the_trainer_on_gpu(fast_cfg, tmp_path, monkeypatch):
    import importlib.util

    from nbtrain.config import load_config
    from nbtrain.engine.distributed import process_kwargs
    from tests.test_distributed_config import TUTORIAL_DS

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "deepspeed" else real(n, *a)
    )
    (tmp_path / "ds_config.json").write_text(json.dumps(TUTORIAL_DS))
    cfg = load_config(
        {**fast_cfg, "gradient_accumulation_steps": 4, "warmup_ratio": 0.1,
         "deepspeed": str(tmp_path / "ds_config.json")}
    )  # fmt: skip
    kwargs: dict = {"deepspeed": str(tmp_path / "ds_config.json")}
    process_kwargs(
        cfg, kwargs, task="text-classification", world=1, precision="bf16",
        device_kind="cuda", total_steps=50,
    )  # fmt: skip
    ds = kwargs["deepspeed"]  # the resolved settings, not the file name, reach TrainingArguments
    assert isinstance(ds, dict) and ds["zero_optimization"]["stage"] == 2
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 64 and ds["bf16"]["enabled"] is True
    assert ds["scheduler"]["params"]["total_num_steps"] == 50
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 5


# -- warnings: nbtrain's calls raise none (tests/test_warnings.py); the user's code still may ---


def test_a_warning_from_the_users_code_still_shows(fast_cfg):
    import warnings

    from transformers import TrainerCallback

    class Warns(TrainerCallback):
        def on_train_end(self, args, state, control, **kw):
            warnings.warn("the user's own FutureWarning", FutureWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        run = nbtrain.finetune({**fast_cfg, "epochs": 1, "callbacks": [Warns]}, display="none")
    assert run.status == "finished"
    assert [str(w.message) for w in caught if w.category is FutureWarning] == [
        "the user's own FutureWarning"
    ]
