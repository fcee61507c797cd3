"""bench/gpu.py --dry runs on CPU with tiny sizes, so the GPU check cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_bench_dry_run_writes_both_reports(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    s = report["sections"]
    assert report["dry"] and not [k for k, v in s.items() if "error" in v], s
    assert (
        s["minilm"]["nbtrain"]["samples_per_s"] > 0 and s["minilm"]["trainer"]["samples_per_s"] > 0
    )
    assert {r["variant"] for r in s["sft"]["rows"]} >= {"padded", "packed"}
    assert all(r["tokens_per_s"] > 0 for r in s["sft"]["rows"])
    assert [r["variant"] for r in s["memory"]["rows"]] == ["full", "lora", "lora+gc"]
    assert all(r["estimate_bytes"] > 0 for r in s["memory"]["rows"])
    assert s["oom"]["status"] == "finished" and s["oom"]["backoff"]  # simulated on CPU
    md = (tmp_path / "gpu.md").read_text()
    assert "## LoRA SFT" in md and "| padded |" in md and "## Memory estimate" in md
    assert "simulated (dry run) out-of-memory" in md


def _gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oom_section_goes_through_nbtrains_back_off(tmp_path: Path, monkeypatch) -> None:
    """The OOM section ends with a finished run through nbtrain's back-off (batch halved,
    accumulation doubled, one notice each), not the Trainer's auto_find_batch_size, which would
    catch the out-of-memory first. --dry raises it from a Trainer that fits 8 examples."""
    import torch

    gpu = _gpu_bench()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the dry path, on any machine
    oom = gpu.bench_oom(True, tmp_path)
    assert oom["status"] == "finished" and oom["steps"] == 3, oom
    assert oom["backoff"] == [[32, 2], [16, 4], [8, 8]] and oom["effective_batch_kept"]
    assert sum("Out of memory at batch" in n for n in oom["notices"]) == 3
    md = gpu.markdown({"dry": True, "torch": "t", "transformers": "t", "seconds": 1,
                       "sections": {"oom": oom}})  # fmt: skip
    assert "32 x 2 -> 16 x 4 -> 8 x 8 (batch x accumulation); run finished at step 3" in md


@pytest.mark.parametrize("length", [128, 512])
def test_mfu_flops_match_torchs_flop_counter_for_lora_sft(length: int) -> None:
    """The MFU numerator agrees with torch's count of a LoRA Llama's forward and backward:
    attention's matmuls cost 12 L d s with LoRA too, the input embedding is a lookup. (The
    adapters' own few FLOPs are what is left: under 4.5 %.)"""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    gpu = _gpu_bench()
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, vocab_size=512)  # fmt: skip
    config._attn_implementation = "eager"  # every matmul visible to the counter
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    matmul = (
        sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    )
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))
    ids = torch.randint(3, 512, (1, length))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops() / length
    formula = gpu.flops_per_token(matmul, 2, 64, length, lora=True)
    assert formula == pytest.approx(counted, rel=0.045), (formula, counted)
