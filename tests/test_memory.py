"""The memory estimate: exact parameter counts, a sane breakdown, fixes that make it fit."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from nbtrain.config.schema import Config, LoraConfig
from nbtrain.engine.model import SIMULATED

torch = pytest.importorskip("torch")

CPU, T4, A100 = SIMULATED["cpu"], SIMULATED["t4"], SIMULATED["a100"]


def _configs():
    import transformers as t

    return {
        "bert": (
            t.BertConfig(
                vocab_size=500,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=128,
            ),
            "text-classification",
            "AutoModelForSequenceClassification",
        ),
        "gpt2": (
            t.GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=128),
            "causal-lm",
            "AutoModelForCausalLM",
        ),
        "t5": (
            t.T5Config(
                vocab_size=500,
                d_model=64,
                d_ff=128,
                d_kv=16,
                num_layers=2,
                num_heads=4,
                decoder_start_token_id=0,
            ),
            "seq2seq",
            "AutoModelForSeq2SeqLM",
        ),
    }


def _cfg(**kw) -> Config:
    max_length = kw.pop("max_length", 64)
    cfg = Config(model="x", **kw)
    cfg.data.max_length = max_length
    return cfg


@pytest.mark.parametrize("arch", ["bert", "gpt2", "t5"])
@pytest.mark.parametrize("lora", [False, True])
def test_parameter_counts_are_exact(arch: str, lora: bool):
    import transformers as t

    from nbtrain.engine.lora import apply_lora
    from nbtrain.engine.memory import estimate_memory
    from nbtrain.engine.model import count_parameters

    config, task, auto = _configs()[arch]
    cfg = _cfg(lora=LoraConfig(r=4) if lora else None)
    est = estimate_memory(cfg, config, CPU, task=task)
    model = getattr(t, auto).from_config(config)
    if lora:
        model = apply_lora(model, cfg, task)
    assert (est.params_total, est.params_trainable) == count_parameters(model)


def test_breakdown_full_fine_tune_fp32_cpu():
    from nbtrain.engine.memory import estimate_memory

    config, task, _ = _configs()["bert"]
    est = estimate_memory(_cfg(), config, CPU, task=task)
    n = est.params_total
    assert est.precision == "fp32"
    assert est.weights == 4 * n and est.gradients == 4 * n and est.optimizer == 8 * n
    assert est.activations > 0 and est.overhead > 0
    assert est.total_bytes == sum(b for _, b in est.rows())
    assert est.model_bytes == est.total_bytes - est.overhead


def test_breakdown_responds_to_each_option():
    from nbtrain.engine.memory import estimate_memory

    config, task, _ = _configs()["bert"]

    def est(**kw):
        return estimate_memory(_cfg(**kw), config, A100, task=task, suggest=False)

    base = est()
    assert base.precision == "bf16"
    n = base.params_total
    # mixed precision: fp32 master weights plus a 16-bit copy of the matmul weights
    assert 4 * n < base.weights < 6 * n
    assert est(optim="adamw_8bit").optimizer == 2 * n
    assert est(optim="adafactor").optimizer < base.optimizer / 4
    assert est(optim="sgd").optimizer == 0
    lora = est(lora=LoraConfig(r=8))
    assert lora.gradients < base.gradients / 5 and lora.optimizer < base.optimizer / 5
    deep = copy.deepcopy(config)
    deep.num_hidden_layers = 12
    full = estimate_memory(_cfg(), deep, A100, task=task, suggest=False)
    gc = estimate_memory(_cfg(gradient_checkpointing=True), deep, A100, task=task, suggest=False)
    assert gc.activations < full.activations / 3
    two = est(per_device_train_batch_size=32)
    assert two.activations == 2 * base.activations  # linear in the batch
    # fused attention on a GPU keeps no s x s matrix: linear in the length; on a CPU it does
    assert est(max_length=128).activations == 2 * base.activations
    cpu = [
        estimate_memory(_cfg(max_length=n), config, CPU, task=task, suggest=False).activations
        for n in (64, 128)
    ]
    assert cpu[1] > 2 * cpu[0]
    fp32 = est(precision="fp32")
    assert fp32.activations > 1.5 * base.activations
    q4 = est(lora=LoraConfig(r=8), quantization="4bit")
    assert q4.weights < lora.weights / 2


def test_lm_logits_count_for_causal_lm():
    from nbtrain.engine.memory import estimate_memory

    config, _, _ = _configs()["gpt2"]
    lm = estimate_memory(_cfg(), config, CPU, task="causal-lm", suggest=False)
    config.vocab_size = 5000
    lm_big = estimate_memory(_cfg(), config, CPU, task="causal-lm", suggest=False)
    assert lm_big.activations - lm.activations >= 16 * 64 * 4500 * 4


def _llama_1b():
    import transformers as t

    return t.LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
        num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
    )  # fmt: skip


def test_too_big_for_a_t4_offers_changes_that_fit():
    from nbtrain.engine.memory import estimate_memory

    est = estimate_memory(
        _cfg(per_device_train_batch_size=8, max_length=1024), _llama_1b(), T4, task="causal-lm"
    )
    assert 1.0e9 < est.params_total < 1.2e9  # TinyLlama-sized
    assert est.fits is False and est.total_bytes > T4.memory_bytes
    assert est.options, "no way out offered"
    assert all(o.fits and o.total_bytes <= T4.memory_bytes for o in est.options)
    changes = [o.change for o in est.options]
    assert any(c.startswith("lora") for c in changes)
    from nbtrain.display.report import memory_html, memory_lines

    text = "\n".join(memory_lines(est))
    assert "DOES NOT FIT" in text and "Changes that make it fit" in text
    assert changes[0] in text
    assert "does not fit" in memory_html(est)


def test_fits_on_a100_and_unknown_memory():
    from nbtrain.engine.memory import estimate_memory

    config, task, _ = _configs()["bert"]
    est = estimate_memory(_cfg(), config, A100, task=task)
    from nbtrain.display.report import memory_lines

    assert est.fits is True and "fits" in "\n".join(memory_lines(est))
    unknown = dataclasses.replace(CPU, memory_bytes=None)
    assert estimate_memory(_cfg(), config, unknown, task=task).fits is None


def test_estimate_from_a_model_object_and_bad_target():
    import transformers as t

    from nbtrain.engine.memory import estimate_memory
    from nbtrain.errors import ConfigError

    config, task, _ = _configs()["bert"]
    model = t.BertForSequenceClassification(config)
    est = estimate_memory(_cfg(), None, CPU, task=task, model=model)
    assert est.params_total == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="matches no Linear layer"):
        estimate_memory(_cfg(lora=LoraConfig(target_modules=["nope"])), config, CPU, task=task)
