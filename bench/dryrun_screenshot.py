"""Screenshots of the dry-run report in a real JupyterLab (docs/images/dry-run-*.png).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dryrun_screenshot.py [OUT_DIR]

Writes a notebook with two ``%%finetune --dry-run`` cells (MiniLM on SST-2, and chat data on a
tiny Llama built from a config), runs it headless with nbclient, signs it as trusted (so the
HTML output renders as it does after running it yourself), opens it in ``jupyter lab`` with
headless Chromium and screenshots each cell's output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SST2 = Path(os.environ.get("NBTRAIN_SST2", "/work/shared/data/sst2"))

CELLS = [
    "%load_ext nbtrain",
    f"""%%finetune sst2-minilm --dry-run
model: sentence-transformers/all-MiniLM-L6-v2
data: {{train: {SST2}/train.tsv, eval: {SST2}/dev.tsv, text: sentence, label: label}}
epochs: 1""",
    """import datasets
long = "the sky is blue . " * 20
rows = [{"messages": [{"role": "user", "content": long if i in (3, 7) else f"colour of thing {i}?"},
                      {"role": "assistant", "content": "blue"}]} for i in range(40)]
chat = datasets.Dataset.from_list(rows)""",
    """%%finetune chat-sft --dry-run
model: llama
task: causal-lm
data: {train: '{chat}', max_length: 32, eval_split: 0}
batch_size: 4""",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import build_tiny_llama

    base = Path(tempfile.mkdtemp())
    root, data_dir, cfg_dir = base / "nb", base / "data", base / "config"
    for d in (root, data_dir, cfg_dir / "labconfig"):
        d.mkdir(parents=True)
    build_tiny_llama(root / "llama")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        JUPYTER_PATH=str(data_dir),
        JUPYTER_DATA_DIR=str(data_dir),
        JUPYTER_CONFIG_DIR=str(cfg_dir),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
    )
    os.environ.update(env)
    NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(root)}}).execute()
    for cell in nb.cells[1:]:  # the reports as text, for the docs
        for o in cell.get("outputs", []):
            text = o.get("data", {}).get("text/plain") or o.get("text") or ""
            print(text[:6000])
    path = root / "dry-run.ipynb"
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(path)], env=env, check=True)
    (cfg_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    token, port = "shot", _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update",
                      "--disable-sync"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/lab/tree/dry-run.ipynb?token={token}&reset")
            page.wait_for_selector(".nbtrain-report svg")
            time.sleep(2)
            out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out / "dry-run-jupyterlab.png"))
            page.set_viewport_size({"width": 1300, "height": 6000})  # whole outputs in view
            time.sleep(2)
            reports = page.locator(".jp-OutputArea-output .nbtrain-report")
            for i, name in enumerate(("dry-run-sst2.png", "dry-run-chat.png")):
                reports.nth(i).scroll_into_view_if_needed()
                reports.nth(i).screenshot(path=str(out / name))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    print("\n".join(str(p) for p in sorted(out.glob("dry-run-*.png"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images")
