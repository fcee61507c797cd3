"""Every example in README.md and docs/*.md runs as written (docs/contributing.md).

Fast part (default suite): every block is read and classified, markers carry a reason, Python
cells compile, magic lines and CLI command lines parse with nbtrain's own parsers, every YAML
config and fragment loads with ``load_config``.

Slow part: each page runs top to bottom in its own temporary folder, in a real Jupyter kernel
(nbclient), cell by cell: Python and magic blocks as cells, YAML files written, shell blocks run
as commands. Runs are cut to ``NBTRAIN_DOCS_MAX_STEPS`` optimizer steps, so an example that
trains for epochs still trains, evaluates and saves, in seconds. Blocks marked ``refuses`` must
end in nbtrain's clear refusal offline on a CPU.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import SST2
from tests.docs_examples import ROOT, Block, all_blocks, blocks, execute, pages

BLOCKS = all_blocks()
MAX_STEPS = "2"
# RunStopped: a %%finetune cell shows the refusal once in its view, then stops the cell with it
REFUSALS = ("UsageError", "ConfigError", "DataError", "TrainingFailed", "RunStopped")


def _ids(items: list[Block]) -> list[str]:
    return [b.where for b in items]


# ---------------------------------------------------------------------------------------------
# fast: read, classify, parse


def test_every_page_is_read_and_has_examples():
    names = {p.name for p in pages()}
    assert {"README.md", "index.md", "magics.md", "contributing.md"} <= names
    assert sum(b.kind != "shown" for b in BLOCKS) >= 20  # the pages' examples are all seen


@pytest.mark.parametrize("block", BLOCKS, ids=_ids(BLOCKS))
def test_block_is_well_formed(block: Block):
    assert not block.problems, f"{block.where}: {'; '.join(block.problems)}"
    first = block.code.strip().splitlines()[0] if block.code.strip() else ""
    if block.kind == "shown":
        # A notebook cell fenced without a language is shown but never run: say it is Python.
        assert not first.startswith("%"), (
            f"{block.where}: a notebook cell fenced without a language; fence it as ```python "
            "so the docs test runs it (or mark it skip with a reason)."
        )
    for line in block.code.splitlines():
        # IPython passes the whole line to %load_ext as the module name (tests/test_user_paths.py)
        assert not re.match(r"\s*%load_ext\s+\S+\s+#", line), (
            f"{block.where}: {line.strip()!r}: IPython reads the comment as part of the module "
            "name; put the comment on its own line."
        )


CELLS = [b for b in BLOCKS if b.kind == "cell"]


@pytest.mark.parametrize("block", CELLS, ids=_ids(CELLS))
def test_cell_compiles_and_its_magic_lines_parse(block: Block):
    from IPython.core.inputtransformer2 import TransformerManager

    source = TransformerManager().transform_cell(block.code)
    compile(source, block.where, "exec")
    for line in block.code.splitlines():
        _check_magic_line(block, line.strip())
    if block.code.lstrip().startswith("%%finetune"):
        _check_finetune_body(block)


def _check_magic_line(block: Block, line: str) -> None:
    from nbtrain.magics import NbtrainMagics, strip_comment
    from nbtrain.ui import magics as ui_magics

    name, _, rest = line.lstrip("%").partition(" ")
    if not line.startswith("%"):
        return
    if name == "finetune":
        NbtrainMagics.parse_line(rest)  # what the magic itself parses; UsageError if bad
    elif name == "finetune_form":
        ui_magics._parse(rest, ("--from", "--runs-dir"), ui_magics.FORM_USAGE)
    elif name == "nbtrain":
        from nbtrain.magics import _SUBCOMMANDS

        words = shlex.split(strip_comment(rest))
        assert words and words[0] in _SUBCOMMANDS, f"{block.where}: %nbtrain {rest!r}"


def _placeholder_function(*args: object, **kwargs: object) -> list:
    return []


def _placeholder_hp_space(trial):  # the tutorial's hp_space(trial) shape
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-4, log=True)}


class _AnyName(dict):
    """A notebook namespace where every ``{name}`` exists: a file name, or a function for the
    names a config lists as functions (``reward: [{my_reward}]``, ``callbacks``, ...)."""

    def __init__(self, functions: set[str] = frozenset(), classes: dict | None = None) -> None:
        super().__init__()
        self.functions = functions
        self.classes = classes or {}
        self.used: set[str] = set()  # the names the cell looked up

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> object:
        self.used.add(key)
        if key in self.classes:
            return self.classes[key]
        return _placeholder_function if key in self.functions else f"{key}.csv"


def _check_finetune_body(block: Block) -> set[str]:
    """Builds the cell's config as the magic does; returns the ``{name}`` references it used."""
    from nbtrain.magics import NbtrainMagics, build_config

    body = block.code.split("\n", 1)[1] if "\n" in block.code else ""
    functions = {
        name
        for line in body.splitlines()
        if re.match(r"\s*(reward|reward_funcs|compute_metrics|model_init|hp_space)\s*:", line)
        for name in re.findall(r"\{(\w+)\}", line)
    }
    classes = {}
    for line in body.splitlines():
        m = re.match(r"\s*(trainer_class|callbacks)\s*:", line)
        if re.match(r"\s*hp_space\s*:", line):
            classes.update({n: _placeholder_hp_space for n in re.findall(r"\{(\w+)\}", line)})
        if m:
            from transformers import Trainer, TrainerCallback

            base = Trainer if m.group(1) == "trainer_class" else TrainerCallback
            classes.update({n: type(n, (base,), {}) for n in re.findall(r"\{(\w+)\}", line)})
    namespace = _AnyName(functions, classes)
    line = block.code.lstrip().split("\n", 1)[0].removeprefix("%%finetune")
    build_config(body, namespace, overrides=NbtrainMagics.parse_line(line).overrides)
    return namespace.used


