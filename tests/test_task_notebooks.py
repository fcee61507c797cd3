"""The task example notebooks run top to bottom in a real kernel (this venv's Python)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COLOURS = {"blue", "green", "white", "black", "red"}  # what the notebooks' models learn to say
EXPECT = {
    # notebook -> text the last cell's output must contain, or a check of that output
    "02_causal_lm.ipynb": lambda text: _colours(text, 2),
    "03_masked_lm.ipynb": "['was']",
    "04_seq2seq.ipynb": lambda text: _colours(text, 2),
    "05_token_classification.ipynb": "'type': 'LOC'",
    "06_preference.ipynb": "Arena: 3 models, 2 prompts",
}


def _colours(text: str, n: int) -> bool:
    """The output is a list of ``n`` generated texts, each a colour the model was trained on
    (an empty or broken generation fails; the tiny models need not get every one right)."""
    import ast

    try:
        out = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return False
    return (
        isinstance(out, list)
        and len(out) == n
        and all(
            isinstance(o, str) and o.strip().split()[:1] and o.split()[0] in COLOURS for o in out
        )
    )


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec pointing at sys.executable, so the kernel uses this environment."""
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
    return "nbtrain-test"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_notebook_runs(name: str, kernel_name: str, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=300,  # a training cell on a shared 2-core machine can take minutes
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    last = nb.cells[-1].outputs
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in last)
    expect = EXPECT[name]
    assert expect(text) if callable(expect) else expect in text, text
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
