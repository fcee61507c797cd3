"""The prepared GPU check: one script, a JSON and a markdown report.

    python bench/gpu.py                # on one GPU (about 8 minutes on an H100/H200)
    python bench/gpu.py --dry          # tiny sizes on CPU in seconds: CI runs it so it cannot rot
    python bench/gpu.py --out DIR      # where gpu.json and gpu.md go (default: $OUT or ./bench-out)

Sections (each one's errors are recorded in the report, not fatal to the others):

1. ``minilm``: MiniLM-L6 on SST-2 (``/work/shared/data/sst2``), one epoch: nbtrain's defaults
   (precision auto, fused optimizer where available) vs a hand-written ``Trainer`` with the same
   batch size and learning rate: samples/s and dev accuracy. ``--dry``: a 2-layer BERT on
   synthetic sentences.
2. ``sft``: LoRA SFT of a Llama-shaped model built from a config (random weights, ~0.5B
   parameters; no download) on mixed-length sequences (64-1024 tokens): real tokens/s and MFU
   (model FLOPs / the GPU's dense bf16 peak) for padded batches vs padding-free packing
   (``DataCollatorWithFlattening``), each with and without ``torch_compile``, and with Liger
   kernels when ``liger-kernel`` is installed.
3. ``memory``: nbtrain's memory estimate vs ``torch.cuda.max_memory_allocated`` for full,
   LoRA, LoRA + gradient checkpointing and QLoRA (when ``bitsandbytes`` is installed).
4. ``oom``: a batch that cannot fit must end with a finished run through nbtrain's own
   back-off (batch halved, accumulation doubled). ``--dry``: the out-of-memory is raised by a
   Trainer that fits 8 examples a batch (no real one on CPU).

FLOPs per real token (:func:`flops_per_token`): ``6 N`` for full training, ``4 N`` with LoRA
(no weight gradients for the frozen matrices), ``N`` the parameters of the matrix multiplies
(the input embedding is a lookup, not counted), plus attention ``12 L d s`` either way (its
two matmuls have no weights: the backward pass computes both operands' gradients), with
``s`` the mean sequence length (packed sequences attend only within themselves).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
SST2 = ROOT.parent / "shared" / "data" / "sst2"

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment (fp16 for T4, no bf16 there).
PEAKS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 125e12,
    "A10": 125e12,
    "T4": 65e12,
}


def flops_per_token(
    matmul_params: int, layers: int, hidden: int, mean_len: float, *, lora: bool
) -> float:
    """Training FLOPs per real token (the MFU numerator): weights 6 N (4 N with LoRA) plus
    attention scores and values 12 L d s, which LoRA does not make cheaper."""
    return (4 if lora else 6) * matmul_params + 12 * layers * hidden * mean_len


def peak_flops(name: str) -> float | None:
    for key, value in PEAKS.items():
        if key in name:
            return value
    return None


class StepTimer:
    """A TrainerCallback timing optimizer steps after a warm-up (compile, cuDNN autotune)."""

    def __init__(self, warmup: int) -> None:
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                timer.tick(state.global_step)

        self.callback = _CB()
        self.warmup = warmup
        self.t0: float | None = None
        self.steps = 0
        self.t1 = 0.0

    def tick(self, step: int) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if step == self.warmup:
            self.t0 = time.perf_counter()
        elif self.t0 is not None:
            self.steps = step - self.warmup
            self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self.t1 - self.t0) if self.t0 is not None else float("nan")


# -- 1. MiniLM on SST-2: nbtrain defaults vs a hand-written Trainer -----------------------------


def _sst2_or_synthetic(dry: bool, tmp: Path) -> tuple[str, str, str]:
    """(model, train file, dev file)."""
    if not dry and (SST2 / "train.tsv").is_file():
        return (
            "sentence-transformers/all-MiniLM-L6-v2",
            str(SST2 / "train.tsv"),
            str(SST2 / "dev.tsv"),
        )
    import pandas as pd
    from conftest import build_tiny_bert, make_texts

    model = build_tiny_bert(tmp / "tiny-bert")
    for name, n, seed in (("train", 96, 1), ("dev", 32, 2)):
        rows = [(t, int(lab == "pos")) for t, lab in make_texts(n, seed=seed)]
        pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(
            tmp / f"{name}.tsv", sep="\t", index=False
        )
    return str(model), str(tmp / "train.tsv"), str(tmp / "dev.tsv")


def bench_minilm(dry: bool, tmp: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    import nbtrain
    from nbtrain.config import load_config
    from nbtrain.engine.model import resolve_model_name

    model, train, dev = _sst2_or_synthetic(dry, tmp)
    cfg = load_config(
        {
            "model": model,
            "data": {"train": train, "eval": dev, "text": "sentence", "label": "label"},
            "epochs": 1,
            "runs_dir": str(tmp / "runs"),
            "name": "minilm-nbtrain",
            "save_strategy": "no",
        }
    )
    t0 = time.time()
    ours = nbtrain.finetune(cfg, display="none", restart=True)
    ours_wall = time.time() - t0
    out: dict[str, Any] = {
        "model": model,
        "nbtrain": {
            "samples_per_s": ours.metrics.get("train_samples_per_second"),
            "dev_accuracy": ours.metrics.get("eval_accuracy"),
            "wall_s": ours_wall,
            "precision": next(e.precision for e in ours.events if e.type == "start"),
        },
    }
    # The hand-written Trainer the usual tutorial has: fp32, static settings, same batch and lr.
    path = resolve_model_name(model)
    tok = AutoTokenizer.from_pretrained(path)
    read = lambda f: pd.read_csv(f, sep="\t")  # noqa: E731
    train_rows = read(train)
    dev_rows = read(dev)

    def encode(df: pd.DataFrame) -> Any:
        ds = Dataset.from_pandas(df[["sentence", "label"]].rename(columns={"label": "labels"}))
        return ds.map(
            lambda b: tok(b["sentence"], truncation=True), batched=True, remove_columns=["sentence"]
        )

    net = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = TrainingArguments(
        output_dir=str(tmp / "plain"),
        num_train_epochs=1,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=64,
        learning_rate=cfg.learning_rate,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=dry,
    )
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=encode(train_rows),
        eval_dataset=encode(dev_rows),
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=lambda p: {
            "accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())
        },
    )
    t0 = time.time()
    m = trainer.train().metrics
    ev = trainer.evaluate()
    out["trainer"] = {
        "samples_per_s": m.get("train_samples_per_second"),
        "dev_accuracy": ev.get("eval_accuracy"),
        "wall_s": time.time() - t0,
        "precision": "fp32",
    }
    return out


# -- 2. LoRA SFT on a ~0.5B Llama: padded vs packed, compile, Liger -----------------------------


def _llama(dry: bool) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if dry:
        conf = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, vocab_size=512)  # fmt: skip
    else:
        conf = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, num_key_value_heads=16, vocab_size=32000)  # fmt: skip
    config = LlamaConfig(max_position_embeddings=2048, **conf)
    cuda = torch.cuda.is_available()
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if cuda:
        model = model.to(torch.bfloat16)
    return model


def _sequences(n: int, vocab: int, lo: int, hi: int) -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


class _PadCollator:
    """Right-padded batches with labels -100 on the padding (what a padded SFT batch is)."""

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def bench_sft(dry: bool, tmp: Path) -> dict[str, Any]:
    import importlib.util

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    batch, steps, warmup = (2, 4, 1) if dry else (8, 30, 5)
    lo, hi = (8, 64) if dry else (64, 1024)
    variants = [("padded", False, False), ("packed", True, False)]
    variants += [("padded+compile", False, True), ("packed+compile", True, True)]
    if dry:
        variants = variants[:2]  # torch.compile on CPU takes minutes: the GPU run covers it
    liger = importlib.util.find_spec("liger_kernel") is not None
    if liger:
        variants.append(("packed+liger", True, False))
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_flops(name) if cuda else None
    rows = []
    for label, packed, compiled in variants:
        model = _llama(dry)
        n_params = sum(p.numel() for p in model.parameters())
        matmul_params = n_params - model.get_input_embeddings().weight.numel()
        cfgd = model.config
        model = get_peft_model(
            model,
            LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                       "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"),
        )  # fmt: skip
        seqs = _sequences(batch * (steps + 1), cfgd.vocab_size, lo, hi)
        ds = Dataset.from_dict({"input_ids": seqs})
        timer = StepTimer(warmup)
        args = TrainingArguments(
            output_dir=str(tmp / f"sft-{label}"),
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-4,
            bf16=cuda,
            save_strategy="no",
            report_to="none",
            logging_steps=10**6,
            disable_tqdm=True,
            remove_unused_columns=False,
            torch_compile=compiled,
            use_liger_kernel=label.endswith("liger"),
            use_cpu=not cuda,
            dataloader_drop_last=True,
        )
        collator = DataCollatorWithFlattening() if packed else _PadCollator()
        trainer = Trainer(
            model=model, args=args, train_dataset=ds, data_collator=collator,
            callbacks=[timer.callback],
        )  # fmt: skip
        row: dict[str, Any] = {"variant": label, "params": n_params}
        try:
            trainer.train()
            measured = seqs[warmup * batch : (warmup + timer.steps) * batch]
            real_tokens = sum(len(s) for s in measured)
            mean_len = real_tokens / max(1, len(measured))
            flops_tok = flops_per_token(
                matmul_params, cfgd.num_hidden_layers, cfgd.hidden_size, mean_len, lora=True
            )
            tps = real_tokens / timer.seconds
            row.update(
                tokens_per_s=tps,
                steps_timed=timer.steps,
                mfu=(tps * flops_tok / peak) if peak else None,
                peak_memory=torch.cuda.max_memory_allocated() if cuda else None,
            )
        except Exception as e:  # e.g. compile unavailable: a row that says so
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rows.append(row)
        del trainer, model
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    by = {r["variant"]: r for r in rows}
    speedup = None
    if by.get("packed", {}).get("tokens_per_s") and by.get("padded", {}).get("tokens_per_s"):
        speedup = by["packed"]["tokens_per_s"] / by["padded"]["tokens_per_s"]
    return {"device": name, "peak_flops": peak, "liger": liger, "rows": rows,
            "packing_speedup": speedup}  # fmt: skip


# -- 3. memory estimate vs measured; 4. OOM back-off ----------------------------------------


def bench_memory(dry: bool, tmp: Path) -> dict[str, Any]:
    import importlib.util

    import torch
    import transformers
    from lora_memory_gpu import build

    import nbtrain
    from nbtrain.config import load_config
    from nbtrain.engine.memory import estimate_memory
    from nbtrain.engine.model import device_info

    cuda = torch.cuda.is_available()
    hidden, layers, heads = (64, 2, 2) if dry else (1024, 24, 16)
    batch, max_length, steps = (4, 64, 2) if dry else (16, 512, 5)
    folder = tmp / "bert"
    folder.mkdir()
    build(folder, hidden, layers, heads, max_length)
    variants: dict[str, dict[str, Any]] = {
        "full": {},
        "lora": {"lora": {"r": 16}},
        "lora+gc": {"lora": {"r": 16}, "gradient_checkpointing": True},
    }
    if cuda and importlib.util.find_spec("bitsandbytes") is not None:
        variants["qlora-4bit"] = {"lora": {"r": 16}, "quantization": "4bit"}
    dev = device_info()
    rows = []
    for name, extra in variants.items():
        cfg = load_config(
            {
                "model": str(folder),
                "data": {"train": str(folder / "train.csv"), "eval_split": 0,
                         "max_length": max_length},
                "task": "text-classification", "batch_size": batch, "max_steps": steps,
                "save_strategy": "no", "group_by_length": False,
                "runs_dir": str(tmp / "runs"), "name": f"mem-{name}", **extra,
            }
        )  # fmt: skip
        est = estimate_memory(cfg, transformers.AutoConfig.from_pretrained(folder), dev,
                              suggest=False)  # fmt: skip
        row = {"variant": name, "estimate_bytes": est.model_bytes, "measured_bytes": None}
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            nbtrain.finetune(cfg, display="none", restart=True)
            row["measured_bytes"] = torch.cuda.max_memory_allocated()
            row["ratio"] = row["estimate_bytes"] / row["measured_bytes"]
        rows.append(row)
    if not cuda:
        return {"rows": rows, "note": "estimates only: measuring needs CUDA"}
    return {"rows": rows}


def _fits_at_most(n: int) -> type:
    """``--dry``: a Trainer that raises CUDA's out-of-memory error above ``n`` examples a batch
    (there is no real one on CPU), so the section's path through nbtrain runs in CI."""
    import torch
    from transformers import Trainer

    class FitsAtMost(Trainer):
        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if model.training and inputs["input_ids"].shape[0] > n:
                raise torch.OutOfMemoryError(  # CUDA's words, which the Trainer's retry knows
                    f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated: batch above {n})"
                )
            return super().compute_loss(model, inputs, *args, **kwargs)

    return FitsAtMost


