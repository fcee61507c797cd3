"""Check the memory estimate against a real CPU run: peak RSS added by training vs estimate.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/memory_cpu.py [CASE ...]

Each case runs in its own process: imports first, then the RSS baseline, then a real
``nbtrain.finetune`` of a BERT built from a config (3 steps, every example max_length tokens).
The estimate's ``model_bytes`` (weights + gradients + optimizer + activations, without the
fixed runtime overhead) is compared with ``peak RSS - baseline RSS``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # name: (hidden, layers, heads, batch, max_length, extra config)
    "bert-11M-full": (256, 4, 4, 16, 128, {}),
    "bert-41M-full": (512, 8, 8, 8, 128, {}),
    "bert-41M-gc": (512, 8, 8, 16, 128, {"gradient_checkpointing": True}),
    "bert-11M-gc": (256, 4, 4, 64, 128, {"gradient_checkpointing": True}),
    "bert-110M-lora": (768, 12, 12, 8, 128, {"lora": {"r": 8}}),
}


def build(folder: Path, hidden: int, layers: int, heads: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import FILLER, NEGATIVE, POSITIVE, make_wordpiece_tokenizer
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        set(POSITIVE + NEGATIVE + FILLER)
    )
    make_wordpiece_tokenizer(vocab, model_max_length=512).save_pretrained(folder)
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )
    model = BertModel(config)
    model.config.architectures = ["BertModel"]
    model.save_pretrained(folder)
    rng = random.Random(0)
    words = POSITIVE + NEGATIVE + FILLER
    rows = ["text,label"] + [
        " ".join(rng.choice(words) for _ in range(600)) + f",{i % 2}" for i in range(64)
    ]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")


def child(folder: str, name: str) -> None:
    import gc
    import resource

    import accelerate  # noqa: F401
    import datasets  # noqa: F401 - imported before the baseline, like the run does
    import peft  # noqa: F401
    import psutil
    import torch  # noqa: F401
    import transformers
    from transformers import BertForSequenceClassification, Trainer  # noqa: F401

    import nbtrain
    from nbtrain.config import load_config
    from nbtrain.engine import runner  # noqa: F401
    from nbtrain.engine.memory import estimate_memory
    from nbtrain.engine.model import device_info

    *_, batch, max_length, extra = CASES[name]
    cfg = {
        "model": folder,
        "data": {"train": f"{folder}/train.csv", "eval_split": 0, "max_length": max_length},
        "task": "text-classification",
        "batch_size": batch,
        "max_steps": 3,
        "save_strategy": "no",
        "group_by_length": False,
        "runs_dir": tempfile.mkdtemp(),
        "name": "mem",
        **extra,
    }
    config = load_config(cfg)
    gc.collect()
    base = psutil.Process().memory_info().rss
    nbtrain.finetune(config, display="none")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = estimate_memory(
        config, transformers.AutoConfig.from_pretrained(folder), device_info(), suggest=False
    )
    print(
        json.dumps(
            {
                "case": name,
                "params": est.params_total,
                "trainable": est.params_trainable,
                "measured": peak - base,
                "estimate": est.model_bytes,
                "parts": dict(est.rows()),
            }
        )
    )


def main(names: list[str]) -> None:
    rows = []
    for name in names or list(CASES):
        hidden, layers, heads, *_ = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            folder.mkdir()
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--build",
                    str(folder),
                    str(hidden),
                    str(layers),
                    str(heads),
                ],
                check=True,
            )
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), name],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{r['case']:<16} params {r['params'] / 1e6:6.1f}M  trainable "
                f"{r['trainable'] / 1e6:6.2f}M  measured {r['measured'] / 2**20:7.0f} MB  "
                f"estimate {r['estimate'] / 2**20:7.0f} MB  ratio "
                f"{r['estimate'] / r['measured']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build(Path(sys.argv[2]), *map(int, sys.argv[3:6]))
    elif sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])
