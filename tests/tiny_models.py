"""Tiny language models built from configs, with tokenizers trained in memory (no hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red"}


def bpe_tokenizer(texts: list[str], specials: list[str], **special_map: str) -> Any:
    """A GPT-2 style byte-level BPE tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=128, **special_map)


def instruction_rows(n: int) -> list[dict[str, str]]:
    things = list(COLOURS)
    return [
        {"prompt": f"Q: colour of {things[i % 5]}? A:", "response": f" {COLOURS[things[i % 5]]}"}
        for i in range(n)
    ]


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"colour of {t}?"},
                {"role": "assistant", "content": COLOURS[t]},
            ]
        }
        for t in (list(COLOURS)[i % 5] for i in range(n))
    ]


def corpus() -> list[str]:
    rows = instruction_rows(5)
    base = [r["prompt"] + r["response"] for r in rows]
    return base + [f"the {t} is {c} . " * 3 for t, c in COLOURS.items()]


def build_tiny_gpt2(folder: Path) -> Path:
    """GPT-2 (2 layers, hidden 32) with a byte-level BPE tokenizer and no chat template."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = bpe_tokenizer(
        corpus(), ["<|endoftext|>"], eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_llama(folder: Path) -> Path:
    """Llama (2 layers, hidden 32) with a chat template and its own special tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    specials = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = bpe_tokenizer(corpus(), specials, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_t5(folder: Path, texts: list[str]) -> Path:
    """T5 (2+2 layers, d_model 32) with a BPE tokenizer that appends </s>."""
    import torch
    from tokenizers import processors
    from transformers import T5Config, T5ForConditionalGeneration

    tok = bpe_tokenizer(texts, ["<pad>", "</s>", "<unk>"], pad_token="<pad>",
                        eos_token="</s>", unk_token="<unk>")  # fmt: skip
    eos = tok.eos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=eos,
        decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def events_of(run_dir: Path, kind: str) -> list[Any]:
    from nbtrain.events import read_events

    return [e for e in read_events(run_dir) if e.type == kind]
