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
            return (loss, outputs) if return_outputs else loss

    return CustomTrainer


def test_old_signature_compute_loss_runs_as_written(fast_cfg):
    trainer_cls = _old_signature_trainer([1.0, 2.0])
    run = nbtrain.finetune(
        {**fast_cfg, "epochs": 1, "gradient_accumulation_steps": 2, "trainer_class": trainer_cls},
        display="none",
    )
    assert run.status == "finished"
    assert trainer_cls.calls >= 6  # 96 rows / 16 per micro-step, and the evaluations
    assert run.metrics["train_loss"] < 1.5  # a per-example mean, not summed over micro-steps


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