def _cell_names(block: Block) -> tuple[set[str], set[str]]:
    """What a notebook cell reads from the notebook and what it leaves there.

    Python: the names it loads and neither defines itself nor finds in builtins; the names it
    assigns, imports or defines. ``%%finetune``: its ``{name}`` references (read with the magic's
    own parser); the variable it binds its result to (NAME, ``--out``, ``lr`` for ``--lr-find``,
    nothing for ``--dry-run``).
    """
    import ast
    import builtins

    from IPython.core.inputtransformer2 import TransformerManager

    from nbtrain.magics import NbtrainMagics, _identifier

    if block.code.lstrip().startswith("%%finetune"):
        line = block.code.lstrip().split("\n", 1)[0].removeprefix("%%finetune")
        args = NbtrainMagics.parse_line(line)
        if args.dry_run:
            binds = set()
        elif args.lr_find:
            binds = {args.out or "lr"}
        else:
            binds = {args.out or (args.name if _identifier(args.name) else "run")}
        return _check_finetune_body(block), binds
    tree = ast.parse(TransformerManager().transform_cell(block.code))
    defined: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, (ast.Store, ast.Del)) else loaded).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return loaded - defined - set(dir(builtins)) - {"get_ipython", "display"}, defined


CELL_PAGES = [p for p in pages() if any(b.kind == "cell" for b in blocks(p))]


@pytest.mark.parametrize("page", CELL_PAGES, ids=[p.name for p in CELL_PAGES])
def test_each_block_is_one_cell_and_a_page_defines_what_its_cells_use(page: Path):
    """A reader pastes blocks one at a time, in page order, into a fresh notebook: a block holds
    one cell (a cell magic only on its first line), and every name a cell reads (a Python name,
    a ``{name}`` reference) is defined by a cell above it on the same page that is run, not in
    the prose or on another page."""
    defined: set[str] = set()
    for block in blocks(page):
        if block.kind != "cell":
            continue
        lines = block.code.strip().splitlines()
        later = [ln.strip() for ln in lines[1:] if ln.lstrip().startswith("%%")]
        assert not later, (
            f"{block.where}: {later[0]!r} starts a second cell inside this block; a cell magic "
            "works only on a cell's first line. Put each cell in its own block."
        )
        if block.action == "skip":
            continue
        used, binds = _cell_names(block)
        missing = sorted(used - defined)
        assert not missing, (
            f"{block.where}: uses {', '.join(missing)}, which no cell above it on {page.name} "
            "defines; add the cell that makes it (a reader pastes the blocks one at a time)."
        )
        if block.action == "run":
            defined |= binds


