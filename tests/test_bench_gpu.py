"""bench/gpu.py --dry runs on CPU with tiny sizes, so the GPU check cannot rot."""

from __future__ import annotations

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
    assert "needs a GPU" in s["oom"]["skipped"]
    md = (tmp_path / "gpu.md").read_text()
    assert "## LoRA SFT" in md and "| padded |" in md and "## Memory estimate" in md
