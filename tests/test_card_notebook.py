"""A real notebook, executed by a real kernel: its saved outputs hold the run card and its image."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs this interpreter, so the kernel sees the project's venv."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "nbtrain-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nbtrain test",
        "language": "python",
        "env": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "nbtrain-test"


def test_executed_notebook_holds_the_card(
    venv_kernel: str, tiny_bert: Path, sentiment_csv: dict[str, Path], tmp_path: Path
) -> None:
    import nbformat
    from nbclient import NotebookClient

    config = {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 2,
        "batch_size": 16,
        "lr": 1e-3,
        "runs_dir": str(tmp_path / "runs"),
        "name": "nb-run",
    }
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import nbtrain\nfrom nbtrain.display import detect_frontend\n"
            "print(detect_frontend().value)"
        ),
        nbformat.v4.new_code_cell(
            f"run = nbtrain.finetune({config!r}, display='html')\nprint(run.metrics['eval_accuracy'])"
        ),
    ]
    NotebookClient(
        nb, timeout=300, kernel_name=venv_kernel, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    first = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert first.strip() == "jupyter"  # a kernel is detected as a Jupyter frontend

    outputs = nb.cells[1].outputs
    views = [o for o in outputs if "nbtrain-view" in o.get("data", {}).get("text/html", "")]
    assert len(views) == 1  # one view, updated in place: no pile of frames in the notebook
    html = views[0]["data"]["text/html"]
    assert "finished" in html and "data:image/png;base64," in html  # the card, with its image
    accuracy = float("".join(o.get("text", "") for o in outputs if o.get("name") == "stdout"))
    assert f"{accuracy:.4f}" in html and "Per class" in html
    assert "nbtrain run nb-run: finished" in views[0]["data"]["text/plain"]
    assert (tmp_path / "runs" / "nb-run" / "card.html").is_file()
    # The saved notebook stays small: one card, not thousands of frames.
    assert len(nbformat.writes(nb)) < 600_000
