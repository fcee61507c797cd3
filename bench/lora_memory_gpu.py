"""GPU check of the memory estimate: full fine-tune vs LoRA vs LoRA + gradient checkpointing.

    HF_HUB_OFFLINE=1 python bench/lora_memory_gpu.py            # a BERT-large-sized model, bf16
    HF_HUB_OFFLINE=1 python bench/lora_memory_gpu.py --smoke    # tiny, any device (a self-check)

Builds a ~335M-parameter BERT from a config (24 layers, hidden 1024; no download), trains each
variant for a few steps through ``nbtrain.finetune`` on synthetic text where every example is
``max_length`` tokens, and prints one table: peak GPU memory (``torch.cuda.max_memory_allocated``
and ``max_memory_reserved``) against the estimate's ``model_bytes``, and tokens/s. Writes the
rows as JSON to ``$OUT/lora_memory_gpu.json`` when ``OUT`` is set.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

VARIANTS = {
    "full": {},
    "lora": {"lora": {"r": 16, "alpha": 32}},
    "lora+gc": {"lora": {"r": 16, "alpha": 32}, "gradient_checkpointing": True},
}


def build(folder: Path, hidden: int, layers: int, heads: int, max_length: int) -> None:
    from conftest import FILLER, NEGATIVE, POSITIVE, make_wordpiece_tokenizer
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        set(POSITIVE + NEGATIVE + FILLER)
    )
    make_wordpiece_tokenizer(vocab, model_max_length=max_length).save_pretrained(folder)
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(512, max_length),
    )
    model = BertModel(config)
    model.config.architectures = ["BertModel"]
    model.save_pretrained(folder)
    rng = random.Random(0)
    words = POSITIVE + NEGATIVE + FILLER
    rows = ["text,label"] + [
        " ".join(rng.choice(words) for _ in range(2 * max_length)) + f",{i % 2}" for i in range(512)
    ]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")


def main() -> None:
    import torch
    import transformers

    import nbtrain
    from nbtrain.config import load_config
    from nbtrain.engine.memory import estimate_memory
    from nbtrain.engine.model import device_info
    from nbtrain.format import fmt_bytes

    smoke = "--smoke" in sys.argv
    hidden, layers, heads = (64, 2, 2) if smoke else (1024, 24, 16)
    batch, max_length, steps = (4, 64, 3) if smoke else (16, 512, 20)
    cuda = torch.cuda.is_available()
    dev = device_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        build(folder, hidden, layers, heads, max_length)
        for name, extra in VARIANTS.items():
            cfg = load_config(
                {
                    "model": str(folder),
                    "data": {"train": str(folder / "train.csv"), "eval_split": 0,
                             "max_length": max_length},
                    "task": "text-classification",
                    "batch_size": batch,
                    "max_steps": steps,
                    "save_strategy": "no",
                    "group_by_length": False,
                    "logging_steps": 5,
                    "runs_dir": str(Path(tmp) / "runs"),
                    "name": name,
                    **extra,
                }
            )  # fmt: skip
            est = estimate_memory(
                cfg, transformers.AutoConfig.from_pretrained(folder), dev, suggest=False
            )
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            result = nbtrain.finetune(cfg, display="none")
            wall = time.time() - t0
            row = {
                "variant": name,
                "device": dev.label,
                "precision": est.precision,
                "params": est.params_total,
                "trainable": est.params_trainable,
                "estimate_bytes": est.model_bytes,
                "estimate_parts": dict(est.rows()),
                "peak_allocated": torch.cuda.max_memory_allocated() if cuda else None,
                "peak_reserved": torch.cuda.max_memory_reserved() if cuda else None,
                "tokens_per_s": result.metrics.get("train_samples_per_second", 0) * max_length,
                "wall_s": wall,
            }
            rows.append(row)
            print(
                f"{name:<8} params {row['params'] / 1e6:7.1f}M trainable "
                f"{row['trainable'] / 1e6:7.2f}M  estimate {fmt_bytes(row['estimate_bytes']):>9}  "
                f"peak alloc {fmt_bytes(row['peak_allocated']):>9}  reserved "
                f"{fmt_bytes(row['peak_reserved']):>9}  {row['tokens_per_s']:,.0f} tok/s",
                flush=True,
            )
            del result
    out = os.environ.get("OUT")
    if out:
        Path(out, "lora_memory_gpu.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
