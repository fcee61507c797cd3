"""The code examples of README.md and docs/*.md, read the way tests/test_docs.py runs them.

A page is a list of fenced blocks; each gets a *kind* from its language and first line:

- ``python`` (or ``ipython``): a notebook cell, run in a real kernel in page order. A first line
  starting with ``%%`` makes it a cell magic; line magics may appear anywhere.
- ``yaml`` starting with ``# NAME.yaml``: a file written into the page's folder; starting with
  ``%%finetune``: a notebook cell; anything else: a config fragment, checked with
  ``nbtrain.load_config`` on top of a minimal config.
- ``bash`` / ``sh`` / ``shell``: commands run in the page's folder (``.venv/bin/X`` means the
  ``X`` of the Python running the tests); each must exit 0.
- no language, ``text``, ``console``, ``json``: output or a layout, shown not run.

An HTML comment on the line(s) just before a fence changes that block (docs/contributing.md):

- ``<!-- docs-test: skip reason="..." -->``: not run (the reason is required and reported);
- ``<!-- docs-test: refuses reason="..." match="..." -->``: run, and it must end in nbtrain's clear
  refusal, not succeed and not crash: a ``ConfigError``/``UsageError`` paragraph in a cell, exit
  status 2 with an ``nbtrain:`` line and no traceback on the command line. For examples that
  need the hub or a GPU, checked offline on a CPU.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<body>.*?)\s*-->", re.S)
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
ACTIONS = ("skip", "refuses")
PYTHON = ("python", "py", "ipython", "python3")
SHELL = ("bash", "sh", "shell")
SHOWN = ("", "text", "console", "json", "output", "diff", "toml", "ini")


@dataclass
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    action: str = "run"  # run | skip | refuses
    reason: str = ""
    match: str = ""  # refuses: a regex the refusal's message must contain
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        if self.lang in PYTHON:
            return "cell"
        if self.lang == "yaml":
            if first.startswith("%%"):
                return "cell"
            if re.fullmatch(r"#\s*[\w./-]+\.ya?ml", first):
                return "yaml-file"
            return "yaml-fragment"
        if self.lang in SHELL:
            return "shell"
        return "shown"

    @property
    def filename(self) -> str:
        first = next(ln.strip() for ln in self.code.splitlines() if ln.strip())
        return first.lstrip("#").strip()

    def commands(self) -> list[str]:
        """The shell block's commands, one per logical line (``\\`` continues a line)."""
        out: list[str] = []
        pending = ""
        for raw in self.code.splitlines():
            line = pending + raw
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            if line.strip() and not line.strip().startswith("#"):
                out.append(line.strip())
        return out


def pages() -> list[Path]:
    """README.md and every docs/*.md: a new page is picked up without touching the test."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _marker(text_before: str) -> tuple[str, str, str, list[str]]:
    """The marker in the lines just before a fence (blank lines allowed in between)."""
    tail = text_before.rstrip()
    if not tail.endswith("-->"):
        return "run", "", "", []
    start = tail.rfind("<!--")
    m = MARKER.fullmatch(tail[start:])
    if m is None:
        return "run", "", "", []  # some other HTML comment
    try:
        words = shlex.split(m.group("body"))
    except ValueError as e:
        return "run", "", "", [f"unreadable docs-test marker ({e})"]
    action = words[0] if words else ""
    opts = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    problems = []
    if action not in ACTIONS:
        problems.append(f"docs-test marker {action!r}: expected one of {', '.join(ACTIONS)}")
    if not opts.get("reason", "").strip():
        problems.append('docs-test marker without reason="..."')
    extra = [w for w in words[1:] if not w.startswith(("reason=", "match="))]
    if extra:
        problems.append(f"docs-test marker: unknown words {extra}")
    if action == "refuses" and not opts.get("match", "").strip():
        problems.append('docs-test refuses marker without match="..." (what the refusal says)')
    if "match" in opts and action != "refuses":
        problems.append('docs-test marker: match="..." belongs to refuses')
    return action, opts.get("reason", ""), opts.get("match", ""), problems


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    rel = str(page.relative_to(ROOT))
    out: list[Block] = []
    i = 0
    last_end = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            j += 1
        code = "\n".join(lines[i + 1 : j]) + "\n"
        before = "\n".join(lines[last_end:i])
        action, reason, match, problems = _marker(before)
        out.append(Block(rel, i + 1, lang, code, action, reason, match, problems))
        i = last_end = j + 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks(p)]


def execute(nb: Any, cwd: Path, *, timeout: int = 900) -> Any:
    """Run a notebook in a fresh kernel of this Python, in ``cwd``, errors kept in the outputs.

    The kernelspec is made on the spot for ``sys.executable`` (whatever kernels Jupyter knows),
    and the kernel gets this checkout first on its path.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="nbtrain-docs-kernel-") as kdir:
        spec_dir = Path(kdir) / "nbtrain-docs"
        spec_dir.mkdir()
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nbtrain docs",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        # Async, as nbclient makes for itself: with a blocking manager nbclient's wait for a
        # cell's output messages blocks its event loop, so one lost IOPub message (a status
        # "idle") hung the suite for good instead of failing at the timeout (seen in CI).
        km = AsyncKernelManager(
            kernel_name="nbtrain-docs", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kdir])
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            allow_errors=True,
            resources={"metadata": {"path": str(cwd)}},
        )
        try:
            client.execute(env=env, cwd=str(cwd))
        finally:
            # nbclient shuts down only the kernels it starts itself; this one is ours. Left
            # running, each page's kernel (and any run still training in it) stays behind.
            if km.has_kernel:
                run_sync(km.shutdown_kernel)(now=True)
    return nb


__all__ = ["Block", "all_blocks", "blocks", "execute", "pages"]
