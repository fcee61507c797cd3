"""LoRA via peft: tiny BERT, GPT-2, T5, Llama and DistilBERT built from configs, no hub."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from nbtrain.config.schema import Config, LoraConfig
from nbtrain.errors import ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


def _cfg(**lora) -> Config:
    return Config(model="x", lora=LoraConfig(**lora))


def tiny(arch: str):
    import transformers as t

    torch.manual_seed(0)
    if arch == "bert":
        c = t.BertConfig(
            vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64, num_labels=3,
        )  # fmt: skip
        return t.BertForSequenceClassification(c), "text-classification"
    if arch == "gpt2":
        c = t.GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=2, n_positions=64)
        c.pad_token_id = 0
        return t.GPT2ForSequenceClassification(c), "text-classification"
    if arch == "gpt2-lm":
        c = t.GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=2, n_positions=64)
        return t.GPT2LMHeadModel(c), "causal-lm"
    if arch == "t5":
        c = t.T5Config(
            vocab_size=60, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
            decoder_start_token_id=0,
        )  # fmt: skip
        return t.T5ForConditionalGeneration(c), "seq2seq"
    if arch == "llama":
        c = t.LlamaConfig(
            vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        )  # fmt: skip
        return t.LlamaForCausalLM(c), "causal-lm"
    if arch == "distilbert":
        c = t.DistilBertConfig(
            vocab_size=60, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
            max_position_embeddings=64,
        )  # fmt: skip
        return t.DistilBertForSequenceClassification(c), "text-classification"
    raise ValueError(arch)


def _inputs(arch: str) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 60, (2, 7), generator=g)
    kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if arch == "t5":
        kw["decoder_input_ids"] = torch.randint(3, 60, (2, 5), generator=g)
    return kw


def _out(model, arch: str):
    model.eval()
    with torch.no_grad():
        return model(**_inputs(arch)).logits


def _randomize_lora(model) -> None:
    # lora_B starts at zero (the adapter is a no-op): give it weights so the tests can fail.
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize(
    ("arch", "targets", "heads"),
    [
        ("bert", ["query", "value"], ["classifier"]),
        ("gpt2", ["c_attn"], ["score"]),
        ("gpt2-lm", ["c_attn"], []),
        ("t5", ["q", "v"], []),
        ("llama", ["q_proj", "k_proj", "v_proj", "o_proj"], []),
        ("distilbert", ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
    ],
)
def test_lora_trains_only_adapters_and_head(arch, targets, heads):
    from nbtrain.engine.lora import apply_lora
    from nbtrain.engine.model import count_parameters

    model, task = tiny(arch)
    total_before, _ = count_parameters(model)
    pm = apply_lora(model, _cfg(r=4), task)
    assert pm.peft_config["default"].target_modules == set(targets)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable, "nothing trains"
    for n in trainable:
        assert "lora_" in n or "modules_to_save" in n, n
    # every target got an adapter, every head trains in full
    for t in targets:
        assert any(f".{t}.lora_A" in n for n in trainable), t
    for h in heads:
        assert any(f"{h}.modules_to_save" in n for n in trainable), h
    total, n_train = count_parameters(pm)
    assert total > total_before and 0 < n_train < 0.5 * total


def test_lora_changes_nothing_until_trained_and_merge_equals_adapter():
    from nbtrain.engine.lora import apply_lora

    for arch in ("bert", "gpt2", "t5"):
        model, task = tiny(arch)
        base_out = _out(model, arch)
        pm = apply_lora(model, _cfg(r=4, dropout=0.0), task)
        if arch != "bert":  # (bert/gpt2 cls heads are copies: same outputs before training)
            assert torch.allclose(_out(pm, arch), base_out, atol=1e-6)
        _randomize_lora(pm)
        adapted = _out(pm, arch)
        assert not torch.allclose(adapted, base_out, atol=1e-3), arch
        merged = copy.deepcopy(pm).merge_and_unload()
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(_out(merged, arch), adapted, atol=1e-5), arch


def test_adapter_save_load_roundtrip(tmp_path: Path):
    import transformers as t

    from nbtrain.engine.lora import (
        apply_lora,
        is_adapter_dir,
        load_adapter_model,
        merge_adapter,
        save_base_config,
    )

    model, task = tiny("bert")
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    model = t.AutoModelForSequenceClassification.from_pretrained(base_dir)
    pm = apply_lora(model, _cfg(r=4, dropout=0.0), task)
    _randomize_lora(pm)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "modules_to_save" in n:
                p.add_(1.0)  # a trained head differs from the base's
    want = _out(pm, "bert")
    out = tmp_path / "final"
    pm.save_pretrained(out)
    save_base_config(pm, out)
    assert is_adapter_dir(out)
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 3
    loaded = load_adapter_model(out, "AutoModelForSequenceClassification")
    assert torch.allclose(_out(loaded, "bert"), want, atol=1e-6)
    merged_dir = merge_adapter(out, tmp_path / "merged", "AutoModelForSequenceClassification")
    plain = t.AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert type(plain).__name__ == "BertForSequenceClassification"
    assert torch.allclose(_out(plain, "bert"), want, atol=1e-5)


def test_auto_target_fallback_and_errors():
    from nbtrain.engine.lora import resolve_target_modules

    model, _ = tiny("bert")
    model.config.model_type = "my-bert-fork"  # unknown type: found by the layer names
    assert resolve_target_modules(model, "auto") == ["query", "value"]
    with pytest.raises(ConfigError) as e:
        resolve_target_modules(model, ["qery", "value"])
    msg = str(e.value)
    assert "'qery'" in msg and "query" in msg and "dense" in msg and "key" in msg
    assert e.value.field == "lora.target_modules"

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj_in = torch.nn.Linear(4, 4)
            self.proj_out = torch.nn.Linear(4, 2)

    with pytest.raises(ConfigError, match="proj_in, proj_out"):
        resolve_target_modules(Odd(), "auto")
    assert resolve_target_modules(Odd(), ["proj_in"]) == ["proj_in"]


def test_bad_modules_to_save_and_double_wrap():
    from nbtrain.engine.lora import apply_lora

    model, task = tiny("bert")
    with pytest.raises(ConfigError, match=r"modules_to_save.*'pooler_x'"):
        apply_lora(model, _cfg(modules_to_save=["pooler_x"]), task)
    pm = apply_lora(model, _cfg(), task)
    with pytest.raises(ConfigError, match="already carries peft adapters"):
        apply_lora(pm, _cfg(), task)


def test_gradient_checkpointing_with_lora_backprops():
    from nbtrain.engine.lora import apply_lora

    model, task = tiny("bert")
    cfg = _cfg(r=4)
    cfg.gradient_checkpointing = True
    pm = apply_lora(model, cfg, task)
    # transformers 5 renamed it (the old name is a FutureWarning); 4.x has only the old one
    if hasattr(pm, "activation_checkpointing_enable"):
        pm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        pm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pm.train()
    out = pm(**_inputs("bert"), labels=torch.tensor([0, 1]))
    out.loss.backward()
    # lora_B starts at zero, so lora_A's first gradient is zero; lora_B's is not.
    grads = [p.grad for n, p in pm.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


# -- a real run through nbtrain.finetune ----------------------------------------------------


@pytest.mark.slow  # ~10-35 s on the shared 2-core machine
def test_finetune_with_lora_writes_adapter_and_exports(fast_cfg, tmp_path: Path):
    import transformers as t

    import nbtrain
    from nbtrain.api import load_run
    from nbtrain.cli import main

    events = []
    # A random tiny BERT frozen under adapters learns slowly: a higher LR, no warmup, no
    # per-epoch evaluation (one at the end) keeps this fast.
    cfg = dict(
        fast_cfg, lora={"r": 8, "alpha": 16}, lr=3e-2, max_steps=40, warmup_ratio=0.0,
        logging_steps=1, eval_strategy="no", save_strategy="no",
    )  # fmt: skip
    result = nbtrain.finetune(cfg, display="none", on_event=events.append)
    assert result.status == "finished"
    final = result.final_dir
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= names
    assert "model.safetensors" not in names

    start = next(e for e in events if e.type == "start")
    assert 0 < start.params_trainable < 0.2 * start.params_total
    lora_params = sum(p.numel() for n, p in result.model.named_parameters() if p.requires_grad)
    assert start.params_trainable == lora_params

    losses = [e.values["loss"] for e in events if e.type == "log" and "loss" in e.values]
    first, last = sum(losses[:4]) / 4, sum(losses[-8:]) / 8
    assert len(losses) == 40 and last < first - 0.02, losses
    assert result.metrics["eval_loss"] < 0.66  # chance is ln 2 = 0.693

    texts = ["a great and lovely film", "an awful boring plot"]
    want = result.predict(texts)
    fresh = load_run("tiny", runs_dir=cfg["runs_dir"])  # loads base + adapter from disk
    got = fresh.predict(texts)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want):
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)

    merged = fresh.export(tmp_path / "merged")
    plain = t.AutoModelForSequenceClassification.from_pretrained(merged)
    tok = t.AutoTokenizer.from_pretrained(merged)
    batch = tok(texts, return_tensors="pt", padding=True)
    adapter_model = fresh.model.eval()
    with torch.no_grad():
        a = adapter_model(**batch).logits
        b = plain.eval()(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert plain.config.id2label == adapter_model.get_base_model().config.id2label

    # the CLI does the same; a folder that is not an export is refused
    out = tmp_path / "cli-merged"
    assert (
        main(["export", "tiny", "--merge", "--out", str(out), "--runs-dir", cfg["runs_dir"]]) == 0
    )
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    assert main(["export", "tiny", "--out", str(tmp_path / "other"),
                 "--runs-dir", cfg["runs_dir"]]) == 2  # fmt: skip