YAMLS = [b for b in BLOCKS if b.kind in ("yaml-file", "yaml-fragment")]  # skipped ones too
BASE = {"model": "any/model", "data": {"train": "train.csv"}}


@pytest.mark.parametrize("block", YAMLS, ids=_ids(YAMLS))
def test_yaml_config_loads(block: Block):
    import nbtrain

    raw = yaml.safe_load(block.code) or {}
    assert isinstance(raw, dict), f"{block.where}: not a mapping"
    if block.kind == "yaml-fragment":
        data = {**BASE["data"], **(raw.get("data") or {})}
        raw = {**BASE, **raw, "data": data}
    nbtrain.load_config(raw)


SHELLS = [b for b in BLOCKS if b.kind == "shell"]
_NBTRAIN = re.compile(r"^(?:\w+=\S+\s+)*(?:\S*/)?(?:nbtrain|accelerate launch -m nbtrain)\s+(.*)$")


@pytest.mark.parametrize("block", SHELLS, ids=_ids(SHELLS))
def test_nbtrain_command_lines_parse(block: Block):
    from nbtrain.cli import build_parser

    for cmd in block.commands():
        m = _NBTRAIN.match(cmd)
        if not m:
            continue
        argv = shlex.split(m.group(1), comments=True)
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"{block.where}: {cmd!r} does not parse (exit {e.code})")


def test_max_steps_override_caps_a_run_and_refuses_nonsense(monkeypatch):
    from nbtrain.config import load_config
    from nbtrain.engine.training_args import translate

    cfg = load_config({"model": "m", "data": {"train": "t.csv"}, "epochs": 3})

    def kwargs() -> dict:
        return translate(
            cfg,
            output_dir="x",
            has_eval=False,
            metric_for_best_model=None,
            greater_is_better=None,
            precision="fp32",
            logging_steps=1,
        )

    assert kwargs()["max_steps"] == -1
    monkeypatch.setenv("NBTRAIN_DOCS_MAX_STEPS", "2")
    assert kwargs()["max_steps"] == 2
    monkeypatch.setenv("NBTRAIN_DOCS_MAX_STEPS", "two")
    with pytest.raises(Exception, match="NBTRAIN_DOCS_MAX_STEPS"):
        kwargs()


# ---------------------------------------------------------------------------------------------
# slow: run each page in a real kernel


