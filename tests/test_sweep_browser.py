"""The trial panel of a sweep in a real JupyterLab, driven by headless Chromium.

One ``%%finetune`` cell with a ``sweep:`` section: one panel (not one output per trial) with the
trial table and the current trial's live view nested under it; the kernel's interrupt button stops
the sweep with the trial's checkpoint; running the cell again continues to the end, where the
panel shows the metric per trial, the parameter importances and the slice plot. Screenshots go to
a temporary folder and /tmp/nbtrain-shots (docs/images/sweep-panel-jupyterlab*.png come from
there).
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

try:
    from tests.test_browser_e2e import Shots, _open_notebook, _run_cell, _start_cell, lab, page
except ImportError:  # tests/ is not a package
    from test_browser_e2e import Shots, _open_notebook, _run_cell, _start_cell, lab, page  # noqa: F401

pytest.importorskip("optuna", reason="optuna (the hpo extra) is not installed")
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_sweep_panel_interrupt_and_resume_in_jupyterlab(lab, page, tmp_path):
    root = lab["root"]
    body = "\n".join(
        [
            f"model: {root / 'tiny-bert'}",
            f"data: {{train: {root / 'train.csv'}, eval: {root / 'dev.csv'}}}",
            "max_steps: 120",
            "eval_strategy: steps",
            "eval_steps: 40",
            "logging_steps: 1",
            "runs_dir: runs",
            "sweep:",
            "  trials: 3",
            "  seed: 0",
            "  params:",
            "    learning_rate: {low: 1e-4, high: 3e-2, log: true}",
            "    batch_size: [8, 16]",
        ]
    )
    cells = ["%load_ext nbtrain", f"%%finetune swp\n{body}"]
    shutil.rmtree(root / "runs", ignore_errors=True)
    nb = f"sweep-{tmp_path.name}.ipynb"
    _open_notebook(page, lab, nb, cells)
    shot = Shots(page, tmp_path / "shots")
    _run_cell(page, 0, lab)

    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    # The outputs with an nbtrain view (the magic also prints "swp = SweepResult(...)").
    panels = cell.locator(".jp-OutputArea-output").filter(has=page.locator(".nbtrain-view"))
    _start_cell(page, 1, lab)
    panel = cell.locator(".nbtrain-view", has_text="sweep swp")
    panel.first.wait_for(timeout=180_000)
    # The second trial trains: the table has the first trial's row, the live view is nested.
    page.wait_for_function(
        "el => /current trial: trial-1/.test(el.innerText) && /step [1-9]\\d*\\/120/"
        ".test(el.innerText)",
        arg=cell.element_handle(),
        timeout=180_000,
    )
    text = cell.locator(".jp-OutputArea").inner_text()
    assert "1/3 trials" in text and "finished" in text, text
    assert cell.locator(".jp-OutputArea progress").count() >= 1  # the trial's progress bar
    assert panels.count() == 1, "one panel for the whole sweep, not one output per trial"
    shot("sweep-running", cell.locator(".jp-OutputArea"))
    shot("sweep-running-lab")  # the whole JupyterLab window

    # The kernel's interrupt (the toolbar's stop button): the trial is saved, the sweep stops.
    page.evaluate("window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
    page.wait_for_function(
        "el => /\\[\\d+\\]/.test(el.innerText)",
        arg=cell.locator(".jp-InputPrompt").element_handle(),
        timeout=180_000,
    )
    text = cell.locator(".jp-OutputArea").inner_text()
    assert "resumes from its checkpoint" in text, text
    trial1 = root / "runs" / "swp" / "trial-1"
    assert any(p.name.startswith("checkpoint-") for p in trial1.iterdir())

    # Running the cell again continues: trial-0 is kept, trial-1 resumes, trial-2 runs.
    t0 = (root / "runs" / "swp" / "trial-0" / "events.jsonl").stat().st_mtime_ns
    _run_cell(page, 1, lab, timeout=600)
    final = cell.locator(".nbtrain-view", has_text="3/3 trials")
    final.wait_for(timeout=60_000)
    assert panels.count() == 1, cell.locator(".jp-OutputArea").inner_text()[:2000]
    assert cell.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    text = final.inner_text()
    assert "★ trial-" in text and "sweep swp" in text
    # three different draws: the resumed sweep's sampler does not repeat trial-0's params
    rows = [ln.split("\t") for ln in text.splitlines() if re.match(r"(★ )?trial-\d+\t", ln)]
    assert len(rows) == 3 and len({r[1] for r in rows}) == 3, text
    for alt in ("eval_accuracy per trial", "parameter importances and slice plot"):
        img = final.locator(f"img[alt^='{alt}']")
        assert img.count() == 1, alt
        assert img.evaluate("el => el.naturalWidth") > 100  # drawn, not a broken image
    assert (root / "runs" / "swp" / "trial-0" / "events.jsonl").stat().st_mtime_ns == t0
    events = [json.loads(ln) for ln in (trial1 / "events.jsonl").read_text().splitlines()]
    starts = [ev for ev in events if ev["type"] == "start"]
    assert len(starts) == 2 and starts[-1]["resumed_from"], starts
    page.set_viewport_size({"width": 1400, "height": 3200})  # the whole panel in view
    time.sleep(1.0)
    final.scroll_into_view_if_needed()
    shot("sweep-finished", cell.locator(".jp-OutputArea"))
    assert re.search(r"\[\d+\]", cell.locator(".jp-InputPrompt").inner_text())
