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


def test_a_background_cell_returns_at_once_and_waits_for_the_same_result(
    venv_kernel: str, tiny_bert: Path, sentiment_csv: dict[str, Path], tmp_path: Path
) -> None:
    """``%%finetune NAME --background`` returns in under 2 s; the next cells run while it
    trains; ``wait()`` gives the metrics the same run gives in the foreground; the background
    run's output stays in its own view."""
    from datetime import datetime

    import nbformat
    from nbclient import NotebookClient

    body = "\n".join(
        [
            f"model: {tiny_bert}",
            f"data: {{train: {sentiment_csv['train']}, eval: {sentiment_csv['dev']}}}",
            "epochs: 3",
            "batch_size: 16",
            "lr: 1e-3",
            f"runs_dir: {tmp_path / 'runs'}",
        ]
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nbtrain"),
        nbformat.v4.new_code_cell(f"%%finetune bg --background\n{body}"),
        nbformat.v4.new_code_cell("print('other cell ran while', bg.name, 'was', bg.status)"),
        nbformat.v4.new_code_cell("res = bg.wait(300)\nprint(res.status)"),
        nbformat.v4.new_code_cell(f"%%finetune fg\n{body}"),
        nbformat.v4.new_code_cell(
            "timing = ('runtime', 'per_second')\n"
            "same = lambda m: {k: v for k, v in m.items() if not k.endswith(timing)}\n"
            "print(same(res.metrics) == same(fg.metrics), len(same(fg.metrics)) > 2)"
        ),
    ]
    NotebookClient(
        nb, timeout=300, kernel_name=venv_kernel, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    def seconds(cell) -> float:
        t = cell.metadata["execution"]
        started = datetime.fromisoformat(t["iopub.execute_input"].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(t["shell.execute_reply"].replace("Z", "+00:00"))
        return (ended - started).total_seconds()

    def text(cell) -> str:
        return "".join(o.get("text", "") for o in cell.outputs)

    assert seconds(nb.cells[1]) < 2.0, seconds(nb.cells[1])
    assert "training in the background" in text(nb.cells[1])
    assert "other cell ran while bg was" in text(nb.cells[2])
    assert "finished" not in text(nb.cells[2])  # it ran while bg trained
    assert text(nb.cells[3]).strip() == "finished"
    assert text(nb.cells[5]).split() == ["True", "True"]
    # The background run's view lives in its own cell and ended as the card.
    views = [
        o for o in nb.cells[1].outputs if "nbtrain-view" in o.get("data", {}).get("text/html", "")
    ]
    assert views and "nbtrain run card" in views[-1]["data"]["text/html"]
    # Nothing of it landed in the cells that ran meanwhile.
    for cell in nb.cells[2:4]:
        assert not any(
            "nbtrain-view" in o.get("data", {}).get("text/html", "") for o in cell.outputs
        )
