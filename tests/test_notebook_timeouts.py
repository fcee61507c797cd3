"""Notebooks nbtrain executes headless (``nbtrain demo``, the docs pages in tests) end at their
timeout. With a blocking kernel manager nbclient waited for a cell's output messages with the
event loop blocked: a cell that went quiet (or one lost IOPub message) could not time out, and
the docs test hung CI for good."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

QUIET_CELL = "import time\ntime.sleep(60)"


def _notebook(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(QUIET_CELL)]
    path = tmp_path / "quiet.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_nbtrain_demo_runner_times_out_a_quiet_cell(tmp_path: Path) -> None:
    from nbclient.exceptions import CellTimeoutError

    from nbtrain.demo import execute_notebook

    t0 = time.monotonic()
    with pytest.raises(CellTimeoutError):
        execute_notebook(_notebook(tmp_path), tmp_path / "out.ipynb", timeout=3)
    assert time.monotonic() - t0 < 45  # not the 60 s the cell sleeps
    assert (tmp_path / "out.ipynb").is_file()  # written even when a cell fails


def test_docs_runner_times_out_a_quiet_cell(tmp_path: Path) -> None:
    from nbclient.exceptions import CellTimeoutError

    from tests.docs_examples import execute

    nb = nbformat.read(str(_notebook(tmp_path)), as_version=4)
    t0 = time.monotonic()
    with pytest.raises(CellTimeoutError):
        execute(nb, tmp_path, timeout=3)
    assert time.monotonic() - t0 < 45
