"""The live view and the run card as real JupyterLab shows them, in headless Chromium.

A notebook is executed by a real kernel (a tiny run: the card; a frame of the live view rebuilt
from the run's events), saved, then reopened in JupyterLab: what a user sees when they come back
to the notebook. Screenshots land in ``$NBTRAIN_SCREENSHOTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

LIVE_FRAME = """\
from nbtrain.display.live import HtmlRenderer
from nbtrain.events import read_events
view = HtmlRenderer(write_card=False, clock=lambda: 0.0)
for ev in read_events(run.output_dir):
    if ev.type != "end":  # the view as it looked while the run was still training
        view.state.update(ev)
view._draw()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _not_blank(path: Path) -> float:
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(path)[..., :3]
    return float(np.std(pixels))


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_card_and_live_view_in_jupyterlab(
    tiny_bert: Path, sentiment_csv: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("playwright")
    pytest.importorskip("jupyterlab")
    import nbformat
    from nbclient import NotebookClient
    from playwright.sync_api import sync_playwright

    jupyter_path = tmp_path / "jupyter"
    spec_dir = jupyter_path / "kernels" / "nbtrain-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nbtrain test",
        "language": "python",
        "env": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    # Settings and workspaces in the tmp folder: switching the theme must not touch ~/.jupyter.
    env = dict(
        os.environ,
        JUPYTER_PATH=str(jupyter_path),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
    )
    os.environ["JUPYTER_PATH"] = str(jupyter_path)  # for nbclient, restored below

    config = {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 3,
        "batch_size": 16,
        "lr": 1e-3,
        "logging_steps": 1,
        "runs_dir": str(tmp_path / "runs"),
        "name": "lab-run",
    }
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "nbtrain-test",
        "display_name": "nbtrain test",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(f"import nbtrain\nrun = nbtrain.finetune({config!r})"),
        nbformat.v4.new_code_cell(LIVE_FRAME),
    ]
    try:
        NotebookClient(nb, timeout=300, kernel_name="nbtrain-test").execute()
    finally:
        os.environ.pop("JUPYTER_PATH", None)
    nbformat.write(nb, tmp_path / "view.ipynb")
    html_views = [
        out
        for cell in nb.cells
        for out in cell.outputs
        if "nbtrain-view" in str(out.get("data", {}).get("text/html", ""))
    ]
    assert len(html_views) == 2, [c.outputs for c in nb.cells]  # the card and the live frame
    # Signed as trusted, as a notebook the user ran is: JupyterLab sanitizes the inline SVG of an
    # untrusted one (the card's curves are an <img>, which survives either way).
    subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(tmp_path / "view.ipynb")],
        env=env,
        check=True,
    )

    out_dir = Path(os.environ.get("NBTRAIN_SCREENSHOTS", tmp_path / "shots"))
    out_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={tmp_path}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/api", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 3200})
            page.goto(base + "/lab/tree/view.ipynb", timeout=120_000)
            # Jupyter's "get news?" toast would cover part of the screenshots.
            page.add_style_tag(content=".Toastify { display: none !important; }")
            views = page.locator(".jp-OutputArea-output .nbtrain-view")
            views.first.wait_for(timeout=120_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.nbtrain-view img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length >= 1",  # the card's PNG
                timeout=60_000,
            )
            # JupyterLab renders a notebook's cells in idle-time batches: under load the card's
            # image can be loaded before the second cell exists. Wait for both, then check
            # that nothing more came (one card, one live frame: the view never piles up).
            page.wait_for_function(
                "() => document.querySelectorAll('.jp-OutputArea-output .nbtrain-view')"
                ".length >= 2",
                timeout=120_000,
            )
            page.wait_for_timeout(500)
            assert views.count() == 2
            card, live = views.nth(0), views.nth(1)
            assert "finished" in card.inner_text() and "Per class" in card.inner_text()
            assert "training" in live.inner_text() and "ETA" in live.inner_text()
            assert live.locator("svg polyline").count() >= 2  # the live curves, inline SVG
            card.screenshot(path=str(out_dir / "card_jupyterlab.png"))
            live.screenshot(path=str(out_dir / "live_jupyterlab.png"))
            page.evaluate(
                "window.jupyterapp.commands.execute('apputils:change-theme',"
                " {theme: 'JupyterLab Dark'})"
            )
            page.wait_for_function(
                "() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000
            )
            page.wait_for_timeout(1000)
            card.screenshot(path=str(out_dir / "card_jupyterlab_dark.png"))
            live.screenshot(path=str(out_dir / "live_jupyterlab_dark.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name in ("card_jupyterlab.png", "live_jupyterlab.png", "card_jupyterlab_dark.png"):
        assert _not_blank(out_dir / name) > 0.05, f"{name} looks blank"
    # The light screenshot is taken in the light theme, the dark one in the dark theme.
    assert _mean(out_dir / "live_jupyterlab.png") > _mean(out_dir / "live_jupyterlab_dark.png")


def _mean(path: Path) -> float:
    from matplotlib.image import imread

    return float(imread(path)[..., :3].mean())
