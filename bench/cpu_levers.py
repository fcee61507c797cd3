"""Rank CPU training levers on MiniLM-L6 with a whole training step (forward, backward,
clipping, optimizer) at real SST-2 batch shapes, interleaved in ONE process so a shared
machine's load hits every variant alike (compare ratios, not absolutes).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_levers.py                  # every lever
    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_levers.py --only base,sdpa,eager --rounds 5

Each variant trains on the same length-grouped batches of the real SST-2 training rows (the
first ``--batches`` batches of nbtrain's sampler order, batch 16), ``--rounds`` times
interleaved; the median seconds per step and the ratio to ``base`` are printed and written to
bench/results/cpu-levers-<time>.json. Compile variants report their compile time (the first
pass over every batch shape) apart from the steady-state step time.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
SST2 = Path(os.environ.get("NBTRAIN_SST2", "/work/shared/data/sst2"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def batches(n: int, batch: int = 16, seed: int = 42) -> list[dict[str, Any]]:
    import pandas as pd
    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from nbtrain.engine.model import packaged_model_path

    tok = AutoTokenizer.from_pretrained(packaged_model_path(MODEL))
    df = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3)
    enc = tok(df["sentence"].tolist(), truncation=True)["input_ids"]
    labels = df["label"].tolist()
    lengths = [len(x) for x in enc]
    order = get_length_grouped_indices(
        lengths, batch, generator=torch.Generator().manual_seed(seed)
    )
    starts = list(range(0, len(order) - batch + 1, batch))
    stride = max(1, len(starts) // n)  # evenly spread over the epoch: every length shows
    out = []
    for i in starts[::stride][:n]:
        idx = order[i : i + batch]
        m = max(lengths[j] for j in idx)
        ids = torch.zeros(len(idx), m, dtype=torch.long)
        mask = torch.zeros(len(idx), m, dtype=torch.long)
        for r, j in enumerate(idx):
            ids[r, : lengths[j]] = torch.tensor(enc[j])
            mask[r, : lengths[j]] = 1
        out.append(
            {
                "input_ids": ids,
                "attention_mask": mask,
                "labels": torch.tensor([labels[j] for j in idx]),
            }
        )
    return out


def load(attn: str = "sdpa") -> Any:
    from transformers import AutoModelForSequenceClassification

    from nbtrain.engine.model import packaged_model_path

    return AutoModelForSequenceClassification.from_pretrained(
        packaged_model_path(MODEL), num_labels=2, attn_implementation=attn
    )


def pad_batch(b: dict[str, Any], multiple: int) -> dict[str, Any]:
    import torch

    n = b["input_ids"].shape[1]
    m = -(-n // multiple) * multiple
    if m == n:
        return b
    pad = m - n
    return {
        "input_ids": torch.nn.functional.pad(b["input_ids"], (0, pad)),
        "attention_mask": torch.nn.functional.pad(b["attention_mask"], (0, pad)),
        "labels": b["labels"],
    }


class Variant:
    """One way to run a training step."""

    def __init__(self, name: str, spec: dict[str, Any], base_model: Any) -> None:
        import torch

        self.name, self.spec = name, spec
        attn = spec.get("attn", "sdpa")
        self.model = load(attn) if attn != "sdpa" else copy.deepcopy(base_model)
        self.model.train()
        if spec.get("no_dropout"):
            for m in self.model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
        params = self.model.parameters()
        emb = self.model.get_input_embeddings()
        if spec.get("freeze"):
            emb.weight.requires_grad_(False)
        opt_kind = spec.get("optim", "fused")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        from nbtrain.engine.row_adamw import RowAdamW, clip_grad_norm

        self.clip_fn = torch.nn.utils.clip_grad_norm_
        if spec.get("sparse"):  # what sparse_embeddings does: sparse gradient, RowAdamW
            emb.sparse = True
            self.opt = RowAdamW(trainable, lr=5e-5, weight_decay=0.01, fused=True)
            self.clip_fn = clip_grad_norm
        else:
            kw = {"fused": True} if opt_kind == "fused" else {"foreach": opt_kind == "foreach"}
            self.opt = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.01, **kw)
        del params
        self.forward = self.model
        if spec.get("compile"):
            self.forward = torch.compile(self.model, dynamic=spec.get("dynamic"))
        self.multiple = spec.get("pad", 0)
        self.clip = spec.get("clip", 1.0)
        self.times: list[float] = []
        self.first: list[float] = []
        self.seen: set[int] = set()

    def step(self, b: dict[str, Any]) -> float:

        if self.multiple:
            b = pad_batch(b, self.multiple)
        t0 = time.perf_counter()
        out = self.forward(**b)
        out.loss.backward()
        if self.clip:
            self.clip_fn([p for p in self.model.parameters() if p.grad is not None], self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},  # the defaults before issue 16: sdpa, fused AdamW, clip 1.0, dropout 0.1
    "eager_attn": {"attn": "eager"},
    "foreach": {"optim": "foreach"},
    "forloop": {"optim": "forloop"},
    "no_clip": {"clip": 0.0},
    "frozen_emb": {"freeze": True},
    "sparse_emb": {"sparse": True},
    "no_dropout": {"no_dropout": True},
    "pad8": {"pad": 8},
    "compile_dyn": {"compile": True, "dynamic": True},
    "pad16": {"pad": 16},
    "compile_pad16": {"compile": True, "dynamic": False, "pad": 16},
    "eager_sparse": {"attn": "eager", "sparse": True},  # nbtrain's CPU defaults together
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results"))
    ns = ap.parse_args(argv)
    if not SST2.is_dir():
        print(f"SST-2 not found at {SST2}", file=sys.stderr)
        return 2
    import torch
    from transformers import logging

    logging.set_verbosity_error()
    if ns.threads:
        torch.set_num_threads(ns.threads)
    torch.manual_seed(0)
    data = batches(ns.batches)
    # The batches sampled: every ~13th of the first megabatch-ordered epoch, so all lengths show.
    lens = [b["input_ids"].shape[1] for b in data]
    print(f"batch lengths: {lens}; threads {torch.get_num_threads()}; load {os.getloadavg()}")
    base_model = load()
    names = [n for n in ns.only.split(",") if n]
    variants = [Variant(n, VARIANTS[n], base_model) for n in names]
    # Warm-up / compile pass: every batch shape once, timed apart.
    for v in variants:
        t0 = time.perf_counter()
        for b in data:
            v.step(b)
        v.warm_s = time.perf_counter() - t0
        print(f"  {v.name:<14} first pass {v.warm_s:6.1f}s", flush=True)
    for r in range(ns.rounds):
        # Interleaved batch by batch: a load change of a few seconds hits every variant alike.
        sums = {v.name: 0.0 for v in variants}
        for b in data:
            for v in variants:
                sums[v.name] += v.step(b)
        for v in variants:
            v.times.append(sums[v.name] / len(data))
        print(
            f"round {r + 1}: " + ", ".join(f"{v.name} {v.times[-1]:.3f}" for v in variants),
            flush=True,
        )
    base = statistics.median(variants[0].times)
    result = {}
    print(f"\n{'variant':<14} {'s/step':>8} {'x base':>8} {'first pass s':>13}")
    for v in variants:
        med = statistics.median(v.times)
        result[v.name] = {
            "s_per_step": med,
            "speedup": base / med,
            "first_pass_s": v.warm_s,
            "times": v.times,
        }
        print(f"{v.name:<14} {med:8.3f} {base / med:8.2f} {v.warm_s:13.1f}")
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"cpu-levers-{stamp}.json"
    payload = {
        "command": " ".join(["cpu_levers.py", *(argv or sys.argv[1:])]),
        "lengths": lens,
        "threads": torch.get_num_threads(),
        "load_avg_end": os.getloadavg(),
        "variants": result,
    }
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