def _fixture_folder(folder: Path) -> None:
    """What every page's folder holds: data/sst2/{train,dev}.tsv and README's YAML files."""
    sst2 = folder / "data" / "sst2"
    sst2.mkdir(parents=True)
    for split, n in (("train", 160), ("dev", 64)):
        src = SST2 / f"{split}.tsv"
        if src.is_file():
            lines = src.read_text(encoding="utf-8").splitlines()
            (sst2 / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n")
        else:  # no SST-2 here: the demo reviews in SST-2's columns
            import nbtrain

            df = nbtrain.demo_data("train" if split == "train" else "eval").head(n)
            df = df.rename(columns={"text": "sentence"})
            df.to_csv(sst2 / f"{split}.tsv", sep="\t", index=False)
    for b in blocks(ROOT / "README.md"):
        if b.kind == "yaml-file":
            (folder / b.filename).write_text(b.code)


SETUP = r"""
import os, re, subprocess, sys
os.environ.update(NBTRAIN_DOCS_MAX_STEPS={max_steps!r}, HF_HUB_OFFLINE="1",
                  HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
_BIN = os.path.dirname(sys.executable)
os.environ["PATH"] = _BIN + os.pathsep + os.environ["PATH"]

def _docs_shell(commands, refuses=False, match=""):
    for cmd in commands:
        cmd = re.sub(r"(^|\s)\.venv/bin/", lambda m: m.group(1) + _BIN + "/", cmd)
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=900)
        print("$", cmd, "->", p.returncode)
        print(p.stdout[-4000:])
        print(p.stderr[-4000:], file=sys.stderr)
        if refuses:
            ok = p.returncode == 2 and "nbtrain:" in p.stderr and "Traceback" not in p.stderr
            if not ok:
                raise RuntimeError(f"{{cmd!r}} should refuse (exit 2, one nbtrain: paragraph)")
            if not re.search(match, p.stderr):
                raise RuntimeError(f"{{cmd!r}} refused, but not for the documented reason {{match!r}}")
        elif p.returncode != 0:
            raise RuntimeError(f"{{cmd!r}} exited with {{p.returncode}}")
"""


def _notebook(page: Path) -> tuple[object, list[Block | None]]:
    import nbformat

    nb = nbformat.v4.new_notebook()
    owners: list[Block | None] = [None]
    nb.cells.append(nbformat.v4.new_code_cell(SETUP.format(max_steps=MAX_STEPS)))
    for b in blocks(page):
        if b.action == "skip" or b.kind in ("shown", "yaml-fragment"):
            continue
        if b.kind == "cell":
            source = b.code
        elif b.kind == "yaml-file":
            source = f"%%writefile {b.filename}\n{b.code}"
        else:  # shell
            source = (
                f"_docs_shell({json.dumps(b.commands())}, refuses={b.action == 'refuses'}, "
                f"match={b.match!r})"
            )
        nb.cells.append(nbformat.v4.new_code_cell(source))
        owners.append(b)
    return nb, owners


def _seconds(cell: object) -> float:
    from datetime import datetime

    times = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(times["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(times["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return float("nan")
    return (end - start).total_seconds()


def _shown(output: dict) -> str:
    """What a display output shows, as text (its HTML without tags)."""
    import html

    data = output.get("data", {})
    page = "".join(data.get("text/html", ""))
    return "".join(data.get("text/plain", "")) + "\n" + html.unescape(re.sub(r"<[^>]+>", " ", page))


def _errors(cell: object) -> list[dict]:
    """The cell's errors; IPython prints a magic's ``UsageError`` (an unknown magic too) as
    stderr text, not as an error output, so that counts as one."""
    outputs = cell.get("outputs", [])
    errors = [o for o in outputs if o.get("output_type") == "error"]
    for o in outputs:
        text = o.get("text", "") if o.get("name") == "stderr" else ""
        if text.startswith("UsageError"):
            errors.append({"ename": "UsageError", "traceback": [text]})
    return errors


RUN_KINDS = ("cell", "yaml-file", "shell")
PAGES = [p for p in pages() if any(b.kind in RUN_KINDS and b.action != "skip" for b in blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs_in_a_kernel(page: Path, tmp_path: Path):
    _fixture_folder(tmp_path)
    nb, owners = _notebook(page)
    execute(nb, tmp_path)
    import nbformat

    nbformat.write(nb, str(tmp_path / f"executed-{page.stem}.ipynb"))  # to look at on failure
    for cell, block in zip(nb.cells, owners):
        print(f"{_seconds(cell):7.1f} s  {block.where if block else 'setup'}")

    for cell, block in zip(nb.cells, owners):
        errors = _errors(cell)
        where = block.where if block else f"{page.name}: setup"
        if block is not None and block.action == "refuses" and block.kind == "cell":
            assert errors and errors[0]["ename"] in REFUSALS, (
                f"{where} should end in a clear refusal ({', '.join(REFUSALS)}); got "
                + (errors[0]["ename"] if errors else "no error")
            )
            said = "\n".join(
                [errors[0].get("evalue", ""), *errors[0].get("traceback", [])]
                + [o.get("text", "") for o in cell.get("outputs", [])]
                + [_shown(o) for o in cell.get("outputs", [])]
            )
            assert re.search(block.match, said), (  # the refusal it documents, not any error
                f"{where} refused, but not for the documented reason ({block.match!r}): {said[-600:]}"
            )
            continue
        if errors:
            tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0].get("traceback", [])))
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if "text" in o)
            pytest.fail(f"{where} failed:\n{cell.source}\n---\n{text[-3000:]}\n{tb[-4000:]}")
