"""Background runs in a real JupyterLab, driven by headless Chromium.

A ``--background`` cell returns while the run trains; another cell runs and prints; the page is
reloaded in the middle of the run; ``%nbtrain attach`` in a new cell shows the curves so far and
keeps advancing; Stop in that view ends the run with a checkpoint. Screenshots go to a temporary
folder and /tmp/nbtrain-shots (the docs' images come from there).
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

try:
    from tests.test_browser_e2e import Shots, _open_notebook, _run_cell, lab, page
except ImportError:  # tests/ is not a package
    from test_browser_e2e import Shots, _open_notebook, _run_cell, lab, page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _step(locator) -> int:
    m = re.search(r"step (\d+)/", locator.inner_text())
    return int(m.group(1)) if m else -1


def _wait_step(page, locator, at_least: int, timeout: float = 180) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            s = _step(locator)
        except Exception:  # the output is being replaced
            s = -1
        if s >= at_least:
            return s
        time.sleep(0.3)
    raise AssertionError(f"step {at_least} not reached; view: {locator.inner_text()[:300]!r}")


def test_background_run_reload_attach_and_stop(lab, page, tmp_path):
    root = lab["root"]
    body = "\n".join(
        [
            f"model: {root / 'tiny-bert'}",
            f"data: {{train: {root / 'train.csv'}, eval: {root / 'dev.csv'}}}",
            "epochs: 400",
            "batch_size: 16",
            "lr: 1e-3",
            "logging_steps: 1",
            "eval_strategy: epoch",
            "save_strategy: epoch",
            "save_total_limit: 2",
            "runs_dir: runs",
        ]
    )
    cells = [
        "%load_ext nbtrain",
        f"%%finetune bgrun --background\n{body}",
        "print('meanwhile', bgrun.name, 'is', bgrun.status)",
        "%nbtrain attach bgrun",
        f"%%finetune second --set epochs=2\n{body}",
        "%nbtrain compare bgrun second",
    ]
    shutil.rmtree(root / "runs", ignore_errors=True)
    nb = f"bg-{tmp_path.name}.ipynb"
    _open_notebook(page, lab, nb, cells)
    shot = Shots(page, tmp_path / "shots")

    _run_cell(page, 0, lab)
    started = time.time()
    _run_cell(page, 1, lab)  # returns at once: the prompt gets its number while the run goes on
    cell1 = page.locator(".jp-Notebook .jp-Cell").nth(1)
    assert "training in the background" in cell1.inner_text()
    view = cell1.locator(".nbtrain-widget-view")
    view.wait_for(timeout=120_000)
    first = _wait_step(page, view, 3)
    assert time.time() - started < 170

    # Another cell runs and prints while the run trains; nothing of the run lands there.
    _run_cell(page, 2, lab)
    cell2 = page.locator(".jp-Notebook .jp-Cell").nth(2)
    page.wait_for_function(
        "el => el.innerText.includes('meanwhile bgrun is running')",
        arg=cell2.element_handle(),
        timeout=30_000,
    )
    assert cell2.locator(".nbtrain-view").count() == 0
    assert _wait_step(page, view, first + 2) > first  # still advancing in its own cell
    shot("background-running", page.locator(".jp-Notebook"))

    # Reload in the middle of the run: the old output no longer updates.
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    time.sleep(1.0)
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.get_by_text(re.compile(r"nbtrain e2e \| (Idle|Busy)")).wait_for(timeout=120_000)

    # %nbtrain attach in a new cell: the curves so far, then live.
    _run_cell(page, 3, lab)
    cell3 = page.locator(".jp-Notebook .jp-Cell").nth(3)
    attached = cell3.locator(".nbtrain-widget-view")
    attached.wait_for(timeout=60_000)
    at_attach = _wait_step(page, attached, 1)
    assert at_attach > first
    assert attached.locator("svg polyline").count() >= 2  # loss and learning rate so far
    later = _wait_step(page, attached, at_attach + 3)
    shot("attached-after-reload", cell3)

    # Stop from the view: the run ends at a step boundary with a checkpoint.
    attached.locator("button", has_text="Stop").click()
    card = cell3.locator(".nbtrain-card")
    card.wait_for(timeout=120_000)
    text = card.inner_text()
    shot("stopped-card", cell3)
    m = re.search(r"stopped at step (\d+)", text)
    assert m, text
    step = int(m.group(1))
    assert step >= later
    assert (root / "runs" / "bgrun" / f"checkpoint-{step}" / "model.safetensors").is_file()
    events = (root / "runs" / "bgrun" / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["status"] == "stopped"

    # A second run in the foreground, then both compared: curves overlaid, table, config diff.
    _run_cell(page, 4, lab)
    cell4 = page.locator(".jp-Notebook .jp-Cell").nth(4)
    cell4.locator(".nbtrain-card").wait_for(timeout=180_000)
    _run_cell(page, 5, lab)
    cell5 = page.locator(".jp-Notebook .jp-Cell").nth(5)
    cmp = cell5.locator(".nbtrain-view", has_text="Comparing 2 runs")
    cmp.wait_for(timeout=60_000)
    shot("compare", cell5)
    text = cmp.inner_text()
    assert "bgrun" in text and "second" in text and "stopped" in text and "finished" in text
    assert cmp.locator("svg polyline").count() >= 4  # two runs on each of at least two panels
    assert "epochs" in text  # the config diff: the one key that differs