def bench_oom(dry: bool, tmp: Path) -> dict[str, Any]:
    """A batch that cannot fit must end with a finished run through **nbtrain's** back-off
    (batch halved, accumulation doubled, effective batch kept: docs/failures.md). Not
    ``auto_find_batch_size``: that is the Trainer's own retry (batch x 0.9, effective batch
    lost), which catches the out-of-memory before nbtrain sees it."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not dry:
        return {"skipped": "a real out-of-memory needs a GPU"}
    from lora_memory_gpu import build

    import nbtrain

    folder = tmp / "bert-oom"
    folder.mkdir()
    extra: dict[str, Any] = {}
    if cuda:  # ~0.3-0.6 GB of activations per sample at 512 tokens: 4096 fit on no GPU
        build(folder, 1024, 24, 16, 512)
        batch, max_length, steps = 4096, 512, 2
        free: int | None = torch.cuda.mem_get_info()[0]
    else:
        build(folder, 64, 2, 2, 64)
        batch, max_length, steps, free = 64, 64, 3, None
        extra["trainer_class"] = _fits_at_most(8)
    rows = (folder / "train.csv").read_text().splitlines()
    body = rows[1:] * (batch // len(rows[1:]) + 1)  # a whole first batch of the size asked
    (folder / "train.csv").write_text("\n".join([rows[0], *body[:batch]]) + "\n")
    res = nbtrain.finetune(
        {
            "model": str(folder), "task": "text-classification",
            "data": {"train": str(folder / "train.csv"), "eval_split": 0,
                     "max_length": max_length},
            "batch_size": batch, "max_steps": steps, "save_strategy": "no",
            "runs_dir": str(tmp / "runs"), "name": "oom", **extra,
        },
        display="none",
    )  # fmt: skip
    events = res.events
    backoff = [
        [e.data["per_device_train_batch_size"], e.data["gradient_accumulation_steps"]]
        for e in events
        if e.type == "notice" and e.kind == "oom" and e.data.get("phase") == "train"
    ]
    end = [e for e in events if e.type == "end"]
    return {
        "real_oom": cuda,
        "status": res.status,
        "first_batch": batch,
        "backoff": backoff,  # [per-device batch, accumulation] after each out-of-memory
        "effective_batch_kept": all(b * a == batch for b, a in backoff),
        "steps": end[-1].step if end else None,
        "free_bytes": free,
        "notices": [e.message for e in events if e.type in ("notice", "error")],
    }


# -- report ------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# bench/gpu.py report ({'dry run, CPU' if report['dry'] else report['device']})", ""]
    lines.append(f"torch {report['torch']}, transformers {report['transformers']}, "
                 f"{report['seconds']:.0f} s in all.")  # fmt: skip
    s = report["sections"]
    m = s.get("minilm", {})
    if "nbtrain" in m:
        lines += ["", "## MiniLM, SST-2, one epoch", "", "| | precision | samples/s | dev accuracy |",
                  "|---|---|---:|---:|"]  # fmt: skip
        for key in ("nbtrain", "trainer"):
            r = m.get(key) or {}
            lines.append(f"| {key} | {r.get('precision')} | {r.get('samples_per_s') or 0:,.1f} | "
                         f"{r.get('dev_accuracy') or 0:.4f} |")  # fmt: skip
    sft = s.get("sft", {})
    if "rows" in sft:
        lines += ["", f"## LoRA SFT ({sft['rows'][0].get('params', 0) / 1e6:.0f}M params)", "",
                  "| variant | tokens/s | MFU | peak memory |", "|---|---:|---:|---:|"]  # fmt: skip
        for r in sft["rows"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | {r['error']} | | |")
                continue
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
            mem = f"{r['peak_memory'] / 2**30:.1f} GiB" if r.get("peak_memory") else "n/a"
            lines.append(f"| {r['variant']} | {r['tokens_per_s']:,.0f} | {mfu} | {mem} |")
        if sft.get("packing_speedup"):
            lines.append(f"\nPacking vs padded: {sft['packing_speedup']:.2f}x.")
    mem = s.get("memory", {})
    if "rows" in mem:
        lines += ["", "## Memory estimate vs measured", "", "| config | estimate | measured |",
                  "|---|---:|---:|"]  # fmt: skip
        for r in mem["rows"]:
            meas = f"{r['measured_bytes'] / 2**30:.2f} GiB" if r["measured_bytes"] else "n/a"
            lines.append(f"| {r['variant']} | {r['estimate_bytes'] / 2**30:.2f} GiB | {meas} |")
    oom = s.get("oom", {})
    lines += ["", "## OOM back-off", ""]
    if "status" in oom:
        steps = " -> ".join(f"{b} x {a}" for b, a in oom["backoff"]) or "no out-of-memory"
        kind = "real" if oom["real_oom"] else "simulated (dry run)"
        lines.append(f"Batch {oom['first_batch']}, {kind} out-of-memory: {steps} "
                     f"(batch x accumulation); run {oom['status']} at step {oom['steps']}, "
                     f"effective batch kept: {oom['effective_batch_kept']}.")  # fmt: skip
    else:
        lines.append(json.dumps({k: v for k, v in oom.items() if k != "traceback"}))
    errs = {k: v["error"] for k, v in s.items() if isinstance(v, dict) and "error" in v}
    if errs:
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="tiny sizes on CPU (CI)")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    p.add_argument("--only", nargs="*", choices=["minilm", "sft", "memory", "oom"])
    ns = p.parse_args(argv)
    if ns.dry:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # tiny and on CPU even on a GPU machine
    import torch
    import transformers

    t0 = time.time()
    report: dict[str, Any] = {
        "dry": ns.dry,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sections": {},
    }
    sections = {"minilm": bench_minilm, "sft": bench_sft, "memory": bench_memory, "oom": bench_oom}
    for key, fn in sections.items():
        if ns.only and key not in ns.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            t = time.time()
            try:
                report["sections"][key] = fn(ns.dry, Path(tmp))
            except Exception as e:
                report["sections"][key] = {
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            report["sections"][key]["seconds"] = time.time() - t
        print(f"{key}: {report['sections'][key]['seconds']:.0f} s", flush=True)
    report["seconds"] = time.time() - t0
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu.md").write_text(markdown(report))
    print((out / "gpu.md").read_text())
    return report


if __name__ == "__main__":
    main()
